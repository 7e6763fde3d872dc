// The live status page: server-sent events from /api/v1/events, controls through /api/v1.
"use strict";
(function () {
  const $ = EI.$;
  let recent = [];
  let names = [];
  let decision = null;
  const MAX_RECENT = 24;

  function setText(id, v) { const e = $(id); if (e && e.textContent !== String(v)) e.textContent = v; }

  function renderStatus(s) {
    const st = $("state");
    st.textContent = s.state || "?";
    st.className = "state " + (s.state || "");
    setText("station", (s.recipe ? "recipe " + s.recipe : "") + (s.decision_set ? " · thresholds " + s.decision_set : "") +
      (s.config_version ? " · config " + s.config_version : ""));
    const w = s.stats || {};
    const v = w.verdicts || {}, t = w.verdicts_total || {};
    setText("ppm", EI.num(w.parts_per_min, 0));
    setText("window", "last " + EI.num(w.window_s, 0) + " s");
    setText("n-pass", EI.num(v.PASS)); setText("n-reject", EI.num(v.REJECT)); setText("n-failsafe", EI.num(v.FAILSAFE));
    setText("t-pass", EI.num(t.PASS)); setText("t-reject", EI.num(t.REJECT)); setText("t-failsafe", EI.num(t.FAILSAFE));
    setText("reject-rate", EI.pct(w.reject_rate));
    setText("decided", EI.num(w.decided_total));
    const lat = w.latency_ms || {};
    setText("p99", EI.num(lat.p99, 1)); setText("p50", EI.num(lat.p50, 1)); setText("budget", EI.num(s.budget_ms, 0));
    const frac = lat.p99 && s.budget_ms ? lat.p99 / s.budget_ms : 0;
    const fill = $("budget-fill");
    fill.style.width = Math.min(100, 100 * frac).toFixed(1) + "%";
    fill.className = "fill" + (frac >= 1 ? " late" : frac >= 0.8 ? " warn" : "");
    $("latency-tile").className = "tile latency" + (frac >= 1 ? " late" : "");
    renderHealth(s);
    renderFailsafe(w.failsafe_by_reason || {});
    if (s.engine) {
      names = s.engine.names || names;
      const m = $("model"); m.replaceChildren();
      for (const [k, val] of [["runtime", s.engine.runtime], ["model", (s.engine.model_path || "").split("/").pop()],
        ["model id", s.engine.model_id], ["input", (s.engine.input_hw || []).join("×")],
        ["golden reference", s.engine.reference_input ? "yes" : "no"], ["uptime", EI.num(s.uptime_s / 60, 1) + " min"]]) {
        m.append(EI.el("div", {}, k), EI.el("div", {}, val ?? "–"));
      }
    }
    const canWrite = !!s.write_api;
    $("write-note").textContent = canWrite ? "" : "The write API is off: the service has no API token set (see web.token_env).";
    for (const id of ["apply", "revert", "activate", "halt", "resume"]) $(id).disabled = !canWrite;
    $("halt").classList.toggle("hidden", s.state === "halted");
    $("resume").classList.toggle("hidden", s.state !== "halted" && s.state !== "single");
  }

  function row(ok, name, detail, extra) {
    const cls = ok === true ? "ok" : ok === false ? "bad" : "warn";
    return EI.el("tr", {}, EI.el("td", {}, EI.el("span", { class: "dot " + cls }), name),
      EI.el("td", {}, detail || ""), EI.el("td", { class: "num" }, extra || ""));
  }

  function renderHealth(s) {
    const body = $("health").tBodies[0];
    const rows = [];
    for (const c of s.cameras || []) {
      rows.push(row(!!c.connected, "camera " + c.name,
        c.connected ? "streaming" : ("not connected" + (c.last_error ? ": " + c.last_error : "")),
        EI.num(c.frames_in) + " frames" + (c.reconnects ? " · " + c.reconnects + " reconnects" : "")));
    }
    const wk = s.workers || {};
    rows.push(row(wk.inference_alive !== false, "engine " + ((s.engine || {}).runtime || ""),
      wk.inference_alive === false ? "worker stopped" : "judging",
      wk.frames_pending !== undefined ? wk.frames_pending + " waiting" : ""));
    const ring = s.ring || {};
    if (ring.slots) rows.push(row(ring.occupied < ring.slots ? true : null, "frame ring", ring.occupied + " / " + ring.slots + " slots",
      ring.overflows ? ring.overflows + " overflows" : ""));
    for (const k of s.sinks || []) {
      const outbox = k.kind === "outbox";
      const what = outbox ? "journal" : k.kind === "durable" ? "durable link" : "sink";
      const backlog = k.backlog ? k.backlog + " waiting" : "";
      rows.push(row(k.live === undefined ? null : !!k.live, what + " " + k.name,
        (k.live === false ? "DOWN" + (k.last_error ? ": " + k.last_error : "") : "live") + (k.dropped ? " · " + k.dropped + " dropped" : ""),
        backlog || EI.num(k.written) + (outbox ? " journaled" : " sent")));
    }
    if (s.evidence) {
      const e = s.evidence;
      rows.push(row(e.skipped_pool_full ? null : true, "evidence", EI.num(e.kept) + " kept",
        e.skipped_pool_full ? e.skipped_pool_full + " skipped (busy)" : ""));
    }
    body.replaceChildren(...rows);
    const ready = $("ready");
    ready.textContent = s.ready ? "ready" : "not ready: " + (s.not_ready || []).join("; ");
    ready.className = "hint " + (s.ready ? "" : "msg err");
  }

  function renderFailsafe(by) {
    const body = $("failsafe").tBodies[0];
    const entries = Object.entries(by).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    if (!entries.length) { body.replaceChildren(EI.el("tr", {}, EI.el("td", { class: "muted" }, "none"))); return; }
    body.replaceChildren(...entries.map(([r, n]) => EI.el("tr", {}, EI.el("td", {}, r), EI.el("td", { class: "num" }, EI.num(n)))));
  }

  function renderRecent(items, reset) {
    recent = reset ? items.slice() : items.concat(recent);
    recent = recent.slice(0, MAX_RECENT);
    const box = $("recent");
    const have = new Map([...box.children].map((c) => [c.dataset.id, c]));
    const nodes = recent.map((it) => have.get(it.result_id) || EI.card(it));
    box.replaceChildren(...nodes);
  }

  function connect() {
    const es = new EventSource("/api/v1/events");
    es.addEventListener("open", () => { $("conn").textContent = "● live"; $("conn").className = "conn"; });
    es.addEventListener("error", () => {
      $("conn").textContent = "○ reconnecting…"; $("conn").className = "conn bad";
      const st = $("state"); st.textContent = "offline"; st.className = "state offline";
    });
    es.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
    es.addEventListener("verdicts", (e) => { const d = JSON.parse(e.data); renderRecent(d.items, d.reset); });
  }

  // -- controls -------------------------------------------------------------------------------
  function say(id, text, ok) { const m = $(id); m.textContent = text; m.className = "msg " + (ok ? "ok" : "err"); }

  let effective = null;

  async function loadEffective() {
    try { effective = await EI.json("/api/v1/decision/effective"); } catch (e) { effective = null; }
    const note = $("threshold-source");
    if (effective && effective.source && effective.source !== "config") {
      note.textContent = "Per-class thresholds come from the calibrated file " + effective.source.split("/").pop() +
        "; the default applies only to classes it does not cover. Empty fields show the threshold in force.";
    } else note.textContent = "Empty fields show the threshold in force.";
  }

  function fillDecision(d) {
    decision = d;
    $("min-confidence").value = d.min_confidence;
    $("min-area").value = d.min_area_px;
    $("max-count").value = d.max_count;
    const box = $("class-thresholds"); box.replaceChildren();
    for (const n of names) {
      const rule = (d.classes || {})[n] || {};
      const input = EI.el("input", { type: "number", min: "0", max: "1", step: "0.01", "data-class": n,
        placeholder: effective && effective.min_confidence && effective.min_confidence[n] !== undefined
          ? "in force: " + effective.min_confidence[n] : "default", id: "class-" + n });
      if (rule.min_confidence !== null && rule.min_confidence !== undefined) input.value = rule.min_confidence;
      box.append(EI.el("label", {}, "min. confidence: " + n, input));
    }
  }

  async function loadControls() {
    try {
      const [d, r, s] = await Promise.all([EI.json("/api/v1/decision"), EI.json("/api/v1/recipes"), EI.json("/api/v1/status")]);
      names = (s.engine && s.engine.names) || [];
      await loadEffective();
      fillDecision(d);
      const sel = $("recipe"); sel.replaceChildren();
      for (const [name, info] of Object.entries(r.recipes)) {
        const o = EI.el("option", { value: name }, name + (info.description ? " – " + info.description : ""));
        if (name === r.active) o.selected = true;
        sel.append(o);
      }
    } catch (e) { say("decision-msg", "cannot load the decision rules: " + e.message, false); }
  }

  function readNumber(id, integer) {
    const raw = $(id).value.trim();
    if (raw === "") return undefined;
    const v = Number(raw);
    if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) throw new Error(id.replace(/-/g, " ") + ": not a number");
    return v;
  }

  $("token").value = EI.token();
  $("operator").value = EI.operator();
  $("token").addEventListener("change", () => EI.setToken($("token").value.trim()));
  $("operator").addEventListener("change", () => EI.setOperator($("operator").value.trim()));

  $("apply").addEventListener("click", async () => {
    EI.setToken($("token").value.trim()); EI.setOperator($("operator").value.trim());
    try {
      const d = JSON.parse(JSON.stringify(decision));
      d.min_confidence = readNumber("min-confidence");
      d.min_area_px = readNumber("min-area");
      d.max_count = readNumber("max-count", true);
      d.classes = d.classes || {};
      for (const input of document.querySelectorAll("#class-thresholds input")) {
        const n = input.dataset.class;
        const v = input.value.trim() === "" ? null : Number(input.value);
        const rule = Object.assign({}, d.classes[n] || {}, { min_confidence: v });
        const empty = Object.values(rule).every((x) => x === null || x === false);
        if (empty) delete d.classes[n]; else d.classes[n] = rule;
      }
      const out = await EI.write("PUT", "/api/v1/decision", d);
      await loadEffective();
      fillDecision(out.applied);
      say("decision-msg", "applied: default min. confidence " + out.applied.min_confidence + " (by " + out.by + ")", true);
    } catch (e) { say("decision-msg", "not applied: " + e.message, false); }
  });

  $("revert").addEventListener("click", async () => {
    EI.setToken($("token").value.trim());
    try {
      const out = await EI.write("POST", "/api/v1/decision/revert");
      await loadEffective();
      fillDecision(out.applied);
      say("decision-msg", "reverted: default min. confidence " + out.applied.min_confidence, true);
    } catch (e) { say("decision-msg", "not reverted: " + e.message, false); }
  });

  $("activate").addEventListener("click", async () => {
    EI.setToken($("token").value.trim());
    try {
      const out = await EI.write("PUT", "/api/v1/recipe", { name: $("recipe").value });
      say("control-msg", "recipe " + out.active + " active", true);
      loadControls();
    } catch (e) { say("control-msg", "recipe not changed: " + e.message, false); }
  });

  for (const [id, mode] of [["halt", "halted"], ["resume", "running"]]) {
    $(id).addEventListener("click", async () => {
      EI.setToken($("token").value.trim());
      try { const out = await EI.write("PUT", "/api/v1/mode", { mode }); say("control-msg", "line " + out.mode, true); }
      catch (e) { say("control-msg", "not changed: " + e.message, false); }
    });
  }

  connect();
  loadControls();
})();
