// Builds the page from the OpenAPI document (openapi.json, beside this page). DOM nodes are
// made with textContent only: nothing from the document is ever parsed as HTML.
"use strict";

const METHODS = ["get", "put", "post", "delete", "patch"];
// The document, once loaded: schemas named by a $ref are looked up in it.
let DOC = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

function schemaLink(ref) {
  const name = refName(ref);
  return el("a", { href: "#schema-" + name, class: "type" }, name);
}

// A short type label: "string", "integer | null", "array of X", a link for a $ref.
function typeLabel(schema) {
  if (!schema) return el("span", { class: "type" }, "any");
  if (schema.$ref) return schemaLink(schema.$ref);
  const alternatives = schema.oneOf || schema.anyOf;
  if (alternatives) {
    const parts = [];
    alternatives.forEach((s, i) => {
      if (i > 0) parts.push(" | ");
      parts.push(typeLabel(s));
    });
    return el("span", {}, parts);
  }
  if (schema.allOf) {
    const parts = [];
    schema.allOf.forEach((s, i) => {
      if (i > 0) parts.push(" & ");
      parts.push(typeLabel(s));
    });
    return el("span", {}, parts);
  }
  let types = schema.type;
  if (Array.isArray(types)) types = types.join(" | ");
  if (schema.type === "array" || (Array.isArray(schema.type) && schema.type.includes("array"))) {
    return el("span", {}, el("span", { class: "type" }, (types || "array") + " of "), typeLabel(schema.items));
  }
  let label = types || (schema.properties ? "object" : "any");
  if (schema.format) label += " (" + schema.format + ")";
  return el("span", { class: "type" }, label);
}

function facts(schema) {
  const out = [];
  if (schema.enum) out.push("one of: " + schema.enum.map((v) => JSON.stringify(v)).join(", "));
  if (schema.pattern) out.push("pattern " + schema.pattern);
  if (schema.minimum !== undefined) out.push("min " + schema.minimum);
  if (schema.maximum !== undefined) out.push("max " + schema.maximum);
  if (schema.exclusiveMinimum !== undefined) out.push("> " + schema.exclusiveMinimum);
  if (schema.default !== undefined) out.push("default " + JSON.stringify(schema.default));
  if (schema.examples) out.push("e.g. " + schema.examples.map((v) => JSON.stringify(v)).join(", "));
  if (schema.example !== undefined) out.push("e.g. " + JSON.stringify(schema.example));
  return out.length ? el("span", { class: "note" }, " — " + out.join("; ")) : null;
}

// One level of a schema: its properties (each with its type and description) and the
// alternatives of a tagged enum; nested $refs are links to the schema list below.
function schemaTree(schema, depth) {
  if (!schema) return el("div", { class: "note" }, "any JSON");
  if (depth > 6) return el("span", { class: "note" }, "…");
  const list = el("ul");
  if (schema.$ref) {
    // A body's own schema is shown with its fields; deeper ones are links.
    const target = depth === 0 && DOC && DOC.components && DOC.components.schemas[refName(schema.$ref)];
    list.append(el("li", {}, typeLabel(schema), target ? schemaTree(target, depth + 1) : null));
    return list;
  }
  const alternatives = schema.oneOf || schema.anyOf;
  if (alternatives && !schema.properties) {
    list.append(el("li", { class: "note" }, schema.oneOf ? "one of:" : "any of:"));
    for (const alternative of alternatives) {
      list.append(el("li", {}, typeLabel(alternative), facts(alternative), alternative.properties ? schemaTree(alternative, depth + 1) : null));
    }
    return list;
  }
  if (schema.allOf) {
    for (const part of schema.allOf) list.append(el("li", {}, part.$ref ? el("span", {}, "all of ", typeLabel(part)) : schemaTree(part, depth + 1)));
    return list;
  }
  const required = new Set(schema.required || []);
  const properties = schema.properties || {};
  if (Object.keys(properties).length === 0) {
    list.append(el("li", {}, typeLabel(schema), facts(schema), schema.description ? el("div", { class: "note" }, schema.description) : null));
    return list;
  }
  for (const [name, property] of Object.entries(properties)) {
    const nested = property.properties || (property.type === "array" && property.items && property.items.properties)
      ? schemaTree(property.properties ? property : property.items, depth + 1)
      : null;
    list.append(
      el("li", {},
        el("span", { class: "prop-name" }, name), " ",
        typeLabel(property),
        required.has(name) ? el("span", { class: "req" }, " required") : null,
        facts(property),
        property.description ? el("div", { class: "note" }, property.description) : null,
        nested)
    );
  }
  if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
    list.append(el("li", {}, el("span", { class: "prop-name" }, "{key}"), " ", typeLabel(schema.additionalProperties)));
  }
  return list;
}

function contentBlock(content) {
  const out = [];
  for (const [type, media] of Object.entries(content || {})) {
    out.push(el("div", {}, el("code", {}, type)));
    if (media.schema) out.push(el("div", { class: "schema" }, schemaTree(media.schema, 0)));
  }
  return out;
}

function resolve(doc, item) {
  if (item && item.$ref) {
    const [, , kind, name] = item.$ref.split("/");
    return (doc.components && doc.components[kind] && doc.components[kind][name]) || item;
  }
  return item;
}

function operationView(doc, path, method, op) {
  const security = (op.security || []).map((r) => Object.keys(r).join(" + ") || "none");
  const body = el("div", { class: "op-body" });
  if (op.description) body.append(el("p", {}, op.description));
  if (security.length) body.append(el("p", { class: "note" }, "Credentials: " + security.join(" or ")));
  const params = op.parameters || [];
  if (params.length) {
    const rows = params.map((p) =>
      el("tr", {},
        el("td", {}, el("code", {}, p.name)),
        el("td", {}, p.in),
        el("td", {}, typeLabel(p.schema)),
        el("td", {}, p.required ? "yes" : "no"),
        el("td", {}, p.description || "")));
    body.append(el("h4", {}, "Parameters"),
      el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "description")), rows));
  }
  if (op.requestBody) {
    const request = resolve(doc, op.requestBody);
    body.append(el("h4", {}, "Request body" + (request.required ? "" : " (optional)")));
    if (request.description) body.append(el("p", { class: "note" }, request.description));
    body.append(...contentBlock(request.content));
  }
  body.append(el("h4", {}, "Responses"));
  for (const [status, raw] of Object.entries(op.responses || {})) {
    const response = resolve(doc, raw);
    body.append(el("div", {}, el("span", { class: "status" }, status), " ", response.description || ""));
    body.append(...contentBlock(response.content));
  }
  const text = [method, path, op.summary || "", (op.tags || []).join(" "), op.operationId || ""].join(" ").toLowerCase();
  return el("details", { class: "op", id: "op-" + (op.operationId || method + path), "data-text": text },
    el("summary", {},
      el("span", { class: "method m-" + method }, method),
      el("span", { class: "path" }, path),
      el("span", { class: "summary" }, op.summary || ""),
      security.length ? el("span", { class: "lock" }, security.join(" | ")) : null),
    body);
}

function render(doc) {
  DOC = doc;
  document.title = doc.info.title;
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  const summary = document.getElementById("summary");
  summary.textContent = (doc.info.description || "") + " ";
  summary.append(el("a", { href: "openapi.json" }, "OpenAPI " + doc.openapi + " document"));

  const byTag = new Map();
  for (const tag of doc.tags || []) byTag.set(tag.name, { tag, ops: [] });
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const name = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, ops: [] });
      byTag.get(name).ops.push(operationView(doc, path, method, op));
    }
  }
  const nav = document.getElementById("tags");
  const main = document.getElementById("operations");
  for (const { tag, ops } of byTag.values()) {
    if (!ops.length) continue;
    nav.append(el("a", { href: "#tag-" + tag.name }, tag.name + " (" + ops.length + ")"));
    main.append(el("section", { class: "tag" },
      el("h2", { id: "tag-" + tag.name }, tag.name),
      tag.description ? el("p", { class: "note" }, tag.description) : null,
      ops));
  }

  const schemas = document.getElementById("schemas");
  schemas.append(el("h2", {}, "Schemas"));
  const all = (doc.components && doc.components.schemas) || {};
  for (const name of Object.keys(all).sort()) {
    const schema = all[name];
    schemas.append(el("details", { class: "op", id: "schema-" + name },
      el("summary", {}, el("span", { class: "path" }, name), schema.description ? el("span", { class: "summary" }, schema.description) : null),
      el("div", { class: "op-body" }, el("div", { class: "schema" }, schemaTree(schema, 0)))));
  }

  // Opening a link to a schema opens its entry.
  const openTarget = () => {
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  };
  window.addEventListener("hashchange", openTarget);
  openTarget();

  document.getElementById("filter").addEventListener("input", (event) => {
    const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const op of main.querySelectorAll("details.op")) {
      const text = op.getAttribute("data-text");
      op.classList.toggle("hidden", !words.every((w) => text.includes(w)));
    }
  });
}

fetch("openapi.json")
  .then((response) => {
    if (!response.ok) throw new Error("openapi.json answered " + response.status);
    return response.json();
  })
  .then(render)
  .catch((error) => {
    document.getElementById("summary").textContent = "Could not load the document: " + error.message;
  });
