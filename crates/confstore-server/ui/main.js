// confstore web UI: the entry module (index.html loads it with <script type="module">).
// Plain DOM, no dependencies, no build step: the server embeds every file of ui/ and serves
// it as it is (crates/confstore-server/src/web.rs, one asset table). The page runs under a
// strict CSP (script-src 'self': these modules only; no inline script or style, no eval),
// and every value shown comes from the store, so the DOM is built with
// createElement/textContent only: nothing here ever assigns innerHTML.
//
// Modules: values (pure value helpers) · dom (elements, tables, messages) · state (the
// session and what the server says the token may do) · api (fetch, errors, the token) ·
// shell (sign-in, navigation, read-only mode) · router (hash routes) · page-service,
// page-search, page-history, page-fleet, page-audit (one a page) · editor (the schema form), fields
// (its widgets), validate (its JSON Schema checks) · live (server-sent events) · main.
// Some modules import each other in a cycle (shell, router, live, api); they only call
// each other's functions after every module has loaded, never while loading, so the
// cycles are harmless.

import { $ } from "./dom.js";
import { cancelReveal, doReveal } from "./page-service.js";
import { route } from "./router.js";
import { boot, onSigninSubmit, showSignin, signOut } from "./shell.js";
import { S, TOKEN_KEY, can } from "./state.js";

/** Keyboard: "/" goes to search (or focuses it), Escape dismisses the message. */
function onKey(e) {
  const t = e.target;
  const typing = t instanceof Element && (t.closest("input,textarea,select,[contenteditable]") !== null);
  if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey && S.who && can("read")) {
    e.preventDefault();
    const input = $("#search-input");
    if (input) input.focus();
    else {
      S.focusSearch = true;
      location.hash = "#/search";
    }
  } else if (e.key === "Escape" && !document.querySelector("dialog[open]")) {
    $("#toast").hidden = true;
  }
}

/** Wires the page's fixed controls, then signs in with the tab's token or asks for one. */
function start() {
  $("#signin").addEventListener("submit", onSigninSubmit);
  $("#signout").addEventListener("click", () => signOut(""));
  $("#toast .toast-close").addEventListener("click", () => { $("#toast").hidden = true; });
  $("#reveal-ok").addEventListener("click", doReveal);
  $("#reveal-cancel").addEventListener("click", cancelReveal);
  // No "close" listener forgetting the pending reveal: Escape's close event can arrive after
  // the next askReveal. OK is only reachable through askReveal, which always sets it afresh.
  window.addEventListener("hashchange", () => route());
  document.addEventListener("keydown", onKey);
  S.token = sessionStorage.getItem(TOKEN_KEY);
  if (S.token) boot();
  else showSignin("");
}

start();
