// The shell around the pages: sign-in and sign-out, who is signed in, the services,
// the navigation, the read-only banner.

import { api } from "./api.js";
import { $, h, report } from "./dom.js";
import { startLive, stopLive } from "./live.js";
import { parseRoute, route } from "./router.js";
import { S, TOKEN_KEY, can, hasGlobal, noteEpoch, plainServices, serviceHref } from "./state.js";
import { enc } from "./values.js";

/** Shows the sign-in form (with `message`, if any) instead of the shell. */
export function showSignin(message) {
  $("#top").hidden = true;
  $("#signin-view").hidden = false;
  $("#main").replaceChildren();
  $("#main").removeAttribute("data-page");
  const err = $("#signin-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("#signin-token").value = "";
  $("#signin-submit").disabled = false;
  $("#signin-token").focus();
}

/** Forgets the token and everything of the session, and shows the sign-in form. */
export function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  S.token = null;
  S.who = null;
  S.page = null;
  S.head = null;
  S.services = [];
  S.epoch = null;
  S.search = { q: "", service: "", since: "" }; // nothing of one user's session for the next
  S.gen++;
  stopLive();
  if ($("#reveal-confirm").open) $("#reveal-confirm").close();
  showSignin(message);
}

/** The sign-in form's submit: keeps the token in this tab's sessionStorage and boots. */
export async function onSigninSubmit(ev) {
  ev.preventDefault(); // form-action 'none': the form never navigates
  const token = $("#signin-token").value.trim();
  const err = $("#signin-error");
  if (!token.startsWith("cst_")) {
    err.textContent = "a confstore token starts with cst_";
    err.hidden = false;
    return;
  }
  $("#signin-submit").disabled = true;
  S.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  await boot();
}

/** After a token is known: who it is, the services, the shell, the live stream, the page. */
export async function boot() {
  try {
    S.who = await api("/api/v1/whoami");
  } catch (e) {
    if (!e.handled) {
      sessionStorage.removeItem(TOKEN_KEY);
      S.token = null;
      showSignin(e.message);
    }
    return;
  }
  $("#signin-view").hidden = true;
  $("#top").hidden = false;
  const w = S.who;
  $("#whoami").textContent = `${w.name ?? w.token_id ?? "token"} · ${w.role ?? ""}${w.service ? ` · ${w.service} only` : ""}`;
  prefetchKeys();
  try {
    if (can("read")) {
      await Promise.all([loadServices(), api("/api/v1/head").then((hd) => noteEpoch(hd?.epoch))]);
    }
  } catch (e) {
    report(e);
    if (e.handled) return;
  }
  buildNav();
  if (can("read")) startLive();
  await route();
  prefetched = null; // only ever for the first page
}

// The first service page's keys are fetched alongside the service list (one round trip less).
let prefetched = null; // {path, promise}
function prefetchKeys() {
  const r = parseRoute();
  const name = r.page === "global" ? "global" : r.page === "service" ? r.arg : "";
  if (!name || !can("read") || (S.who.service && S.who.service !== name)) return;
  const path = `/api/v1/services/${enc(name)}/keys`;
  const promise = api(path);
  promise.catch(() => {}); // handled by whoever takes it
  prefetched = { path, promise };
}
/** The prefetched answer for `path`, if it was prefetched (once). */
export function takePrefetched(path) {
  const p = prefetched?.path === path ? prefetched.promise : null;
  prefetched = null;
  return p;
}

/** Reloads the services the token sees; whether the list changed. */
export async function loadServices() {
  const data = await api("/api/v1/services");
  noteEpoch(data.epoch);
  let list = (data.services || []).slice();
  if (S.who?.service) list = list.filter((s) => s === S.who.service);
  const changed = list.join("\n") !== S.services.join("\n");
  S.services = list;
  return changed;
}

/** Builds the navigation from the services and what the token may do. */
export function buildNav() {
  const nav = $("#nav");
  const links = [];
  if (can("read")) {
    for (const s of plainServices()) links.push(h("a", { class: "tab", href: serviceHref(s), "data-service": s }, s));
    if (hasGlobal()) links.push(h("a", { id: "nav-global", class: "page-link", href: "#/global" }, "Global settings"));
    links.push(h("a", { id: "nav-search", class: "page-link", href: "#/search" }, "Search"));
    links.push(h("a", { id: "nav-history", class: "page-link", href: "#/history" }, "History"));
    links.push(h("a", { id: "nav-fleet", class: "page-link", href: "#/fleet" }, "Fleet"));
  }
  if (can("audit")) links.push(h("a", { id: "nav-audit", class: "page-link", href: "#/audit" }, "Audit"));
  nav.replaceChildren(...links);
  markNav();
}

/** Marks the navigation link of the current route (`aria-current`). */
export function markNav() {
  const r = parseRoute();
  for (const a of $("#nav").querySelectorAll("a")) {
    let current = false;
    if (a.classList.contains("tab")) current = r.page === "service" && r.arg === a.dataset.service;
    else current = a.id === `nav-${r.page}`;
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

/** The server's read-only fallback began or ended: banner, and the edit controls. */
export function setReadOnly(on) {
  if (S.readOnly === on) return;
  S.readOnly = on;
  $("#readonly-banner").hidden = !on;
  // Show or hide the edit controls, unless that would drop edits in progress.
  if (S.who && S.page && !S.page.dirty()) queueMicrotask(() => route());
  else S.page?.modeChanged?.();
}

/** The first page with its data on screen: the benchmark hook, once per load. */
export function pageReady(name) {
  $("#main").setAttribute("data-page", name);
  if (!S.ready) {
    S.ready = true;
    performance.mark("confstore:ready");
  }
}
