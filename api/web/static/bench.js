// A benchmark report: while the run is going, bring the page up to date every 5 s.
"use strict";

(() => {
  const G = window.glossator;
  const status = document.getElementById("bench-status");
  if (!status || status.dataset.status !== "running") return;
  const timer = setInterval(async () => {
    try {
      const doc = await G.page(location.pathname);
      const main = doc.querySelector("main");
      if (main) G.update(document.querySelector("main"), main);
      const now = document.getElementById("bench-status");
      if (!now || now.dataset.status !== "running") clearInterval(timer);
    } catch (error) {
      G.toast(`Could not update the report: ${error.message}`);
    }
  }, 5000);
})();
