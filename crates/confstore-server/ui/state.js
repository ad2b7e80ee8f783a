// The session's state, and what the signed-in token may do as the server said it.

import { enc, isObj } from "./values.js";

/** The sessionStorage key of the token (this tab only). */
export const TOKEN_KEY = "confstore.token";

/** The session: who is signed in, what they see, and the page on screen. */
export const S = {
  token: null,
  who: null, // whoami answer
  services: [], // names the token sees, including "global"
  epoch: null, // newest store epoch seen
  head: null, // last head event of the live stream
  readOnly: false,
  gen: 0, // route generation: an async render of an older route drops its result
  page: null, // the current page: {name, refresh(), dirty()}
  ready: false, // performance mark sent
  focusKey: null, // a key to show after following a search hit
  search: { q: "", service: "", since: "" },
  focusSearch: false, // "/" asked for the search page: focus its input once it is shown
};

/**
 * Whether the signed-in token may do `what` ("read", "write", "reveal", "audit", "admin"),
 * as the server said in `GET /api/v1/whoami` (`can`). The UI keeps no role table of its
 * own: the server computes the answer from its role rules and the token's scope, and
 * checks every request anyway.
 */
export function can(what) {
  const c = S.who?.can;
  return isObj(c) && c[what] === true;
}
/** Whether edit controls are offered: the token may write and the server is not read-only. */
export const canEdit = () => can("write") && !S.readOnly;

/** Remembers the newest store epoch seen in any answer. */
export function noteEpoch(e) {
  if (typeof e === "number" && (S.epoch == null || e > S.epoch)) S.epoch = e;
}

/** The services other than `global`, as tabs. */
export const plainServices = () => S.services.filter((s) => s !== "global");
/** Whether the token sees the `global` scope. */
export const hasGlobal = () => S.services.includes("global");
/** The route of a service page (or of the global settings). */
export const serviceHref = (s) => (s === "global" ? "#/global" : `#/service/${enc(s)}`);
