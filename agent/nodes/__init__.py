"""The graph's nodes, one per file: observe, hypothesize, design, run, analyze, route,
conclude. Each takes the state and the run's dependencies and returns state updates."""
