// The live run view: follows the run's events (state after each step, then done, error or
// interrupted) and, on each, brings the page's #live part up to date from the server's
// rendering of the run, so new hypotheses and experiments appear and statuses change in
// place. Status changes of hypotheses are announced to screen readers.
"use strict";

(() => {
  const G = window.glossator;
  const TERMINAL = new Set(["done", "error", "interrupted"]);
  let live = document.getElementById("live");
  const url = live.dataset.eventsUrl;
  let updates = 0;
  let busy = null;
  let again = false;

  const statuses = () => new Map(
    [...document.querySelectorAll("#hypotheses > li")].map((li) => [li.id, li.dataset.status]));

  async function refresh() {
    if (busy) { again = true; return busy; }
    busy = (async () => {
      do {
        again = false;
        try {
          const before = statuses();
          const doc = await G.page(location.pathname);
          const fresh = doc.getElementById("live");
          if (!fresh) return;
          fresh.dataset.updates = String(++updates);
          G.update(live, fresh);
          live = document.getElementById("live");
          const changed = [...statuses()].filter(([id, s]) => before.has(id) && before.get(id) !== s);
          if (changed.length) {
            G.toast(changed.map(([id, s]) => `${id.replace("hyp-", "")} ${s}`).join(", "));
          }
        } catch (error) {
          G.toast(`Could not update the run: ${error.message}`);
        }
      } while (again);
    })();
    await busy;
    busy = null;
  }

  async function follow() {
    let last = null;
    for (let attempt = 0; attempt < 30; attempt++) {
      try {
        const headers = last ? { "Last-Event-ID": last } : {};
        for await (const event of G.events(url, { headers })) {
          if (event.id) last = event.id;
          refresh();
          if (TERMINAL.has(event.event)) {
            await refresh();
            return;
          }
        }
      } catch (error) {
        if (error.status && error.status < 500) { G.toast(G.explain(error)); return; }
      }
      await new Promise((resolve) => setTimeout(resolve, 1000)); // the stream dropped: resume it
    }
  }

  if (live.dataset.status === "running") follow();
})();
