// Pure helpers over JSON values as the API gives them: masks, flattening, stable text.

/** How a masked secret is shown. */
export const MASK = "••••••";
/** Encodes a path or query part. */
export const enc = encodeURIComponent;

/** Whether `v` is a JSON object (not null, not an array). */
export const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** An event or change as the API gives it, flat ({type, service, key, …}) or in the
 *  export's decoded form ({…, kind: {type, service, key, …}}): always flat. */
export const flat = (ev) => (isObj(ev) && isObj(ev.kind) ? { ...ev, ...ev.kind } : ev);
/** The changes of a changeset, flat. */
export const changesOf = (c) => (Array.isArray(c?.changes) ? c.changes.map(flat) : []);

/** Stable JSON (sorted keys), to tell whether a value changed. */
export function canon(v) {
  if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
  if (isObj(v)) return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canon(v[k])).join(",") + "}";
  return JSON.stringify(v) ?? "undefined";
}

/** Whether a value is the API's masked secret: exactly {"$secret": true} (docs/format.md
 *  §18). No stored value has this shape, so a plain string "<secret>" is just a string. */
export const isMasked = (v) => isObj(v) && v.$secret === true && Object.keys(v).length === 1;

/** A value as it is: strings as they are, the rest as compact JSON (revealed plaintext). */
export const plain = (v) => (typeof v === "string" ? v : JSON.stringify(v));

/** A value as table text: a masked secret as the mask, else as it is. */
export function fmt(v) {
  if (v === undefined) return "";
  if (isMasked(v)) return MASK;
  return plain(v);
}

/** The JSON Schema type of a value ("integer" for whole numbers). */
export function jsonType(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

/** A time (RFC 3339 text or milliseconds) in the browser's locale; as it is if unreadable. */
export function fmtTime(t) {
  if (t == null || t === "") return "";
  const d = new Date(typeof t === "number" ? t : String(t));
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}
