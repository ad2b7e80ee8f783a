// Hash routes (#/service/<name>, #/global, #/search, #/history[/<service>], #/fleet[/<service>], #/audit):
// which page to render, or where to go when the token may not see the one asked for.

import { $, h, report } from "./dom.js";
import { pageAudit } from "./page-audit.js";
import { pageFleet } from "./page-fleet.js";
import { pageHistory } from "./page-history.js";
import { pageSearch } from "./page-search.js";
import { pageService } from "./page-service.js";
import { markNav } from "./shell.js";
import { S, can, plainServices, serviceHref } from "./state.js";

/** The route in the location's hash: {page, arg}. */
export function parseRoute() {
  const path = location.hash.replace(/^#\/?/, "");
  const [page = "", ...rest] = path.split("/");
  let arg = "";
  try { arg = decodeURIComponent(rest.join("/")); } catch { arg = ""; }
  return { page, arg };
}

function defaultRoute() {
  if (can("read")) {
    const first = plainServices()[0];
    return first ? serviceHref(first) : "#/search";
  }
  return can("audit") ? "#/audit" : null;
}

/** Renders the page of the current hash, if the token may see it; else goes where it may. */
export async function route() {
  if (!S.who) return;
  const gen = ++S.gen;
  const r = parseRoute();
  S.page = null;
  const main = $("#main");
  main.removeAttribute("data-page");
  markNav();
  try {
    if (can("read")) {
      if (r.page === "service" && r.arg === "global") return go("#/global");
      // A service-scoped token (say, after a sign-in as someone else) sees only its service.
      const outOfScope = (name) => S.who.service && S.who.service !== name;
      if ((r.page === "service" && r.arg && !outOfScope(r.arg)) || (r.page === "global" && !outOfScope("global"))) {
        return await pageService(r.page === "global" ? "global" : r.arg, gen);
      }
      if (r.page === "search") return await pageSearch(gen);
      if (r.page === "history") return await pageHistory(r.arg, gen);
      if (r.page === "fleet" && !(r.arg && outOfScope(r.arg))) return await pageFleet(r.arg, gen);
    }
    if (r.page === "audit" && can("audit")) return await pageAudit(gen);
    const d = defaultRoute();
    if (d && d !== location.hash) return go(d);
    main.replaceChildren(h("section", { class: "page" }, h("h1", null, "Nothing to show"),
      h("p", null, `This token (role ${S.who.role}) may not read configuration or the audit trail here.`)));
  } catch (e) {
    if (gen !== S.gen) return;
    main.replaceChildren(h("section", { class: "page" }, h("h1", null, "Cannot show this page"), h("p", { class: "error" }, e.message)));
    report(e);
  }
}

/** Replaces the hash without a history entry, then renders it. */
function go(hash) {
  history.replaceState(null, "", hash);
  return route();
}
