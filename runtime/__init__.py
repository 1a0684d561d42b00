"""The wiring of settings into services: settings, model and SAE loading, the embedded
Redis server, the default SAE, evidence builds, the agent and bench set-ups, API keys,
and the live record of agent runs. The edges (CLI, HTTP service, workers) call it;
nothing below it reads settings."""
