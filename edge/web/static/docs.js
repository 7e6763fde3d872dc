// Renders the OpenAPI document locally (the station is offline: no CDN-hosted Swagger UI).
"use strict";
(async function () {
  const $ = EI.$;
  const spec = await EI.json("/api/v1/openapi.json");
  const schemas = (spec.components || {}).schemas || {};
  function ref(s) { return s && s.$ref ? schemas[s.$ref.split("/").pop()] : s; }
  function typeOf(s) {
    s = ref(s) || {};
    if (s.anyOf) return s.anyOf.map(typeOf).join(" | ");
    if (s.enum) return s.enum.map((x) => JSON.stringify(x)).join(" | ");
    if (s.type === "array") return typeOf(s.items) + "[]";
    return s.type || s.title || "object";
  }
  const box = $("ops"); box.replaceChildren();
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const div = EI.el("div", { class: "op" });
      div.append(EI.el("div", {}, EI.el("span", { class: "method" }, method.toUpperCase()), EI.el("code", {}, path), "  ",
        EI.el("span", { class: "muted" }, op.summary || "")));
      const params = op.parameters || [];
      if (params.length) {
        const t = EI.el("table", {}, EI.el("tr", {}, EI.el("th", {}, "parameter"), EI.el("th", {}, "in"), EI.el("th", {}, "type"), EI.el("th", {}, "")));
        for (const p of params) t.append(EI.el("tr", {}, EI.el("td", {}, EI.el("code", {}, p.name)), EI.el("td", {}, p.in),
          EI.el("td", {}, typeOf(p.schema)), EI.el("td", { class: "muted" }, p.description || (p.schema || {}).description || "")));
        div.append(t);
      }
      const body = op.requestBody && ((op.requestBody.content || {})["application/json"] || {}).schema;
      if (body) {
        const s = ref(body) || {};
        const t = EI.el("table", {}, EI.el("tr", {}, EI.el("th", {}, "body field"), EI.el("th", {}, "type"), EI.el("th", {}, "")));
        for (const [name, f] of Object.entries(s.properties || {})) {
          t.append(EI.el("tr", {}, EI.el("td", {}, EI.el("code", {}, name)), EI.el("td", {}, typeOf(f)), EI.el("td", { class: "muted" }, (ref(f) || {}).description || f.description || "")));
        }
        div.append(t);
      }
      box.append(div);
    }
  }
})();
