// The feature page: 'try your own text', the chat panel (answers streamed), starting an
// agent run, and the page's shortcuts.
"use strict";

(() => {
  const G = window.glossator;
  const head = document.getElementById("feature");
  const feature = Number(head.dataset.feature);
  const scale = Number(head.dataset.scale) || 1;
  const el = G.el;

  G.keys.t = () => document.getElementById("try-text").focus();
  G.keys.c = () => document.getElementById("chat-input").focus();
  G.keys["["] = () => { const a = document.getElementById("prev-feature"); if (!a) return false; a.click(); };
  G.keys["]"] = () => { const a = document.getElementById("next-feature"); if (!a) return false; a.click(); };

  // Ctrl+Enter sends a textarea's form.
  for (const area of document.querySelectorAll("textarea")) {
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        area.form.requestSubmit();
      }
    });
  }

  // -- try your own text ---------------------------------------------------------------

  const tryForm = document.getElementById("try-form");
  const tryText = document.getElementById("try-text");
  const tryResult = document.getElementById("try-result");
  tryForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = tryText.value;
    if (!text.trim()) return;
    tryResult.setAttribute("aria-busy", "true");
    try {
      const reply = await G.json("/activations", {
        method: "POST",
        body: { texts: [text], features: [feature] },
      });
      const tokens = reply.texts[0].tokens;
      const acts = tokens.map((t) => t.activations[0]);
      const peak = Math.max(0, ...acts);
      const at = acts.indexOf(peak);
      const summary = peak > 0
        ? `max ${G.num(peak)} on “${tokens[at].text.trim() || tokens[at].text}”, ${acts.filter((a) => a > 0).length} of ${tokens.length} tokens active`
        : "The feature does not fire on this text.";
      tryResult.replaceChildren(
        el("p", { class: "summary", text: summary }),
        el("p", { class: "exp-text" }, G.tokens(tokens.map((t) => t.text), acts, Math.max(scale, peak))),
      );
      const url = new URL(location.href);
      url.searchParams.set("text", text);
      history.replaceState(null, "", url.pathname + url.search + "#try");
    } catch (error) {
      tryResult.replaceChildren(el("p", { class: "error", role: "alert", text: G.explain(error) }));
    } finally {
      tryResult.setAttribute("aria-busy", "false");
    }
  });

  // -- steering: what the feature does to the next tokens -------------------------------

  const steerForm = document.getElementById("steer-form");
  if (steerForm) {
    G.keys.s = () => document.getElementById("steer-text").focus();
    const steerResult = document.getElementById("steer-result");
    steerForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = document.getElementById("steer-text").value;
      const times = Number(document.getElementById("steer-times").value);
      if (!text.trim()) return;
      steerResult.setAttribute("aria-busy", "true");
      try {
        const reply = await G.json("/steer", {
          method: "POST",
          body: { feature, texts: [text], times },
        });
        steerResult.replaceChildren(...steeredView(reply.texts[0]));
        const url = new URL(location.href);
        url.searchParams.set("steer_text", text);
        url.searchParams.set("times", String(times));
        history.replaceState(null, "", url.pathname + url.search + "#steer");
      } catch (error) {
        steerResult.replaceChildren(el("p", { class: "error", role: "alert", text: G.explain(error) }));
      } finally {
        steerResult.setAttribute("aria-busy", "false");
      }
    });
  }

  // As the pages' `token` filter shows a token: spaces and line breaks made visible.
  const shownToken = (text) => text.replaceAll(" ", "␣").replaceAll("\n", "↵").replaceAll("\t", "⇥") || "∅";

  function steeredView(r) {
    const line = (label, cls, continuation) => el("div", {},
      el("dt", { text: label }),
      el("dd", { class: cls }, r.text, el("strong", { text: continuation })));
    const shifts = (title, list) => el("div", {},
      el("h3", { text: title }),
      el("ol", { class: "token-list" }, ...list.map((s) => el("li", {},
        el("code", { class: "chip token", text: shownToken(s.token) }), " ",
        el("span", { class: "num muted", text: (s.delta_logprob >= 0 ? "+" : "") + s.delta_logprob.toFixed(2) })))));
    return [
      el("p", { class: "summary", text: `The next-token distribution moved by KL ${G.num(r.kl_last)} nats after the text (${G.num(r.kl_mean)} on average over its tokens).` }),
      el("dl", { class: "continuations" },
        line("clean", "clean", r.clean_continuation),
        line("steered", "steered", r.steered_continuation)),
      el("div", { class: "lens" }, shifts("Promoted next tokens", r.promoted), shifts("Demoted", r.demoted)),
    ];
  }

  // -- agent runs ----------------------------------------------------------------------

  const runForm = document.getElementById("run-form");
  const runStatus = document.getElementById("run-status");
  runForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("run-start");
    button.disabled = true;
    runStatus.textContent = "Starting the agent…";
    try {
      const run = await G.json(`/features/${feature}/runs`, {
        method: "POST",
        body: {
          max_rounds: Number(document.getElementById("run-rounds").value),
          max_probes: Number(document.getElementById("run-probes").value),
          new: document.getElementById("run-new").checked,
        },
      });
      runStatus.textContent = `Run ${run.status}; opening it…`;
      location.href = `/runs/${run.run_id.split(":").map(encodeURIComponent).join(":")}`;
    } catch (error) {
      runStatus.textContent = G.explain(error);
      runStatus.classList.add("error");
      button.disabled = false;
    }
  });

  // -- chat ----------------------------------------------------------------------------

  const log = document.getElementById("chat-log");
  const threadSelect = document.getElementById("chat-thread");
  const chatForm = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const send = document.getElementById("chat-send");

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      chatForm.requestSubmit();
    }
  });

  function userMessage(text) {
    return el("article", { class: "msg msg-user" }, el("header", { text: "You" }), el("p", { text }));
  }

  function agentMessage() {
    const steps = el("ol", { class: "steps" });
    const node = el("article", { class: "msg msg-agent", "aria-busy": "true" }, el("header", { text: "Agent" }), steps);
    return { node, steps };
  }

  function experimentStep(experiment, threshold) {
    const o = experiment.outcome;
    const agrees = experiment.agrees;
    const head = el("div", { class: "exp-head" },
      el("span", { class: "exp-id", text: experiment.id }),
      el("span", { class: `badge ${o.fired ? "fired" : "quiet"}`, text: o.fired ? "fired" : "did not fire" }),
      el("span", { class: "muted", text: `max ${G.num(o.max_act)}${o.peak_token ? ` on “${o.peak_token.trim() || o.peak_token}”` : ""} · τ ${G.num(threshold)}` }),
      experiment.expect ? el("span", { class: "muted", text: `expected ${experiment.expect}` }) : null,
      agrees === null || agrees === undefined ? null
        : el("span", { class: "verdict-mark", text: agrees ? "✓ as expected" : "✗ unexpected" }));
    return el("li", { class: `step step-experiment experiment ${agrees === false ? "disagrees" : "agrees"}` },
      head, el("div", { class: "exp-text" }, G.tokens(o.tokens, o.acts, Math.max(scale, o.max_act))));
  }

  function verdictStep(verdict) {
    const parts = [
      el("span", { class: `badge status-${verdict.status}`, text: verdict.status }), " ",
      el("strong", { text: verdict.hypothesis }), " — ", verdict.reason,
    ];
    if (verdict.cites && verdict.cites.length) parts.push(el("span", { class: "muted", text: ` (${verdict.cites.join(", ")})` }));
    if (verdict.suggestion) parts.push(el("div", { class: "muted", text: `Better supported: ${verdict.suggestion}` }));
    return el("li", { class: "step step-verdict" }, ...parts);
  }

  function stored(message) {
    if (message.role === "user") return userMessage(message.text);
    const { node, steps } = agentMessage();
    node.removeAttribute("aria-busy");
    if (message.intent) node.firstChild.textContent = `Agent · ${message.intent}`;
    for (const e of message.experiments || []) steps.append(experimentStep(e, message.threshold || 0));
    if (message.verdict) steps.append(verdictStep(message.verdict));
    node.append(el("p", { class: message.failed ? "answer error" : "answer", text: message.text }));
    return node;
  }

  async function loadThread(id) {
    log.replaceChildren();
    if (!id) return;
    try {
      const view = await G.json(`/chat/${id}`);
      log.replaceChildren(...view.messages.map(stored));
      log.scrollTop = log.scrollHeight;
    } catch (error) {
      log.replaceChildren(el("p", { class: "error", text: G.explain(error) }));
    }
  }
  threadSelect.addEventListener("change", () => loadThread(threadSelect.value));
  if (threadSelect.value) loadThread(threadSelect.value);

  async function thread() {
    if (threadSelect.value) return threadSelect.value;
    const created = await G.json(`/features/${feature}/chat`, { method: "POST", body: {} });
    const option = el("option", { value: created.id, text: `new thread · ${new Date().toLocaleString()}` });
    threadSelect.insertBefore(option, threadSelect.options[1] || null);
    threadSelect.value = created.id;
    return created.id;
  }

  chatForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || send.disabled) return;
    send.disabled = true;
    log.setAttribute("aria-busy", "true");
    const { node, steps } = agentMessage();
    let sent = false;
    try {
      const id = await thread();
      const response = await G.stream(`/chat/${id}/messages`, { method: "POST", body: { text } });
      sent = true;
      for (const note of log.querySelectorAll(".chat-error")) note.remove();
      log.append(userMessage(text), node);
      input.value = "";
      for await (const { event: kind, data } of G.read(response)) {
        if (kind === "understood") {
          node.firstChild.textContent = `Agent · ${data.intent}`;
          steps.append(el("li", { class: "step step-understood", text: data.plan }));
        } else if (kind === "experiment") {
          steps.append(experimentStep(data.experiment, data.threshold));
        } else if (kind === "verdict") {
          steps.append(verdictStep(data.verdict));
        } else if (kind === "answer") {
          node.append(el("p", { class: "answer", text: data.text }));
        } else if (kind === "error") {
          steps.append(el("li", { class: "step step-error", role: "alert", text: data.error }));
        } else if (kind === "done") {
          node.dataset.done = "true";
        }
        log.scrollTop = log.scrollHeight;
      }
    } catch (error) {
      if (sent) {
        steps.append(el("li", { class: "step step-error", role: "alert", text: G.explain(error) }));
      } else {
        log.append(el("p", { class: "chat-error error", role: "alert", text: `Not sent. ${G.explain(error)}` }));
      }
    } finally {
      node.removeAttribute("aria-busy");
      log.setAttribute("aria-busy", "false");
      send.disabled = false;
      input.focus();
    }
  });
})();
