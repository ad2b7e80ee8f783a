// The REST client: one fetch wrapper with the bearer token, JSON, If-Match and typed errors.

import { setReadOnly, signOut } from "./shell.js";
import { S } from "./state.js";

/** An API call that failed: HTTP status (0: no answer), the body's `error` code and message. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body || {};
  }
}

/** One API call: JSON in and out, the bearer token, If-Match; a 401 signs out. */
export async function api(path, { method = "GET", body, ifMatch, signal } = {}) {
  const headers = { Authorization: `Bearer ${S.token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch != null) headers["If-Match"] = String(ifMatch);
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: "no-store", credentials: "omit" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `the server cannot be reached (${method} ${path.split("?")[0]}): ${e.message}`);
  }
  noteMode(res, path);
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (res.ok) return data;
  const err = new ApiError(res.status, data?.error || `http_${res.status}`,
    data?.message || `${method} ${path.split("?")[0]} answered ${res.status} ${res.statusText}`.trim(), data);
  if (err.code === "read_only") setReadOnly(true);
  if (res.status === 401) {
    signOut(err.message);
    err.handled = true;
  }
  throw err;
}

/** Read-only fallback: any answer may say so; the routes that always do when it is on clear it. */
function noteMode(res, path) {
  const fallback = res.headers.get("confstore-mode") === "read_only_fallback";
  if (fallback) setReadOnly(true);
  else if (res.ok && /^\/api\/v1\/(head|services)(\?|$)/.test(path)) setReadOnly(false);
}
