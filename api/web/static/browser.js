// The feature browser (and the benchmark list): live search, sorting and paging without
// reloading (the server renders the table; this swaps it in), and row navigation with
// j/k or the arrow keys, Enter to open.
"use strict";

(() => {
  const G = window.glossator;
  const form = document.getElementById("search-form");
  const search = document.getElementById("search");
  let results = document.getElementById("results");
  let loading = null;

  const rows = () => [...document.querySelectorAll("table tbody tr")];

  function move(step) {
    const all = rows();
    if (!all.length) return;
    const at = all.indexOf(document.activeElement.closest && document.activeElement.closest("tbody tr"));
    const next = all[Math.max(0, Math.min(all.length - 1, at < 0 ? (step > 0 ? 0 : all.length - 1) : at + step))];
    all.forEach((row) => row.classList.toggle("current", row === next));
    next.focus();
  }

  function open() {
    const row = document.activeElement.closest && document.activeElement.closest("tbody tr");
    const link = row && row.querySelector("a");
    if (!link) return false;
    link.click();
  }

  G.keys.j = G.keys.ArrowDown = () => move(1);
  G.keys.k = G.keys.ArrowUp = () => move(-1);
  G.keys.Enter = open;
  G.keys.n = () => { const a = document.getElementById("next-page"); if (!a) return false; a.click(); };
  G.keys.p = () => { const a = document.getElementById("prev-page"); if (!a) return false; a.click(); };

  if (!form) return; // the benchmark list: rows only

  // From the search box, the down arrow goes to the table.
  search.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" && rows().length) { event.preventDefault(); search.blur(); move(1); }
  });

  async function show(url, push) {
    if (loading) loading.abort();
    loading = new AbortController();
    results.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" }, signal: loading.signal });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("results");
      if (!fresh) throw new Error(`the server answered ${response.status}`);
      G.update(results, fresh);
      results = document.getElementById("results");
      if (push === "push") history.pushState(null, "", url);
      else if (push === "replace") history.replaceState(null, "", url);
    } catch (error) {
      if (error.name !== "AbortError") G.toast(`Could not load the features: ${error.message}`);
    } finally {
      results.setAttribute("aria-busy", "false");
    }
  }

  function formUrl() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      const defaults = { q: "", show: "all", sort: "feature", order: "asc", limit: "50" };
      if (String(value) !== defaults[name]) params.set(name, String(value).trim());
    }
    const query = params.toString();
    return query ? `/?${query}` : "/";
  }

  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => show(formUrl(), "replace"), 180);
  });
  form.addEventListener("change", (event) => {
    if (event.target !== search) show(formUrl(), "push");
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    show(formUrl(), "push");
  });
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[data-nav]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    const url = new URL(link.href);
    for (const name of ["sort", "order"]) {
      form.elements[name].value = url.searchParams.get(name) || (name === "sort" ? "feature" : "asc");
    }
    show(url.pathname + url.search, "push");
  });
  window.addEventListener("popstate", () => location.reload());
})();
