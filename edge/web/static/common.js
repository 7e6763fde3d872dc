// Shared helpers for the operator pages (no frameworks, no external assets).
"use strict";
const EI = {
  $(id) { return document.getElementById(id); },
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  },
  num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits ?? 0, minimumFractionDigits: digits ?? 0 });
  },
  pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; },
  time(ns) { return ns ? new Date(Number(ns) / 1e6).toLocaleTimeString() : "–"; },
  datetime(ns) { return ns ? new Date(Number(ns) / 1e6).toLocaleString() : "–"; },
  ago(ns) {
    const s = (Date.now() - Number(ns) / 1e6) / 1000;
    if (s < 60) return Math.max(0, Math.round(s)) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  },
  async json(url, opts) {
    const r = await fetch(url, opts);
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      let msg = body && body.detail ? body.detail : r.statusText;
      if (typeof msg === "object") msg = msg.message || JSON.stringify(msg);
      if (body && Array.isArray(body.errors) && body.errors.length) msg += ": " + body.errors.join("; ");
      const err = new Error(r.status + " " + msg); err.status = r.status; throw err;
    }
    return body;
  },
  token() { return sessionStorage.getItem("ei-token") || ""; },
  setToken(t) { if (t) sessionStorage.setItem("ei-token", t); else sessionStorage.removeItem("ei-token"); },
  operator() { return localStorage.getItem("ei-operator") || ""; },
  setOperator(o) { localStorage.setItem("ei-operator", o || ""); },
  async write(method, url, body) {
    const headers = { "Content-Type": "application/json", "Authorization": "Bearer " + EI.token() };
    if (EI.operator()) headers["X-Operator"] = EI.operator();
    return EI.json(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  },
  thumb(item, cls) {
    // a placeholder, replaced by the evidence thumbnail once it loads (PASS images are sampled;
    // a reject's image may still be being written: tried again a few times)
    const box = EI.el("div", { class: "nothumb" }, item.verdict === "PASS" ? "✓ pass (no image kept)" : "image pending…");
    const img = EI.el("img", { class: cls || "thumb", alt: item.verdict + " " + item.part_id });
    const url = "/api/v1/evidence/" + item.result_id + "/thumb";
    const most = item.verdict === "PASS" ? 1 : 5;
    let tries = 0;
    const load = () => { img.src = url + (tries ? "?try=" + tries : ""); };
    img.addEventListener("load", () => { if (box.isConnected) box.replaceWith(img); });
    img.addEventListener("error", () => {
      if (++tries < most) setTimeout(load, 1000);
      else if (item.verdict !== "PASS") box.textContent = "no image";
    });
    load();
    return box;
  },
  card(item) {
    const a = EI.el("a", { class: "card " + item.verdict, href: "/verdict/" + item.result_id, "data-id": item.result_id });
    const img = EI.thumb(item);
    a.append(img);
    const why = item.verdict === "PASS" ? "no defect" :
      (item.failsafe_reason ? "FAILSAFE: " + item.failsafe_reason : (item.classes && item.classes.length ? item.classes.join(", ") : item.reason));
    a.append(EI.el("div", { class: "meta" },
      EI.el("span", { class: "badge " + item.verdict, text: item.verdict }), " ",
      EI.el("b", { text: item.part_id, title: item.part_id }),
      EI.el("div", { class: "why", title: item.reason || "" }, why || ""),
      EI.el("div", { class: "muted" }, item.camera + " · " + EI.time(item.decided_wall_ns) + " · " + EI.num(item.latency_ms, 1) + " ms")));
    return a;
  },
};
