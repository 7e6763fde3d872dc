// The reject gallery: /api/v1/verdicts filtered by verdict, class, camera, part id and time, paged.
"use strict";
(function () {
  const $ = EI.$;
  let next = null, shown = 0;

  function iso(local) { return local ? new Date(local).toISOString() : ""; }

  function query(before) {
    const p = new URLSearchParams();
    const verdict = $("f-verdict").value;
    if (verdict) p.set("verdict", verdict);
    if ($("f-class").value) p.set("class", $("f-class").value);
    if ($("f-camera").value.trim()) p.set("camera", $("f-camera").value.trim());
    if ($("f-part").value.trim()) p.set("part_id", $("f-part").value.trim());
    if ($("f-since").value) p.set("since", iso($("f-since").value));
    if ($("f-until").value) p.set("until", iso($("f-until").value));
    p.set("limit", "48");
    if (before) p.set("before", before);
    return p;
  }

  async function load(more) {
    const p = query(more ? next : null);
    history.replaceState(null, "", "/rejects?" + [...p].filter(([k]) => k !== "limit" && k !== "before").map(([k, v]) => k + "=" + encodeURIComponent(v)).join("&"));
    const csv = new URLSearchParams();
    if (p.get("since")) csv.set("since", p.get("since"));
    if (p.get("until")) csv.set("until", p.get("until"));
    $("csv").href = "/api/v1/verdicts.csv" + (csv.toString() ? "?" + csv : "");
    try {
      const page = await EI.json("/api/v1/verdicts?" + p);
      const box = $("gallery");
      if (!more) { box.replaceChildren(); shown = 0; }
      for (const row of page.items) {
        box.append(EI.card({
          result_id: row.result_id, part_id: row.part_id, camera: row.camera, verdict: row.verdict,
          failsafe_reason: row.failsafe_reason, classes: row.classes, latency_ms: row.latency_ms,
          decided_wall_ns: row.decided_wall_ns, reason: (row.reasons[0] || {}).message || "",
        }));
      }
      shown += page.items.length;
      next = page.next;
      $("more").classList.toggle("hidden", !next);
      $("count").textContent = shown ? shown + " shown" : "";
      $("msg").textContent = shown ? "" : "Nothing matches these filters.";
      $("msg").className = "msg";
    } catch (e) { $("msg").textContent = "cannot load: " + e.message; $("msg").className = "msg err"; }
  }

  async function init() {
    const params = new URLSearchParams(location.search);
    try {
      const s = await EI.json("/api/v1/status");
      for (const n of (s.engine && s.engine.names) || []) $("f-class").append(EI.el("option", { value: n }, n));
    } catch (e) { /* the class list is a convenience */ }
    if (params.has("verdict")) $("f-verdict").value = params.get("verdict");
    if (params.get("class")) $("f-class").value = params.get("class");
    if (params.get("camera")) $("f-camera").value = params.get("camera");
    if (params.get("part_id")) $("f-part").value = params.get("part_id");
    load(false);
  }

  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  $("more").addEventListener("click", () => load(true));
  init();
})();
