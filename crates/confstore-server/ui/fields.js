// The editor's widgets: one per JSON Schema shape (boolean, number, string, enum, object,
// array, free JSON, secret), each able to read itself and show its own error.

import { h } from "./dom.js";
import { defaultFor, kindOf, mainType, schemaError } from "./validate.js";
import { canon, fmt, isObj } from "./values.js";

let uid = 0;
const nextId = () => `f${++uid}`;

function errorEl(path) {
  return h("span", { class: "field-error", "data-for": path, id: nextId(), hidden: true });
}
/** Shows `msg` in a field's error element, or hides it when empty. */
export function setError(el, msg) {
  el.textContent = msg || "";
  el.hidden = !msg;
}
/** Tells the editor that something changed that fired no input event (add, remove). */
function poke(el) { el.dispatchEvent(new Event("edited", { bubbles: true })); }

/**
 * A widget for value `value` of schema `schema` at `path`:
 * {el, inputId?, read() -> {ok, value} (also shows its errors), setDisabled(bool)}.
 */
export function buildField(schema, value, path) {
  switch (kindOf(schema, value)) {
    case "boolean": return booleanField(schema, value, path);
    case "number": return numberField(schema, value, path);
    case "string": return stringField(schema, value, path);
    case "enum": return enumField(schema, value, path);
    case "object": return objectField(schema, value, path);
    case "array": return arrayField(schema, value, path);
    default: return jsonField(schema, value, path);
  }
}

/** A one-element widget: the control, its error, and how to read it. */
function leaf(control, path, schema, readRaw) {
  control.id = nextId();
  control.setAttribute("data-field", path);
  const err = errorEl(path);
  control.setAttribute("aria-describedby", err.id);
  return {
    el: h("div", { class: "field" }, control, err),
    inputId: control.id,
    err,
    read() {
      const r = readRaw();
      const msg = r.error ?? schemaError(schema, r.value);
      setError(err, msg);
      control.setAttribute("aria-invalid", msg ? "true" : "false");
      return { ok: !msg, value: r.value };
    },
    setDisabled(d) { control.disabled = d; },
  };
}

function booleanField(schema, value, path) {
  const cb = h("input", { type: "checkbox", checked: value === true });
  return leaf(cb, path, schema, () => ({ value: cb.checked }));
}

function numberField(schema, value, path) {
  const integer = mainType(schema) === "integer";
  const input = h("input", {
    type: "number", step: integer ? "1" : "any", inputmode: integer ? "numeric" : "decimal",
    value: typeof value === "number" ? String(value) : null,
    min: typeof schema.minimum === "number" ? schema.minimum : null,
    max: typeof schema.maximum === "number" ? schema.maximum : null,
  });
  const nullable = [].concat(schema.type).includes("null");
  return leaf(input, path, schema, () => {
    if (input.validity.badInput) return { error: "not a number" };
    const t = input.value.trim();
    if (t === "") return nullable ? { value: null } : { error: "enter a number" };
    const v = Number(t);
    return Number.isFinite(v) ? { value: v } : { error: "not a number" };
  });
}

function stringField(schema, value, path) {
  const multiline = typeof value === "string" && value.includes("\n");
  const input = multiline
    ? h("textarea", { rows: String(Math.min(8, value.split("\n").length + 1)), spellcheck: "false" })
    : h("input", { type: "text", spellcheck: "false", autocomplete: "off" });
  input.value = typeof value === "string" ? value : "";
  return leaf(input, path, schema, () => ({ value: input.value }));
}

function enumField(schema, value, path) {
  const sel = h("select");
  const idx = schema.enum.findIndex((e) => canon(e) === canon(value));
  const offset = idx < 0 ? 1 : 0; // a placeholder option first when the value is not allowed
  if (idx < 0) sel.append(h("option", { value: "" }, value === undefined ? "— choose —" : `${fmt(value)} (not allowed)`));
  for (const e of schema.enum) sel.append(h("option", { value: typeof e === "string" ? e : JSON.stringify(e) }, typeof e === "string" ? e : JSON.stringify(e)));
  sel.selectedIndex = idx < 0 ? 0 : idx;
  return leaf(sel, path, schema, () => {
    const i = sel.selectedIndex - offset;
    return i < 0 ? { error: `choose one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}` } : { value: schema.enum[i] };
  });
}

function jsonField(schema, value, path) {
  const text = value === undefined ? "" : JSON.stringify(value, null, isObj(value) || Array.isArray(value) ? 2 : 0);
  const ta = h("textarea", { class: "json", spellcheck: "false", rows: String(Math.max(1, Math.min(12, text.split("\n").length))) });
  ta.value = text;
  return leaf(ta, path, schema, () => {
    const t = ta.value.trim();
    if (!t) return { error: "enter a JSON value, e.g. \"text\", 42, true, [1, 2] or {\"a\": 1}" };
    try {
      return { value: JSON.parse(t) };
    } catch (e) {
      return { error: `invalid JSON: ${e.message}` };
    }
  });
}

/** A key name as the server accepts it: 1-128 of A-Z a-z 0-9 _ - . starting with a letter or digit. */
export const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Rewrites the paths under `root` from prefix `from` to `to` (array items renumbered). */
function renamePaths(root, from, to) {
  const swap = (v) => (v === from ? to : v.startsWith(from + ".") ? to + v.slice(from.length) : v);
  for (const attr of ["data-field", "data-for", "data-path"]) {
    for (const el of root.querySelectorAll(`[${attr}]`)) el.setAttribute(attr, swap(el.getAttribute(attr)));
    if (root.hasAttribute(attr)) root.setAttribute(attr, swap(root.getAttribute(attr)));
  }
}

/** A label for a child widget: a real <label> when it has one control. */
export function nameLabel(w, name) {
  return w.inputId ? h("label", { for: w.inputId, class: "member-name" }, name) : h("span", { class: "member-name" }, name);
}

function objectField(schema, value, path) {
  const props = schema.properties;
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const members = new Map(); // name -> {w, item}
  const box = h("div", { class: "members" });
  const err = errorEl(path);
  // The path lives in the DOM so that renumbering an enclosing array reaches it.
  const fs = h("fieldset", { class: "object", "data-path": path, "aria-label": path }, box);
  const extraSchema = (name) => props[name] ?? (isObj(schema.additionalProperties) ? schema.additionalProperties : {});

  function add(name, v) {
    const p = `${fs.getAttribute("data-path")}.${name}`;
    const w = buildField(extraSchema(name), v, p);
    const rm = required.has(name) ? null : h("button", { type: "button", class: "link small", "aria-label": `Remove ${p}` }, "remove");
    const item = h("div", { class: "member" }, h("div", { class: "member-head" }, nameLabel(w, name), rm), w.el);
    rm?.addEventListener("click", () => {
      item.remove();
      members.delete(name);
      refreshAdd();
      poke(box);
    });
    members.set(name, { w, item });
    box.append(item);
  }

  const initial = isObj(value) ? value : {};
  for (const n of Object.keys(props)) if (n in initial || required.has(n)) add(n, n in initial ? initial[n] : defaultFor(props[n]));
  for (const n of Object.keys(initial)) if (!(n in props)) add(n, initial[n]);

  // Adding members: absent schema properties, and free names where the schema allows them.
  const addSel = h("select", { "aria-label": `Member to add to ${path}` });
  const addBtn = h("button", { type: "button", class: "secondary small" }, "Add");
  const addRow = h("div", { class: "add-member" }, addSel, addBtn);
  // Free members only where the schema asks for them (JSON Schema would allow them by
  // default, but a config object with listed properties rarely means it).
  const free = schema.additionalProperties === true || isObj(schema.additionalProperties);
  const freeName = h("input", { type: "text", placeholder: "new member name", "aria-label": `New member of ${path}`, spellcheck: "false" });
  const freeBtn = h("button", { type: "button", class: "secondary small" }, "Add member");
  const freeErr = h("span", { class: "hint-error", hidden: true });
  function refreshAdd() {
    const absent = Object.keys(props).filter((n) => !members.has(n));
    addSel.replaceChildren(...absent.map((n) => h("option", { value: n }, n)));
    addRow.hidden = absent.length === 0;
  }
  addBtn.addEventListener("click", () => {
    const n = addSel.value;
    if (!n || members.has(n)) return;
    add(n, defaultFor(props[n]));
    refreshAdd();
    poke(box);
  });
  freeBtn.addEventListener("click", () => {
    const n = freeName.value.trim();
    const why = !n ? "enter a name" : members.has(n) ? `${n} is already there` : null;
    setError(freeErr, why);
    if (why) return;
    add(n, n in props ? defaultFor(props[n]) : undefined);
    freeName.value = "";
    refreshAdd();
    poke(box);
  });
  refreshAdd();
  fs.append(addRow);
  if (free) fs.append(h("div", { class: "add-member" }, freeName, freeBtn, freeErr));
  fs.append(err);

  return {
    el: fs,
    read() {
      let ok = true;
      const out = {};
      for (const [n, m] of members) {
        const r = m.w.read();
        if (!r.ok) ok = false;
        out[n] = r.value;
      }
      const msg = schemaError(schema, out, true);
      setError(err, msg);
      return { ok: ok && !msg, value: out };
    },
    setDisabled(d) { for (const c of fs.querySelectorAll("input,select,textarea,button")) c.disabled = d; },
  };
}

function arrayField(schema, value, path) {
  const itemSchema = isObj(schema.items) ? schema.items : {};
  const items = []; // {w, li}
  const ol = h("ol", { class: "items" });
  const err = errorEl(path);
  const fs = h("fieldset", { class: "array", "data-path": path, "aria-label": path }, ol);
  const addBtn = h("button", { type: "button", class: "secondary small" }, "Add item");

  function add(v) {
    const it = {};
    const p = `${fs.getAttribute("data-path")}.${items.length}`;
    it.w = buildField(itemSchema, v, p);
    const rm = h("button", { type: "button", class: "link small" }, "remove");
    it.li = h("li", { class: "item", "data-path": p }, it.w.el, rm);
    rm.addEventListener("click", () => {
      const i = items.indexOf(it);
      items.splice(i, 1);
      it.li.remove();
      // Later items move up one: rename their paths (key.3 -> key.2).
      const base = fs.getAttribute("data-path");
      for (let j = i; j < items.length; j++) renamePaths(items[j].li, `${base}.${j + 1}`, `${base}.${j}`);
      poke(ol);
    });
    rm.setAttribute("aria-label", `Remove item`);
    items.push(it);
    ol.append(it.li);
  }
  for (const v of Array.isArray(value) ? value : []) add(v);
  addBtn.addEventListener("click", () => {
    add(defaultFor(itemSchema));
    poke(ol);
    items[items.length - 1].li.querySelector("input,select,textarea")?.focus();
  });
  fs.append(addBtn, err);

  return {
    el: fs,
    read() {
      let ok = true;
      const out = [];
      for (const it of items) {
        const r = it.w.read();
        if (!r.ok) ok = false;
        out.push(r.value);
      }
      const msg = schemaError(schema, out, true);
      setError(err, msg);
      return { ok: ok && !msg, value: out };
    },
    setDisabled(d) { for (const c of fs.querySelectorAll("input,select,textarea,button")) c.disabled = d; },
  };
}

/** A secret: a password input, empty until typed; an untouched secret is never sent. */
export function secretField(schema, path, required) {
  const input = h("input", { type: "password", autocomplete: "new-password", placeholder: "unchanged (type a new value to replace it)", spellcheck: "false" });
  const w = leaf(input, path, null, () => {
    const t = input.value;
    if (t === "") return required ? { error: "enter the secret's value" } : { value: undefined };
    const s = isObj(schema) ? schema : {};
    let v = t;
    switch (mainType(s)) {
      case "integer":
      case "number":
        v = Number(t.trim());
        if (t.trim() === "" || !Number.isFinite(v)) return { error: "not a number" };
        break;
      case "boolean":
        if (t !== "true" && t !== "false") return { error: "enter true or false" };
        v = t === "true";
        break;
      case "array":
      case "object":
        try { v = JSON.parse(t); } catch (e) { return { error: `invalid JSON: ${e.message}` }; }
        break;
      default:
    }
    return { value: v, error: schemaError(s, v) };
  });
  w.touched = () => input.value !== "";
  return w;
}
