// One verdict: its evidence (detections drawn, heat map against the golden reference), reasons, record.
"use strict";
(async function () {
  const $ = EI.$;
  const id = location.pathname.split("/").pop();
  let v;
  try { v = await EI.json("/api/v1/verdicts/" + encodeURIComponent(id)); }
  catch (e) { $("title").textContent = "Verdict not found"; $("msg").textContent = e.message; $("msg").className = "msg err"; return; }
  document.title = "edge-inspect · " + v.verdict + " " + v.part_id;
  $("title").replaceChildren(EI.el("span", { class: "badge " + v.verdict, text: v.verdict }), " part ", v.part_id,
    EI.el("span", { class: "muted" }, " · " + v.camera + " · " + EI.datetime(v.decided_wall_ns)));
  const reasons = $("reasons").tBodies[0];
  const rs = v.reasons.length ? v.reasons : [{ rule: "–", message: "no defect counted: the part passed" }];
  reasons.replaceChildren(...rs.map((r) => EI.el("tr", {}, EI.el("td", {}, EI.el("b", {}, r.rule)), EI.el("td", {}, r.message))));
  const ev = $("evidence");
  const captions = { image: "Frame with its detections", heat: "Difference from the golden reference (heat map)" };
  for (const kind of ["image", "heat"]) {
    if (!v.evidence[kind]) continue;
    const a = EI.el("a", { href: v.evidence[kind], target: "_blank" }, EI.el("img", { src: v.evidence[kind], alt: captions[kind], id: "ev-" + kind }));
    ev.append(EI.el("figure", {}, a, EI.el("figcaption", {}, captions[kind])));
  }
  if (!ev.children.length) ev.append(EI.el("p", { class: "muted" }, "No image was kept for this verdict (PASS images are sampled; evidence may have been skipped when the writer was busy, or deleted by retention)."));
  const dets = $("detections").tBodies[0];
  dets.replaceChildren(...(v.detections.length ? v.detections.map((d) => EI.el("tr", {}, EI.el("td", {}, d.class),
    EI.el("td", { class: "num" }, EI.num(d.confidence, 3)), EI.el("td", {}, d.box.map((x) => Math.round(x)).join(", "))))
    : [EI.el("tr", {}, EI.el("td", { class: "muted" }, "none"))]));
  const lat = v.latencies || {};
  const rec = [["result id", v.result_id], ["part id", v.part_id], ["frame", v.frame_id], ["camera", v.camera],
    ["decided", EI.datetime(v.decided_wall_ns)], ["capture → verdict", EI.num(v.latency_ms, 2) + " ms"],
    ["margin to deadline", v.margin_ms === null || v.margin_ms === undefined ? "–" : EI.num(v.margin_ms, 1) + " ms"],
    ["stages", Object.entries(lat).filter(([k]) => k !== "total").map(([k, x]) => k + " " + EI.num(x, 2)).join(" · ") || "–"],
    ["failsafe reason", v.failsafe_reason || "–"], ["model id", v.model_id || "–"],
    ["config version", v.config_version || "–"], ["recipe", v.recipe || "–"],
    ["threshold set", v.decision_set ? v.decision_set + (v.rules_id ? " · rules " + v.rules_id : "") : "–"]];
  $("record").replaceChildren(...rec.flatMap(([k, x]) => [EI.el("div", {}, k), EI.el("div", {}, String(x))]));
})();
