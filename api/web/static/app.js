// glossator web UI: what every page shares. API calls with the user's key, Server-Sent
// Events over fetch, token heat, page updates from server-rendered HTML, the key and
// theme controls, and keyboard shortcuts. Data is only ever set with textContent.
"use strict";

const G = (window.glossator = {});
const OLD_KEY = "glossator.key"; // where earlier versions kept the key, readable by scripts
const THEME = "glossator.theme";
// Sent with every request of ours: only with it does the server read the key from its
// HttpOnly cookie (another site's page cannot send it).
const UI_HEADER = { "X-Glossator-UI": "1" };

// -- the API key ---------------------------------------------------------------------------
// The server keeps the key in an HttpOnly cookie: this script sends it once, to
// /ui/key, and never sees it again. The page says whether one is saved.

G.hasKey = () => document.getElementById("key-state")?.textContent === "set";

function showKeyState(saved) {
  const state = document.getElementById("key-state");
  if (state) state.textContent = saved ? "set" : "none";
}

// "" when saved (or forgotten, for an empty value), else what went wrong.
async function saveKey(value) {
  const key = value.trim();
  if (key && !/^[A-Za-z0-9_.-]+$/.test(key)) return "That does not look like a key (glsk_…).";
  let response;
  try {
    response = await fetch("/ui/key", key ? {
      method: "POST",
      headers: { ...UI_HEADER, "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ key }),
    } : { method: "DELETE", headers: UI_HEADER });
  } catch (e) { return `The server could not be reached: ${e.message}`; }
  if (!response.ok) {
    const error = await G.failure(response);
    return error.status === 401 ? `The server refused this key: ${error.message}` : error.message;
  }
  showKeyState(!!key);
  return "";
}

// A key an earlier version left in local storage moves into the cookie.
async function moveOldKey() {
  let old = "";
  try { old = localStorage.getItem(OLD_KEY) || ""; } catch (e) { return; }
  if (!old) return;
  if (!(await saveKey(old))) {
    try { localStorage.removeItem(OLD_KEY); } catch (e) { /* left there */ }
  }
}

// -- HTTP --------------------------------------------------------------------------------

G.request = (path, options = {}) => {
  const headers = { Accept: "application/json", ...UI_HEADER, ...(options.headers || {}) };
  const init = { method: options.method || "GET", headers, signal: options.signal };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  return fetch(path, init);
};

G.failure = async (response) => {
  let detail = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.detail !== undefined) {
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch (e) { /* not JSON */ }
  const error = new Error(detail);
  error.status = response.status;
  return error;
};

G.json = async (path, options) => {
  const response = await G.request(path, options);
  if (!response.ok) throw await G.failure(response);
  return response.json();
};

// What to tell the user about a failed request.
G.explain = (error) => {
  if (error.status === 401) {
    if (!G.hasKey()) {
      return "This needs an API key: press “API key” at the top and paste one " +
        "(create one with `glossator apikey create NAME`).";
    }
    return `The server refused the saved API key: ${error.message}`;
  }
  if (error.status === 429) return `Too many runs at once for this key: ${error.message}`;
  if (error.status === 503) return `The service cannot do this now: ${error.message}`;
  return error.message || String(error);
};

// Server-Sent Events from a fetch (POST streams, and GET streams that need a key header).
// G.stream: the accepted response (an error with its status when refused); G.read: its
// events, {event, data (parsed JSON), id}; G.events: both.
G.stream = async (path, options = {}) => {
  const response = await G.request(path, {
    ...options,
    headers: { Accept: "text/event-stream", ...(options.headers || {}) },
  });
  if (!response.ok) throw await G.failure(response);
  return response;
};

G.events = async function* (path, options = {}) {
  yield* G.read(await G.stream(path, options));
};

G.read = async function* (response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (event.data.length) {
          yield { event: event.event, data: JSON.parse(event.data.join("\n")), id: event.id };
        }
        event = { event: "message", data: [], id: null };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.event = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
    }
  }
};

// -- rendering -----------------------------------------------------------------------------

G.el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

G.num = (value, digits = 3) => {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 10 ** (digits + 2) || abs < 1e-4) return value.toExponential(digits - 1);
  return String(Number(value.toPrecision(digits)));
};

// One span per token; a <mark> with its activation where the feature fired.
G.tokens = (tokens, acts, scale) => {
  const wrap = G.el("span", { class: "tokens" });
  tokens.forEach((token, i) => {
    const act = acts[i] || 0;
    if (act > 0) {
      const mark = G.el("mark", {
        class: "tok",
        "data-act": G.num(act),
        title: `${token} · ${G.num(act)}`,
        "aria-label": `${token} (${G.num(act)})`,
        text: token,
      });
      mark.style.setProperty("--a", Math.min(act / (scale || 1), 1).toFixed(3));
      wrap.append(mark);
    } else {
      wrap.append(G.el("span", { class: "tok", text: token }));
    }
  });
  return wrap;
};

// Bring `old` up to date with `fresh` (server-rendered), touching only what changed, so
// focus and scroll stay where they were. Children of [data-keyed] lists are matched by id.
G.update = (old, fresh) => {
  if (old.isEqualNode(fresh)) return;
  if (old.tagName !== fresh.tagName) {
    old.replaceWith(document.importNode(fresh, true));
    return;
  }
  for (const { name } of [...old.attributes]) {
    if (!fresh.hasAttribute(name)) old.removeAttribute(name);
  }
  for (const { name, value } of [...fresh.attributes]) {
    if (old.getAttribute(name) !== value) old.setAttribute(name, value);
  }
  if (old.hasAttribute("data-keyed")) { updateKeyed(old, fresh); return; }
  const a = [...old.childNodes];
  const b = [...fresh.childNodes];
  const sameShape = a.length === b.length && a.every((node, i) =>
    node.nodeType === b[i].nodeType &&
    (node.nodeType !== Node.ELEMENT_NODE || node.tagName === b[i].tagName) &&
    (node.nodeType === Node.ELEMENT_NODE || node.isEqualNode(b[i])));
  if (!sameShape) {
    old.replaceChildren(...b.map((node) => document.importNode(node, true)));
    return;
  }
  a.forEach((node, i) => { if (node.nodeType === Node.ELEMENT_NODE) G.update(node, b[i]); });
};

function updateKeyed(old, fresh) {
  const existing = new Map([...old.children].map((child) => [child.id, child]));
  let previous = null;
  for (const item of [...fresh.children]) {
    let node = existing.get(item.id);
    if (node) {
      existing.delete(item.id);
      if (!node.isEqualNode(item)) {
        const replacement = document.importNode(item, true);
        node.replaceWith(replacement);
        node = replacement;
        G.flash(node);
      }
    } else {
      node = document.importNode(item, true);
      G.flash(node);
    }
    const want = previous ? previous.nextElementSibling : old.firstElementChild;
    if (want !== node) old.insertBefore(node, want);
    previous = node;
  }
  for (const gone of existing.values()) gone.remove();
}

G.flash = (node) => {
  node.classList.add("flash");
  setTimeout(() => node.classList.remove("flash"), 1300);
};

// A server-rendered page (the same URL, as HTML) parsed into a document.
G.page = async (url) => {
  const response = await fetch(url, { headers: { Accept: "text/html" } });
  if (!response.ok && response.status !== 404) throw await G.failure(response);
  return new DOMParser().parseFromString(await response.text(), "text/html");
};

let toastTimer = null;
G.toast = (message) => {
  const toast = document.getElementById("toast");
  if (!toast) return;
  toast.textContent = message;
  toast.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => toast.classList.remove("show"), 2500);
};

// -- theme ---------------------------------------------------------------------------------

function showTheme() {
  const theme = document.documentElement.dataset.theme || "auto";
  const state = document.getElementById("theme-state");
  if (state) state.textContent = theme;
  const button = document.getElementById("theme-button");
  if (button) button.setAttribute("aria-label", `Colour theme: ${theme}${theme === "auto" ? " (the system's)" : ""}; press to change`);
}

function nextTheme() {
  const order = ["auto", "light", "dark"];
  const now = document.documentElement.dataset.theme || "auto";
  const theme = order[(order.indexOf(now) + 1) % order.length];
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  try {
    if (theme === "auto") localStorage.removeItem(THEME); else localStorage.setItem(THEME, theme);
  } catch (e) { /* not kept */ }
  showTheme();
  G.toast(`Theme: ${theme}`);
}

// -- keyboard --------------------------------------------------------------------------------

G.keys = {}; // key -> handler(event); pages add their own

G.typing = (target) =>
  target instanceof Element && !!target.closest("input, textarea, select, [contenteditable]");

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (document.querySelector("dialog[open]")) return;
  if (G.typing(event.target)) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  const handler = G.keys[event.key];
  if (handler && handler(event) !== false) event.preventDefault();
});

G.keys["/"] = () => {
  const search = document.getElementById("search");
  if (!search) { location.href = "/#search"; return; }
  search.focus();
  search.select();
};
G.keys["?"] = () => document.getElementById("help-dialog").showModal();

// -- start -----------------------------------------------------------------------------------

function start() {
  moveOldKey();
  showTheme();
  document.getElementById("theme-button").addEventListener("click", nextTheme);
  document.getElementById("help-button").addEventListener("click", () =>
    document.getElementById("help-dialog").showModal());

  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("api-key");
  const note = document.getElementById("key-note");
  document.getElementById("key-button").addEventListener("click", () => {
    input.value = ""; // the saved key stays with the server's cookie, out of the page
    note.textContent = "";
    dialog.showModal();
    input.focus();
  });
  document.getElementById("key-form").addEventListener("submit", async (event) => {
    if (event.submitter && event.submitter.value !== "save") return;
    event.preventDefault(); // the dialog closes once the server has taken the key
    note.textContent = "Checking the key…";
    const problem = await saveKey(input.value);
    note.textContent = problem;
    if (problem) return;
    input.value = "";
    dialog.close();
    G.toast(G.hasKey() ? "API key saved in this browser" : "API key forgotten");
  });
  document.getElementById("key-forget").addEventListener("click", async () => {
    const problem = await saveKey("");
    note.textContent = problem;
    if (problem) return;
    input.value = "";
    dialog.close();
    G.toast("API key forgotten");
  });
  if (location.hash === "#search") G.keys["/"]();
}

start();
