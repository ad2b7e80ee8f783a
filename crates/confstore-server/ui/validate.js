// The JSON Schema keywords the form checks as you type (the server checks every write
// with the full validator anyway), and what widget and default a schema asks for.

import { canon, isObj } from "./values.js";

const article = (t) => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

function hasType(v, t) {
  switch (t) {
    case "integer": return typeof v === "number" && Number.isInteger(v);
    case "number": return typeof v === "number" && Number.isFinite(v);
    case "string": return typeof v === "string";
    case "boolean": return typeof v === "boolean";
    case "null": return v === null;
    case "array": return Array.isArray(v);
    case "object": return isObj(v);
    default: return true;
  }
}

/** The one type a schema asks for (a nullable type counts as its non-null part), or null. */
export function mainType(s) {
  let t = s.type;
  if (Array.isArray(t)) {
    const nn = t.filter((x) => x !== "null");
    t = nn.length === 1 ? nn[0] : null;
  }
  if (typeof t === "string") return t;
  if (t === undefined && s.properties) return "object";
  if (t === undefined && s.items) return "array";
  return null;
}

function regexTest(pattern, v) {
  for (const flags of ["u", ""]) {
    try { return new RegExp(pattern, flags).test(v); } catch { /* try without u */ }
  }
  return true; // a pattern this browser cannot compile: the server decides
}

/**
 * The first way `v` breaks schema `s`, in words, or null. Covers the keywords the form
 * edits; the server's full JSON Schema check runs on save. `shallow` skips members and
 * items (their own fields check them).
 */
export function schemaError(s, v, shallow = false) {
  if (s === false) return "not allowed";
  if (!isObj(s)) return null;
  if (Array.isArray(s.enum) && !s.enum.some((e) => canon(e) === canon(v))) {
    return `must be one of ${s.enum.map((e) => JSON.stringify(e)).join(", ")}`;
  }
  if ("const" in s && canon(s.const) !== canon(v)) return `must be ${JSON.stringify(s.const)}`;
  if (s.type !== undefined) {
    const types = [].concat(s.type);
    if (!types.some((t) => hasType(v, t))) return `must be ${types.map(article).join(" or ")}`;
  }
  if (typeof v === "number") {
    if (typeof s.minimum === "number" && v < s.minimum) return `must be at least ${s.minimum}`;
    if (typeof s.maximum === "number" && v > s.maximum) return `must be at most ${s.maximum}`;
    if (typeof s.exclusiveMinimum === "number" && v <= s.exclusiveMinimum) return `must be greater than ${s.exclusiveMinimum}`;
    if (typeof s.exclusiveMaximum === "number" && v >= s.exclusiveMaximum) return `must be less than ${s.exclusiveMaximum}`;
    if (typeof s.multipleOf === "number" && s.multipleOf > 0) {
      const q = v / s.multipleOf;
      if (Math.abs(q - Math.round(q)) > 1e-9 * Math.max(1, Math.abs(q))) return `must be a multiple of ${s.multipleOf}`;
    }
  }
  if (typeof v === "string") {
    const n = [...v].length; // JSON Schema counts code points
    if (typeof s.minLength === "number" && n < s.minLength) return `must be at least ${s.minLength} character${s.minLength === 1 ? "" : "s"}`;
    if (typeof s.maxLength === "number" && n > s.maxLength) return `must be at most ${s.maxLength} character${s.maxLength === 1 ? "" : "s"}`;
    if (typeof s.pattern === "string" && !regexTest(s.pattern, v)) return `must match the pattern ${s.pattern}`;
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === "number" && v.length < s.minItems) return `needs at least ${s.minItems} item${s.minItems === 1 ? "" : "s"}`;
    if (typeof s.maxItems === "number" && v.length > s.maxItems) return `allows at most ${s.maxItems} item${s.maxItems === 1 ? "" : "s"}`;
    if (s.uniqueItems === true && new Set(v.map(canon)).size !== v.length) return "items must be unique";
    if (!shallow && s.items !== undefined) {
      for (let i = 0; i < v.length; i++) {
        const e = schemaError(s.items, v[i]);
        if (e) return `item ${i}: ${e}`;
      }
    }
  }
  if (isObj(v)) {
    for (const r of Array.isArray(s.required) ? s.required : []) if (!(r in v)) return `${r} is required`;
    const n = Object.keys(v).length;
    if (typeof s.minProperties === "number" && n < s.minProperties) return `needs at least ${s.minProperties} members`;
    if (typeof s.maxProperties === "number" && n > s.maxProperties) return `allows at most ${s.maxProperties} members`;
    const props = isObj(s.properties) ? s.properties : {};
    for (const [k, x] of Object.entries(v)) {
      if (k in props) {
        if (shallow) continue;
        const e = schemaError(props[k], x);
        if (e) return `${k}: ${e}`;
      } else if (s.additionalProperties === false) {
        return `${k} is not allowed here`;
      } else if (!shallow && isObj(s.additionalProperties)) {
        const e = schemaError(s.additionalProperties, x);
        if (e) return `${k}: ${e}`;
      }
    }
  }
  return null;
}

/** A starting value for a new field of schema `s` (undefined: the person must enter one). */
export function defaultFor(s) {
  if (!isObj(s)) return undefined;
  if ("default" in s) return structuredClone(s.default);
  if ("const" in s) return structuredClone(s.const);
  if (Array.isArray(s.enum)) return undefined;
  switch (mainType(s)) {
    case "string": return "";
    case "boolean": return false;
    case "array": return [];
    case "object": return {};
    default: return undefined;
  }
}

/** Which widget edits value `v` of schema `s`; JSON text when the form cannot. */
export function kindOf(s, v) {
  if (!isObj(s)) return "json";
  if (Array.isArray(s.enum) && s.enum.length) return "enum";
  if (s.oneOf || s.anyOf || s.allOf || s.$ref || s.if) return "json";
  const t = mainType(s);
  const fits = (pred) => v === undefined || pred(v);
  if (t === "boolean" && fits((x) => typeof x === "boolean")) return "boolean";
  if ((t === "integer" || t === "number") && fits((x) => typeof x === "number")) return "number";
  if (t === "string" && fits((x) => typeof x === "string")) return "string";
  if (t === "object" && isObj(s.properties) && fits(isObj)) return "object";
  if (t === "array" && fits(Array.isArray)) return "array";
  return "json";
}

/** The schema of one top-level key: its property, the additionalProperties schema, or none. */
export function keySchema(schema, key) {
  if (!isObj(schema)) return null;
  const p = schema.properties?.[key];
  if (p === true) return {};
  if (isObj(p)) return p;
  return isObj(schema.additionalProperties) ? schema.additionalProperties : null;
}

/** Whether keys outside the schema's properties may be set (the server treats absent as no). */
export function freeKeysAllowed(schema) {
  if (!isObj(schema)) return true;
  const ap = schema.additionalProperties ?? schema.unevaluatedProperties;
  return ap !== undefined && ap !== false;
}
