"use strict";
// confstore web UI. Plain DOM, no dependencies, no build step: the server embeds this file.
// The page runs under a strict CSP (no inline script or style, no eval), and every value
// shown comes from the store, so the DOM is built with createElement/textContent only:
// nothing here ever assigns innerHTML.
//
// Sections: helpers · API client · session and shell · router · service page · editor
// (schema form) · search · history · audit · live stream · keyboard · start.

(() => {
  // ───────────────────────────── helpers ─────────────────────────────

  const TOKEN_KEY = "confstore.token";
  const MASK = "••••••";
  const enc = encodeURIComponent;
  const $ = (sel, root = document) => root.querySelector(sel);

  /** h("tag", {attr: value, class, text, on<event>: fn}, ...children): an element. */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null || v === false) continue;
        if (k === "class") el.className = v;
        else if (k === "text") el.textContent = v;
        else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of kids.flat()) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : String(c)); // strings become text nodes
    }
    return el;
  }

  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  /** An event or change as the API gives it, flat ({type, service, key, …}) or in the
   *  export's decoded form ({…, kind: {type, service, key, …}}): always flat. */
  const flat = (ev) => (isObj(ev) && isObj(ev.kind) ? { ...ev, ...ev.kind } : ev);
  /** The changes of a changeset, flat. */
  const changesOf = (c) => (Array.isArray(c?.changes) ? c.changes.map(flat) : []);

  /** Stable JSON (sorted keys), to tell whether a value changed. */
  function canon(v) {
    if (Array.isArray(v)) return "[" + v.map(canon).join(",") + "]";
    if (isObj(v)) return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canon(v[k])).join(",") + "}";
    return JSON.stringify(v) ?? "undefined";
  }

  /** Whether a value is the API's masked secret: exactly {"$secret": true} (docs/format.md
   *  §18). No stored value has this shape, so a plain string "<secret>" is just a string. */
  const isMasked = (v) => isObj(v) && v.$secret === true && Object.keys(v).length === 1;

  /** A value as it is: strings as they are, the rest as compact JSON (revealed plaintext). */
  const plain = (v) => (typeof v === "string" ? v : JSON.stringify(v));

  /** A value as table text: a masked secret as the mask, else as it is. */
  function fmt(v) {
    if (v === undefined) return "";
    if (isMasked(v)) return MASK;
    return plain(v);
  }

  function jsonType(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) return "array";
    if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
    return typeof v;
  }

  function fmtTime(t) {
    if (t == null || t === "") return "";
    const d = new Date(typeof t === "number" ? t : String(t));
    return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function tableOf(id, headers, cls = "data") {
    const tbody = h("tbody");
    const table = h("table", { id, class: cls }, h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col" }, t)))), tbody);
    return { table, tbody, wrap: h("div", { class: "table-wrap" }, table) };
  }

  function epochInput(id, label, value) {
    const input = h("input", { id, type: "number", min: "0", step: "1", inputmode: "numeric", value: value ?? null });
    return { input, el: h("div", { class: "control" }, h("label", { for: id }, label), input) };
  }

  /** A whole, non-negative number typed into an input, or null. */
  function epochOf(input) {
    const t = input.value.trim();
    return /^\d+$/.test(t) ? Number(t) : null;
  }

  // Toast: errors stay until dismissed or replaced (never swallowed); notes fade.
  let toastTimer = 0;
  function toast(message, kind = "error") {
    const el = $("#toast");
    $(".toast-text", el).textContent = message;
    el.className = kind;
    el.hidden = false;
    clearTimeout(toastTimer);
    if (kind !== "error") toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
  }
  function report(err) {
    if (!err || err.name === "AbortError" || err.handled) return;
    toast(err.message || String(err));
  }

  // ───────────────────────────── API client ─────────────────────────────

  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.code = code;
      this.body = body || {};
    }
  }

  /** One API call: JSON in and out, the bearer token, If-Match; a 401 signs out. */
  async function api(path, { method = "GET", body, ifMatch, signal } = {}) {
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

  // ───────────────────────────── session and shell ─────────────────────────────

  const S = {
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
  };

  function can(what) {
    const w = S.who;
    if (!w) return false;
    if (isObj(w.can)) return !!(w.can.admin || w.can[what]);
    const grants = { read: ["config.read", "config.write"], write: ["config.write"], reveal: ["secrets.reveal"], audit: ["audit.read"] };
    return w.role === "admin" || (grants[what] || []).includes(w.role);
  }
  // The audit trail covers the whole store; the server refuses it to service-scoped tokens.
  const canAudit = () => can("audit") && !S.who?.service;
  const canEdit = () => can("write") && !S.readOnly;

  function noteEpoch(e) {
    if (typeof e === "number" && (S.epoch == null || e > S.epoch)) S.epoch = e;
  }

  function showSignin(message) {
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

  function signOut(message) {
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

  async function onSigninSubmit(ev) {
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
  async function boot() {
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
  function takePrefetched(path) {
    const p = prefetched?.path === path ? prefetched.promise : null;
    prefetched = null;
    return p;
  }

  async function loadServices() {
    const data = await api("/api/v1/services");
    noteEpoch(data.epoch);
    let list = (data.services || []).slice();
    if (S.who?.service) list = list.filter((s) => s === S.who.service);
    const changed = list.join("\n") !== S.services.join("\n");
    S.services = list;
    return changed;
  }

  const plainServices = () => S.services.filter((s) => s !== "global");
  const hasGlobal = () => S.services.includes("global");
  const serviceHref = (s) => (s === "global" ? "#/global" : `#/service/${enc(s)}`);

  function buildNav() {
    const nav = $("#nav");
    const links = [];
    if (can("read")) {
      for (const s of plainServices()) links.push(h("a", { class: "tab", href: serviceHref(s), "data-service": s }, s));
      if (hasGlobal()) links.push(h("a", { id: "nav-global", class: "page-link", href: "#/global" }, "Global settings"));
      links.push(h("a", { id: "nav-search", class: "page-link", href: "#/search" }, "Search"));
      links.push(h("a", { id: "nav-history", class: "page-link", href: "#/history" }, "History"));
    }
    if (canAudit()) links.push(h("a", { id: "nav-audit", class: "page-link", href: "#/audit" }, "Audit"));
    nav.replaceChildren(...links);
    markNav();
  }

  function markNav() {
    const r = parseRoute();
    for (const a of $("#nav").querySelectorAll("a")) {
      let current = false;
      if (a.classList.contains("tab")) current = r.page === "service" && r.arg === a.dataset.service;
      else current = a.id === `nav-${r.page}`;
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  function setReadOnly(on) {
    if (S.readOnly === on) return;
    S.readOnly = on;
    $("#readonly-banner").hidden = !on;
    // Show or hide the edit controls, unless that would drop edits in progress.
    if (S.who && S.page && !S.page.dirty()) queueMicrotask(() => route());
    else S.page?.modeChanged?.();
  }

  /** The first page with its data on screen: the benchmark hook, once per load. */
  function pageReady(name) {
    $("#main").setAttribute("data-page", name);
    if (!S.ready) {
      S.ready = true;
      performance.mark("confstore:ready");
    }
  }

  // ───────────────────────────── router ─────────────────────────────

  function parseRoute() {
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
    return canAudit() ? "#/audit" : null;
  }

  async function route() {
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
      }
      if (r.page === "audit" && canAudit()) return await pageAudit(gen);
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

  // ───────────────────────────── service / global page ─────────────────────────────

  async function pageService(name, gen) {
    if (S.who.service && S.who.service !== name) {
      throw new ApiError(403, "forbidden", `this token is limited to service "${S.who.service}"`);
    }
    const page = new ServicePage(name);
    const data = await page.fetch();
    if (gen !== S.gen) return;
    S.page = page;
    page.data = data;
    $("#main").replaceChildren(page.root);
    page.renderView();
    pageReady(name === "global" ? "global" : "service");
  }

  class ServicePage {
    constructor(name) {
      this.name = name;
      this.isGlobal = name === "global";
      this.data = null;
      this.editor = null; // set while editing
      this.loadSeq = 0;
      this.root = h("section", { id: "page-service", class: "page", "data-service": name });
      this.root.addEventListener("click", (e) => this.onClick(e));
    }

    get keysPath() { return `/api/v1/services/${enc(this.name)}/keys`; }

    async fetch() {
      const data = await (takePrefetched(this.keysPath) ?? api(this.keysPath));
      noteEpoch(data.epoch);
      return data;
    }

    dirty() { return !!this.editor?.dirty(); }
    current() { return S.page === this; }

    header() {
      const d = this.data;
      const title = this.isGlobal ? "Global settings" : this.name;
      const meta = [`epoch ${d.epoch}`, `${d.keys.length} key${d.keys.length === 1 ? "" : "s"}`];
      if (!d.schema) meta.push("no schema: values are free JSON");
      const tools = h("div", { class: "tools" });
      if (!this.editor && canEdit()) tools.append(h("button", { id: "edit", type: "button" }, "Edit"));
      if (!this.editor) tools.append(h("a", { class: "button secondary", href: `#/history/${enc(this.name)}` }, "History"));
      return h("div", { class: "page-head" },
        h("div", null, h("h1", null, title), h("p", { class: "meta" }, meta.join(" · "),
          this.isGlobal ? " · inherited by every service that does not set the key itself" : "")),
        tools);
    }

    renderView() {
      const d = this.data;
      this.editor = null;
      this.root.setAttribute("data-epoch", String(d.epoch));
      const { table, tbody, wrap } = tableOf("keys", ["Key", "Value", "Type", "Description", "Source", "Epoch", ""]);
      table.setAttribute("aria-label", `keys of ${this.name}`);
      const frag = document.createDocumentFragment();
      const reveal = can("reveal") && !S.readOnly;
      for (const k of d.keys) frag.append(keyRow(k, reveal));
      if (!d.keys.length) frag.append(h("tr", null, h("td", { colspan: "7", class: "empty" }, "No keys are set and the schema has no defaults.")));
      tbody.append(frag);
      this.notice = h("p", { id: "page-notice", class: "notice", role: "status", hidden: true });
      this.root.replaceChildren(this.header(), this.notice, wrap);
      if (S.focusKey) {
        const row = tbody.querySelector(`tr[data-key="${CSS.escape(S.focusKey)}"]`);
        S.focusKey = null;
        if (row) {
          row.classList.add("flash");
          row.scrollIntoView({ block: "center" });
        }
      }
    }

    onClick(e) {
      const t = e.target;
      if (!(t instanceof Element)) return;
      if (t.closest("#edit")) return this.openEditor();
      const rv = t.closest("button.reveal");
      if (rv) return askReveal(this, rv.closest("tr").dataset.key);
      const hide = t.closest("button.hide-secret");
      if (hide) {
        const row = hide.closest("tr");
        const k = this.data.keys.find((x) => x.key === row.dataset.key);
        if (k) row.replaceWith(keyRow(k, true));
      }
    }

    openEditor() {
      if (!canEdit()) return;
      this.editor = new Editor(this, this.data);
      this.root.setAttribute("data-epoch", String(this.data.epoch));
      this.notice = h("p", { id: "page-notice", class: "notice", role: "status", hidden: true });
      this.root.replaceChildren(this.header(), this.notice, this.editor.form);
      this.editor.check();
      this.editor.focusFirst();
      if (S.epoch > this.data.epoch) refreshSoon("epoch"); // opened on data a commit already passed
    }

    /** Reloads the data and shows the table (after cancel, save or reload). It wins over
     *  a live refresh in flight: `leaving` keeps new refreshes out until it is done. */
    async reload() {
      this.leaving = true;
      const seq = ++this.loadSeq;
      try {
        const data = await this.fetch();
        if (seq !== this.loadSeq || !this.current()) return;
        this.data = data;
        this.renderView();
        if (S.epoch > data.epoch) refreshSoon("epoch"); // a commit landed while it loaded
      } finally {
        if (seq === this.loadSeq) this.leaving = false;
      }
    }

    /** The store moved on: show it, but never drop edits. */
    async refresh() {
      if (!this.current() || this.leaving) return;
      const newest = S.epoch;
      if (this.editor) {
        if (this.editor.saving) return; // the save reloads the page itself
        if (this.editor.dirty()) {
          if (newest > this.editor.baseEpoch) this.showNotice(`changed by someone else at epoch ${newest}: saving will ask how to merge`);
          return;
        }
        // A clean editor follows the store; focus stays on the same field.
        const seq = ++this.loadSeq;
        const data = await this.fetch();
        if (seq !== this.loadSeq || this.leaving || !this.current() || !this.editor || this.editor.dirty() || this.editor.saving) return;
        if (data.epoch === this.data.epoch) return;
        const focused = document.activeElement?.getAttribute?.("data-field");
        this.data = data;
        this.openEditor();
        if (focused) this.root.querySelector(`[data-field="${CSS.escape(focused)}"]`)?.focus();
        return;
      }
      const seq = ++this.loadSeq;
      const data = await this.fetch();
      if (seq !== this.loadSeq || !this.current() || this.editor) return;
      if (data.epoch === this.data.epoch) return; // nothing new here: keep revealed values
      this.data = data;
      this.renderView();
    }

    modeChanged() { this.editor?.check(); }

    showNotice(text) {
      if (!this.notice) return;
      this.notice.textContent = text;
      this.notice.hidden = false;
    }
  }

  function keyRow(k, reveal) {
    const secret = isMasked(k.value);
    const tr = h("tr", { "data-key": k.key, class: secret ? "secret" : null });
    const value = fmt(k.value);
    const type = k.type ?? (secret ? "secret" : jsonType(k.value));
    tr.append(
      h("td", { class: "k-key" }, h("code", null, k.key)),
      h("td", { class: "k-value" + (typeof k.value === "string" || secret ? "" : " json") }, value),
      h("td", { class: "k-type" }, type),
      h("td", { class: "k-desc" }, k.description ?? ""),
      h("td", { class: `k-source src-${k.source}` }, k.source ?? ""),
      h("td", { class: "k-epoch" }, k.epoch == null ? "—" : String(k.epoch)),
      h("td", { class: "k-actions" }, secret && reveal
        ? h("button", { type: "button", class: "reveal secondary small", "aria-label": `Reveal ${k.key}` }, "Reveal")
        : null),
    );
    return tr;
  }

  // Reveal: confirm first (the reveal is an audit event), then show it in the row only.
  let pendingReveal = null;
  function askReveal(page, key) {
    pendingReveal = { page, key };
    $("#reveal-text").textContent =
      `Show the plaintext of ${page.name}.${key}? The reveal is audited: it is recorded in the audit log with your token's name (${S.who.name ?? S.who.token_id}).`;
    $("#reveal-confirm").showModal();
    $("#reveal-cancel").focus(); // the safe choice first
  }

  async function doReveal() {
    const p = pendingReveal;
    pendingReveal = null;
    $("#reveal-confirm").close();
    if (!p) return;
    try {
      const r = await api(`/api/v1/services/${enc(p.page.name)}/secrets/${enc(p.key)}/reveal`, { method: "POST" });
      if (!p.page.current() || p.page.editor) return;
      const row = p.page.root.querySelector(`#keys tr[data-key="${CSS.escape(p.key)}"]`);
      if (!row) return;
      const cell = $("td.k-value", row);
      cell.textContent = plain(r.value);
      cell.classList.add("revealed");
      $("td.k-actions", row).replaceChildren(h("button", { type: "button", class: "hide-secret secondary small" }, "Hide"));
    } catch (e) {
      report(e);
    }
  }

  // ───────────────────────────── editor: JSON Schema form ─────────────────────────────

  let uid = 0;
  const nextId = () => `f${++uid}`;

  function errorEl(path) {
    return h("span", { class: "field-error", "data-for": path, id: nextId(), hidden: true });
  }
  function setError(el, msg) {
    el.textContent = msg || "";
    el.hidden = !msg;
  }
  /** Tells the editor that something changed that fired no input event (add, remove). */
  function poke(el) { el.dispatchEvent(new Event("edited", { bubbles: true })); }

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
  function mainType(s) {
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
  function schemaError(s, v, shallow = false) {
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
  function defaultFor(s) {
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
  function kindOf(s, v) {
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

  /**
   * A widget for value `value` of schema `schema` at `path`:
   * {el, inputId?, read() -> {ok, value} (also shows its errors), setDisabled(bool)}.
   */
  function buildField(schema, value, path) {
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

  const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

  /** Rewrites the paths under `root` from prefix `from` to `to` (array items renumbered). */
  function renamePaths(root, from, to) {
    const swap = (v) => (v === from ? to : v.startsWith(from + ".") ? to + v.slice(from.length) : v);
    for (const attr of ["data-field", "data-for", "data-path"]) {
      for (const el of root.querySelectorAll(`[${attr}]`)) el.setAttribute(attr, swap(el.getAttribute(attr)));
      if (root.hasAttribute(attr)) root.setAttribute(attr, swap(root.getAttribute(attr)));
    }
  }

  /** A label for a child widget: a real <label> when it has one control. */
  function nameLabel(w, name) {
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
  function secretField(schema, path, required) {
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

  /** The schema of one top-level key: its property, the additionalProperties schema, or none. */
  function keySchema(schema, key) {
    if (!isObj(schema)) return null;
    const p = schema.properties?.[key];
    if (p === true) return {};
    if (isObj(p)) return p;
    return isObj(schema.additionalProperties) ? schema.additionalProperties : null;
  }

  /** Whether keys outside the schema's properties may be set (the server treats absent as no). */
  function freeKeysAllowed(schema) {
    if (!isObj(schema)) return true;
    const ap = schema.additionalProperties ?? schema.unevaluatedProperties;
    return ap !== undefined && ap !== false;
  }

  class Editor {
    constructor(page, data) {
      this.page = page;
      this.service = page.name;
      this.schema = data.schema;
      this.baseEpoch = data.epoch; // If-Match of the save
      this.rows = []; // {key, info, secret, added, unset, w, el, body, err}
      this.valid = true;
      this.saving = false;
      this.serverErrors = new Map(); // key -> message from the last 422
      this.build(data);
    }

    build(data) {
      this.list = h("div", { class: "editor-rows" });
      for (const k of data.keys) this.addRow(k.key, k, isMasked(k.value), false);
      this.reason = h("textarea", { id: "reason", rows: "2", maxlength: "1024", required: true, placeholder: "why (recorded with the change)" });
      this.saveBtn = h("button", { id: "save", type: "button" }, "Save");
      this.cancelBtn = h("button", { id: "cancel", type: "button", class: "secondary" }, "Cancel");
      this.error = h("div", { id: "editor-error", class: "error", role: "alert", hidden: true });
      this.conflictBox = h("div", { id: "conflict", class: "conflict", role: "alert", hidden: true });
      this.form = h("form", { id: "editor", novalidate: true, autocomplete: "off", "aria-label": `Edit ${this.service}` },
        this.list, this.addSection(),
        h("div", { class: "save-row" },
          h("label", { for: "reason" }, "Reason ", h("span", { class: "hint" }, "(required; recorded in the log)")),
          this.reason, this.error, this.conflictBox,
          h("div", { class: "actions" }, this.saveBtn, this.cancelBtn)));
      const onEdit = () => this.check();
      for (const ev of ["input", "change", "edited"]) this.form.addEventListener(ev, onEdit);
      this.form.addEventListener("submit", (e) => e.preventDefault()); // Enter never saves by surprise
      this.saveBtn.addEventListener("click", () => this.save());
      this.cancelBtn.addEventListener("click", () => this.page.reload().catch(report));
      this.form.addEventListener("click", (e) => this.onClick(e));
    }

    addRow(key, info, secret, added) {
      const schema = keySchema(this.schema, key);
      const row = { key, info, secret, added, unset: false };
      row.w = secret ? secretField(schema, key, added) : buildField(schema, added ? defaultFor(schema ?? {}) : info.value, key);
      const badges = [];
      badges.push(h("span", { class: "badge" }, info?.type ?? schema?.type ?? (secret ? "secret" : info ? jsonType(info.value) : "json")));
      if (secret) badges.push(h("span", { class: "badge secret-badge" }, "secret"));
      if (info) badges.push(h("span", { class: `badge src-${info.source}` }, info.source === "service" ? "set here" : `from ${info.source}`));
      else badges.push(h("span", { class: "badge new" }, "new"));
      let action = null;
      if (added) action = h("button", { type: "button", class: "link small remove-key" }, "remove");
      else if (info.source === "service") action = h("button", { type: "button", class: "link small reset", "aria-pressed": "false" }, this.service === "global" ? "Unset" : "Reset to inherited/default");
      const desc = info?.description ?? schema?.description;
      row.note = h("p", { class: "unset-note", hidden: true }, "Will be unset: the value then comes from global settings or the schema default.");
      row.el = h("div", { class: "erow", "data-key": key },
        h("div", { class: "erow-head" }, nameLabel(row.w, key), ...badges, action),
        desc ? h("p", { class: "desc" }, desc) : null,
        row.note, row.w.el);
      this.rows.push(row);
      this.list.append(row.el);
      return row;
    }

    addSection() {
      const sec = h("fieldset", { class: "add-key" }, h("legend", null, "Add a key"));
      this.addFs = sec;
      this.freeKeys = freeKeysAllowed(this.schema);
      const props = isObj(this.schema?.properties) ? Object.keys(this.schema.properties) : [];
      this.missingSel = h("select", { id: "add-schema-key", "aria-label": "Schema key to add" });
      const addBtn = h("button", { id: "add-schema-key-btn", type: "button", class: "secondary small" }, "Add");
      this.missingRow = h("div", { class: "add-member" }, h("label", { for: "add-schema-key" }, "From the schema"), this.missingSel, addBtn);
      addBtn.addEventListener("click", () => {
        const k = this.missingSel.value;
        if (k && !this.rows.some((r) => r.key === k)) this.addNew(k, false);
      });
      sec.append(this.missingRow);
      this.refreshMissing(props);
      if (this.freeKeys) {
        const name = h("input", { id: "add-key-name", type: "text", spellcheck: "false", placeholder: "key name", pattern: KEY_RE.source });
        const secret = h("input", { id: "add-key-secret", type: "checkbox" });
        const btn = h("button", { id: "add-key", type: "button", class: "secondary small" }, "Add key");
        const err = h("span", { id: "add-key-error", class: "hint-error", role: "alert", hidden: true });
        btn.addEventListener("click", () => {
          const k = name.value.trim();
          const why = !KEY_RE.test(k) ? "a key is 1-128 of A-Z a-z 0-9 _ - . starting with a letter or digit"
            : this.rows.some((r) => r.key === k) ? `${k} is already listed` : null;
          setError(err, why);
          if (why) return;
          this.addNew(k, secret.checked);
          name.value = "";
          secret.checked = false;
        });
        sec.append(h("div", { class: "add-member" }, h("label", { for: "add-key-name" }, "New key"), name,
          h("label", { class: "inline" }, secret, " secret"), btn, err));
      }
      return sec;
    }

    refreshMissing(props = isObj(this.schema?.properties) ? Object.keys(this.schema.properties) : []) {
      const absent = props.filter((p) => !this.rows.some((r) => r.key === p));
      this.missingSel.replaceChildren(...absent.map((p) => h("option", { value: p }, p)));
      this.missingRow.hidden = absent.length === 0;
      this.addFs.hidden = absent.length === 0 && !this.freeKeys; // nothing to add: no empty box
    }

    addNew(key, secret) {
      const row = this.addRow(key, null, secret, true);
      this.refreshMissing();
      this.check();
      row.el.querySelector("input,select,textarea")?.focus();
    }

    onClick(e) {
      const t = e.target instanceof Element ? e.target : null;
      if (!t) return;
      const rowEl = t.closest(".erow");
      const row = rowEl && this.rows.find((r) => r.el === rowEl);
      if (!row) {
        if (t.closest("#conflict-reload")) this.page.reload().catch(report);
        else if (t.closest("#conflict-reapply")) this.reapply();
        return;
      }
      if (t.closest("button.remove-key")) {
        this.rows.splice(this.rows.indexOf(row), 1);
        row.el.remove();
        this.refreshMissing();
        this.check();
      } else if (t.closest("button.reset")) {
        row.unset = !row.unset;
        const b = t.closest("button.reset");
        b.setAttribute("aria-pressed", String(row.unset));
        b.textContent = row.unset ? "Undo reset" : this.service === "global" ? "Unset" : "Reset to inherited/default";
        row.el.classList.toggle("unset", row.unset);
        row.note.hidden = !row.unset;
        row.w.setDisabled(row.unset);
        this.check();
      }
    }

    /** Reads every field: shows inline errors, enables Save, returns the changes. */
    check() {
      let valid = true;
      const set = {}, secrets = {}, unset = [];
      for (const row of this.rows) {
        if (row.unset) {
          unset.push(row.key);
          continue;
        }
        const r = row.w.read();
        if (!r.ok) valid = false;
        let changed;
        if (row.secret) changed = r.value !== undefined; // an untouched secret is never sent
        else changed = row.added || canon(r.value) !== canon(row.info.value);
        if (r.ok && changed) (row.secret ? secrets : set)[row.key] = r.value;
        // A server message about this key stays until the key is edited.
        const se = this.serverErrors.get(row.key);
        if (se && r.ok) {
          if (se.value === canon(r.value)) this.topError(row, se.message);
          else this.serverErrors.delete(row.key);
        }
      }
      this.valid = valid;
      this.changes = { set, secrets, unset };
      this.count = Object.keys(set).length + Object.keys(secrets).length + unset.length;
      const reason = this.reason.value.trim();
      this.saveBtn.disabled = !valid || !reason || this.saving || S.readOnly;
      this.saveBtn.title = !valid ? "fix the fields marked in red first" : !reason ? "give a reason" : S.readOnly ? "the server is read-only" : "";
      return this.changes;
    }

    topError(row, msg) {
      const el = row.el.querySelector(`.field-error[data-for="${CSS.escape(row.key)}"]`);
      if (el && !el.textContent) setError(el, msg);
    }

    dirty() {
      this.check();
      return this.count > 0 || this.reason.value.trim() !== "";
    }

    focusFirst() { this.form.querySelector("[data-field]:not([disabled])")?.focus(); }

    showError(msg) {
      this.error.textContent = msg || "";
      this.error.hidden = !msg;
    }

    /** A 422 names keys as "service.key (rule): …": put the message next to each. */
    markServerErrors(message) {
      this.serverErrors.clear();
      for (const row of this.rows) {
        const needle = `${this.service}.${row.key}`;
        let at = message.indexOf(needle);
        while (at >= 0) {
          const next = message[at + needle.length];
          const before = at === 0 ? " " : message[at - 1];
          if ((next === undefined || /[\s(:;,]/.test(next)) && /[\s"'(;:,]/.test(before)) break;
          at = message.indexOf(needle, at + 1);
        }
        if (at < 0) continue;
        const end = message.indexOf(";", at);
        const part = message.slice(at, end < 0 ? undefined : end).trim();
        const r = row.unset ? null : row.w.read();
        this.serverErrors.set(row.key, { message: part, value: r ? canon(r.value) : "" });
      }
      this.check();
    }

    body() {
      const c = this.check();
      const body = { reason: this.reason.value.trim() };
      if (Object.keys(c.set).length) body.set = c.set;
      if (Object.keys(c.secrets).length) body.secrets = c.secrets;
      if (c.unset.length) body.unset = c.unset;
      return body;
    }

    async save(auto = true) {
      this.check();
      if (this.saveBtn.disabled && !this.saving) return;
      if (this.count === 0) return this.showError("nothing changed: edit a value, add a key or reset one first");
      const body = this.body();
      this.showError("");
      this.conflictBox.hidden = true;
      this.saving = true;
      this.check();
      try {
        const r = await api(`/api/v1/services/${enc(this.service)}/values`, { method: "PATCH", body, ifMatch: this.baseEpoch });
        noteEpoch(r?.epoch);
        if (!this.page.current()) return;
        toast(`saved ${this.count} change${this.count === 1 ? "" : "s"} to ${this.service}: now at epoch ${r?.epoch}`, "note");
        // Leave the editor for the table at the new epoch; `saving` stays set until then so
        // that the live event of this very save is not taken for someone else's change.
        try {
          await this.page.reload();
        } catch (err) {
          this.saving = false;
          this.check();
          this.showError(`saved at epoch ${r?.epoch}, but the page could not be reloaded: ${err.message}`);
        }
        return;
      } catch (e) {
        this.saving = false;
        if (e.status === 409) await this.onConflict(e, auto);
        else if (e.status === 422) {
          this.showError(e.message);
          this.markServerErrors(e.message);
        } else {
          this.showError(e.message);
          report(e);
        }
      }
      this.saving = false;
      if (this.page.editor === this) this.check();
    }

    /** 409: who changed this service since the page was loaded? Ask, or re-apply once if nobody. */
    async onConflict(e, auto) {
      const expected = this.baseEpoch;
      const current = e.body.current_epoch;
      let list = null;
      try {
        list = (await api("/api/v1/changesets?limit=20")).changesets || [];
      } catch (err) {
        report(err);
      }
      if (this.page.editor !== this) return;
      const newer = (list || []).filter((c) => c.epoch > expected);
      // Each changeset advances the epoch by one: all of them are here when the count matches.
      const complete = list !== null && typeof current === "number" && newer.filter((c) => c.epoch <= current).length >= current - expected;
      const touching = newer.filter((c) => changesOf(c).some((ch) => ch.service === this.service));
      this.conflictEpoch = typeof current === "number" ? current : S.epoch;
      if (!touching.length && complete && auto) {
        // The store moved on elsewhere: the same changes still apply on top.
        this.baseEpoch = this.conflictEpoch;
        return this.save(false);
      }
      const items = touching.map((c) => h("li", null, `epoch ${c.epoch}: ${c.actor ?? "someone"} changed ${changedKeys(c, this.service)}`,
        c.reason ? ` — “${c.reason}”` : "", c.time ? ` (${fmtTime(c.time)})` : ""));
      this.conflictBox.replaceChildren(
        h("p", null, h("strong", null, touching.length ? `${this.service} was changed by someone else while you edited it:` : `The store moved on to epoch ${this.conflictEpoch} while you edited.`)),
        items.length ? h("ul", null, items) : null,
        h("p", null, `Reload shows the current values and drops your edits; re-apply saves your changes on top of epoch ${this.conflictEpoch}.`),
        h("div", { class: "actions" },
          h("button", { id: "conflict-reload", type: "button", class: "secondary" }, "Reload (drop my edits)"),
          h("button", { id: "conflict-reapply", type: "button" }, "Re-apply my changes")));
      this.conflictBox.hidden = false;
      this.conflictBox.scrollIntoView({ block: "nearest" });
    }

    reapply() {
      this.baseEpoch = this.conflictEpoch;
      this.conflictBox.hidden = true;
      this.save(true);
    }
  }

  /** The keys of service `svc` a changeset touched, as text. */
  function changedKeys(c, svc) {
    const keys = changesOf(c).filter((ch) => ch.service === svc && ch.key).map((ch) => ch.key);
    return keys.length ? keys.join(", ") : "it";
  }

  // ───────────────────────────── search ─────────────────────────────

  let searchCtl = null;

  async function pageSearch(gen) {
    const st = S.search;
    const input = h("input", { id: "search-input", type: "search", placeholder: "service, key, value or description", autocomplete: "off", spellcheck: "false", value: st.q || null });
    const svc = h("select", { id: "search-service" });
    if (!S.who.service) svc.append(h("option", { value: "" }, "all services"));
    for (const s of S.services) svc.append(h("option", { value: s }, s));
    svc.value = S.who.service || st.service;
    const since = epochInput("search-since", "Changed since epoch", st.since || null);
    const count = h("p", { id: "search-count", class: "meta", role: "status" });
    const { table, tbody, wrap } = tableOf("search-table", ["Service", "Key", "Value", "Description", "Epoch"]);
    const results = h("div", { id: "search-results", "data-query": "" }, wrap);
    table.hidden = true;
    const root = h("section", { id: "page-search", class: "page" },
      h("h1", null, "Search"),
      h("div", { class: "controls" },
        h("div", { class: "control grow" }, h("label", { for: "search-input" }, "Find"), input),
        h("div", { class: "control" }, h("label", { for: "search-service" }, "Service"), svc),
        since.el),
      count, results);

    const run = async () => {
      st.q = input.value;
      st.service = svc.value;
      st.since = since.input.value;
      searchCtl?.abort(); // only the newest query's answer is shown
      const q = input.value;
      if (q.trim() === "") {
        searchCtl = null;
        tbody.replaceChildren();
        table.hidden = true;
        count.textContent = "";
        count.classList.remove("error");
        results.setAttribute("data-query", q);
        return;
      }
      const ctl = new AbortController();
      searchCtl = ctl;
      let url = `/api/v1/search?q=${enc(q)}`;
      if (svc.value) url += `&service=${enc(svc.value)}`;
      const e = epochOf(since.input);
      if (e !== null) url += `&since=${e}`;
      url += "&limit=100";
      try {
        const data = await api(url, { signal: ctl.signal });
        if (ctl.signal.aborted || searchCtl !== ctl) return;
        const frag = document.createDocumentFragment();
        for (const hit of data.hits || []) frag.append(hitRow(hit));
        tbody.replaceChildren(frag);
        table.hidden = !(data.hits || []).length;
        const n = (data.hits || []).length;
        count.classList.remove("error");
        count.textContent = n ? `${n}${n === 100 ? "+" : ""} hit${n === 1 ? "" : "s"}` : "no matches";
        results.setAttribute("data-query", q);
      } catch (err) {
        if (err.name === "AbortError" || searchCtl !== ctl) return;
        count.textContent = err.message;
        count.classList.add("error");
        tbody.replaceChildren();
        table.hidden = true;
        results.setAttribute("data-query", q);
        if (err.status !== 422) report(err);
      }
    };
    input.addEventListener("input", run);
    svc.addEventListener("change", run);
    since.input.addEventListener("input", run);
    results.addEventListener("click", (e) => {
      const a = e.target instanceof Element && e.target.closest("a[data-key]");
      if (a) S.focusKey = a.dataset.key;
    });

    if (gen !== S.gen) return;
    $("#main").replaceChildren(root);
    S.page = { name: "search", dirty: () => false, refresh: () => (input.value.trim() ? run() : undefined) };
    if (st.q) await run();
    if (gen !== S.gen) return;
    pageReady("search");
    if (focusSearchNext) {
      focusSearchNext = false;
      input.focus();
    }
  }

  function hitRow(hit) {
    const href = serviceHref(hit.service);
    return h("tr", { "data-hit": `${hit.service}/${hit.key}` },
      h("td", null, h("a", { href }, hit.service)),
      h("td", null, h("a", { href, "data-key": hit.key }, h("code", null, hit.key))),
      h("td", { class: "k-value" }, fmt(hit.value)),
      h("td", { class: "k-desc" }, hit.description ?? ""),
      h("td", null, hit.epoch == null ? "—" : String(hit.epoch)));
  }

  // ───────────────────────────── history: timeline, diff, rollback ─────────────────────────────

  async function pageHistory(arg, gen) {
    const scoped = S.who.service;
    const service = scoped || arg || "";
    const svcSel = h("select", { id: "history-service" });
    if (!scoped) svcSel.append(h("option", { value: "" }, "all services"));
    for (const s of S.services) svcSel.append(h("option", { value: s }, s));
    if (service && !S.services.includes(service)) svcSel.append(h("option", { value: service }, service));
    svcSel.value = service;
    svcSel.addEventListener("change", () => {
      location.hash = svcSel.value ? `#/history/${enc(svcSel.value)}` : "#/history";
    });

    const timeline = h("ol", { id: "timeline", class: "timeline" });
    const more = h("button", { id: "history-more", type: "button", class: "secondary", hidden: true }, "Load more");
    let nextBefore = null;
    let picked = null; // first entry clicked for a diff

    const load = async (reset) => {
      let url = `/api/v1/changesets?limit=50`;
      if (service) url += `&service=${enc(service)}`;
      if (!reset && nextBefore != null) url += `&before=${nextBefore}`;
      const data = await api(url);
      if (gen !== S.gen) return;
      const frag = document.createDocumentFragment();
      for (const c of data.changesets || []) {
        noteEpoch(c.epoch);
        frag.append(changesetItem(c, service));
      }
      if (reset) timeline.replaceChildren(frag);
      else timeline.append(frag);
      if (!timeline.children.length) timeline.append(h("li", { class: "empty" }, "No changes yet."));
      nextBefore = data.next_before ?? null;
      more.hidden = nextBefore == null;
      if (picked != null) timeline.querySelector(`li.changeset[data-epoch="${picked}"]`)?.classList.add("picked");
    };
    more.addEventListener("click", () => {
      more.disabled = true;
      load(false).catch(report).finally(() => { more.disabled = false; });
    });

    // Diff between two epochs: typed, or two timeline entries clicked.
    const from = epochInput("diff-from", "From epoch");
    const to = epochInput("diff-to", "To epoch (empty: now)");
    const runBtn = h("button", { id: "diff-run", type: "button" }, "Show diff");
    const diffOut = h("div", { id: "diff-results", "aria-live": "polite" });
    const runDiff = async () => {
      const a = epochOf(from.input);
      const b = to.input.value.trim() === "" ? null : epochOf(to.input);
      if (a === null || (to.input.value.trim() !== "" && b === null)) {
        diffOut.replaceChildren(h("p", { class: "error" }, "enter epochs as whole numbers"));
        return;
      }
      let url = `/api/v1/diff?from=${a}`;
      if (b !== null) url += `&to=${b}`;
      if (svcSel.value) url += `&service=${enc(svcSel.value)}`;
      runBtn.disabled = true;
      try {
        const d = await api(url);
        diffOut.replaceChildren(h("p", { class: "meta" }, `from epoch ${d.from_epoch} to epoch ${d.to_epoch}`), diffTable(d.changes || []));
      } catch (e) {
        diffOut.replaceChildren(h("p", { class: "error" }, e.message));
        report(e);
      } finally {
        runBtn.disabled = false;
      }
    };
    runBtn.addEventListener("click", runDiff);
    for (const i of [from.input, to.input]) i.addEventListener("keydown", (e) => { if (e.key === "Enter") runDiff(); });

    timeline.addEventListener("click", (e) => {
      const li = e.target instanceof Element && e.target.closest("li.changeset");
      if (!li || e.target.closest("a")) return;
      const epoch = Number(li.dataset.epoch);
      if (picked === null || picked === epoch) {
        for (const x of timeline.querySelectorAll(".picked")) x.classList.remove("picked");
        picked = picked === epoch ? null : epoch;
        if (picked !== null) li.classList.add("picked");
        setPressed(timeline, picked);
        return;
      }
      from.input.value = String(Math.min(picked, epoch));
      to.input.value = String(Math.max(picked, epoch));
      for (const x of timeline.querySelectorAll(".picked")) x.classList.remove("picked");
      picked = null;
      setPressed(timeline, null);
      runDiff();
    });

    const tools = h("div", { class: "history-tools" },
      h("section", { class: "card", "aria-labelledby": "diff-title" },
        h("h2", { id: "diff-title" }, "Diff between epochs"),
        h("p", { class: "hint" }, "Click two changesets in the timeline, or type the epochs."),
        h("div", { class: "controls" }, from.el, to.el, h("div", { class: "control end" }, runBtn)),
        diffOut));
    if (canEdit()) tools.append(rollbackSection(service, () => load(true)));

    const root = h("section", { id: "page-history", class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "History"),
        h("div", { class: "control" }, h("label", { for: "history-service" }, "Service"), svcSel)),
      h("div", { class: "history-grid" },
        h("section", { class: "timeline-col", "aria-label": "Timeline, newest first" }, timeline, more),
        tools));
    await load(true);
    if (gen !== S.gen) return;
    $("#main").replaceChildren(root);
    S.page = { name: "history", dirty: () => false, refresh: () => load(true) };
    pageReady("history");
  }

  function setPressed(timeline, epoch) {
    for (const b of timeline.querySelectorAll("button.pick")) b.setAttribute("aria-pressed", String(Number(b.closest("li").dataset.epoch) === epoch));
  }

  function changesetItem(c, service) {
    const changes = changesOf(c);
    const list = h("ul", { class: "changes" });
    const shown = changes.filter((ch) => !service || !ch.service || ch.service === service);
    for (const ch of shown.slice(0, 25)) list.append(h("li", null, describeChange(ch)));
    if (shown.length > 25) list.append(h("li", { class: "meta" }, `… and ${shown.length - 25} more`));
    return h("li", { class: "changeset", "data-epoch": String(c.epoch) },
      h("div", { class: "cs-head" },
        h("button", { type: "button", class: "pick", "aria-pressed": "false", title: "select for a diff" }, `epoch ${c.epoch}`),
        h("time", { datetime: typeof c.time === "string" ? c.time : null }, fmtTime(c.time)),
        h("span", { class: "actor" }, c.actor ?? "")),
      c.reason ? h("p", { class: "reason" }, c.reason) : h("p", { class: "reason meta" }, "(no reason given)"),
      list);
  }

  function describeChange(ch) {
    const name = ch.key ? `${ch.service}.${ch.key}` : ch.service ?? "";
    const t = String(ch.type || "");
    if (t.includes("rolled_back") || t === "rollback") {
      return `rolled back${ch.service ? ` ${ch.service}` : " the whole store"} to epoch ${ch.to_epoch}${ch.from_epoch != null ? ` (from ${ch.from_epoch})` : ""}`;
    }
    if (t.includes("unset")) return h("span", null, h("code", null, name), " unset");
    // A secret set: the API masks its value ({"$secret": true}); the event type says so too.
    if (isMasked(ch.value) || t === "secret_set") return h("span", null, h("code", null, name), ` = ${MASK} (secret)`);
    if (t.includes("service_registered") || t === "register") return h("span", null, "registered service ", h("code", null, ch.service));
    if (t.includes("schema")) return h("span", null, "schema of ", h("code", null, ch.service), " set");
    if ("value" in ch) {
      const v = fmt(ch.value);
      return h("span", null, h("code", null, name), " = ", h("code", { class: "val" }, v.length > 80 ? v.slice(0, 80) + "…" : v));
    }
    return h("span", null, h("code", null, name), ` ${t.replace(/_/g, " ")}`);
  }

  function diffTable(changes) {
    if (!changes.length) return h("p", { class: "empty" }, "no differences");
    const { tbody, wrap } = tableOf(null, ["Service", "Key", "Change", "Before", "After"]);
    const frag = document.createDocumentFragment();
    for (const c of changes) {
      frag.append(h("tr", { "data-change": `${c.service}/${c.key}`, class: `chg-${c.change}` },
        h("td", null, c.service), h("td", null, h("code", null, c.key)),
        h("td", { class: "chg" }, c.change),
        h("td", { class: "k-value" }, c.change === "added" ? "—" : fmt(c.before)),
        h("td", { class: "k-value" }, c.change === "removed" ? "—" : fmt(c.after))));
    }
    tbody.append(frag);
    return wrap;
  }

  function rollbackSection(service, reloadTimeline) {
    const scoped = S.who.service;
    const epoch = epochInput("rollback-epoch", "Roll back to epoch");
    const svc = h("select", { id: "rollback-service" });
    if (!scoped) svc.append(h("option", { value: "" }, "whole store"));
    for (const s of S.services) svc.append(h("option", { value: s }, s));
    svc.value = scoped || service || "";
    const previewBtn = h("button", { id: "rollback-preview", type: "button", class: "secondary" }, "Preview");
    const diff = h("div", { id: "rollback-diff", "aria-live": "polite" });
    const reason = h("textarea", { id: "rollback-reason", rows: "2", maxlength: "1024", placeholder: "why (recorded with the rollback)" });
    const confirm = h("button", { id: "rollback-confirm", type: "button", class: "danger", disabled: true }, "Roll back");
    const result = h("div", { id: "rollback-result", role: "status" });
    let preview = null; // {current, target, service}

    const update = () => { confirm.disabled = !preview || !reason.value.trim(); };
    const invalidate = () => {
      preview = null;
      diff.replaceChildren();
      update();
    };
    const runPreview = async () => {
      const target = epochOf(epoch.input);
      if (target === null) {
        result.replaceChildren(h("p", { class: "error" }, "enter the epoch to roll back to"));
        return;
      }
      previewBtn.disabled = true;
      try {
        const head = await api("/api/v1/head");
        noteEpoch(head.epoch);
        let url = `/api/v1/diff?from=${head.epoch}&to=${target}`;
        if (svc.value) url += `&service=${enc(svc.value)}`;
        const d = await api(url);
        preview = { current: head.epoch, target, service: svc.value };
        diff.replaceChildren(
          h("p", { class: "meta" }, `From the current epoch ${head.epoch} to the configuration of epoch ${target}${svc.value ? ` for ${svc.value}` : " for the whole store"}:`),
          diffTable(d.changes || []));
      } catch (e) {
        preview = null;
        diff.replaceChildren(h("p", { class: "error" }, e.message));
        report(e);
      } finally {
        previewBtn.disabled = false;
        update();
      }
    };
    previewBtn.addEventListener("click", () => {
      result.replaceChildren();
      runPreview();
    });
    epoch.input.addEventListener("input", invalidate);
    svc.addEventListener("change", invalidate);
    reason.addEventListener("input", update);
    confirm.addEventListener("click", async () => {
      if (!preview || !reason.value.trim()) return;
      const p = preview;
      const body = { to_epoch: p.target, reason: reason.value.trim() };
      if (p.service) body.service = p.service;
      confirm.disabled = true;
      try {
        const r = await api("/api/v1/rollback", { method: "POST", body, ifMatch: p.current });
        noteEpoch(r?.epoch);
        result.replaceChildren(h("p", { class: "ok" }, `Rolled back ${p.service || "the whole store"} to the configuration of epoch ${p.target}: the store is now at epoch ${r?.epoch}.`));
        reason.value = "";
        invalidate();
        reloadTimeline().catch(report);
      } catch (e) {
        if (e.status === 409) {
          result.replaceChildren(h("p", { class: "error" }, `The store moved on (now at epoch ${e.body.current_epoch ?? "?"}) since the preview; here is the new preview — check it and confirm again.`));
          await runPreview();
        } else {
          result.replaceChildren(h("p", { class: "error" }, e.message));
          if (e.status !== 422) report(e);
        }
      } finally {
        update();
      }
    });

    return h("section", { class: "card", "aria-labelledby": "rollback-title" },
      h("h2", { id: "rollback-title" }, "Roll back"),
      h("p", { class: "hint" }, "Makes a new changeset whose configuration equals an earlier epoch; history is kept."),
      h("div", { class: "controls" }, epoch.el,
        h("div", { class: "control" }, h("label", { for: "rollback-service" }, "Scope"), svc),
        h("div", { class: "control end" }, previewBtn)),
      diff,
      h("label", { for: "rollback-reason" }, "Reason ", h("span", { class: "hint" }, "(required)")), reason,
      h("div", { class: "actions" }, confirm),
      result);
  }

  // ───────────────────────────── audit ─────────────────────────────

  const AUDIT_TYPES = ["secret_revealed", "access_denied", "access_denied_summary", "token_issued", "token_revoked"];
  const AUDIT_PAGES_MAX = 50; // 50 000 events; the newest are what matter

  async function fetchAudit() {
    let events = [];
    let after = null;
    for (let i = 0; i < AUDIT_PAGES_MAX; i++) {
      const data = await api(`/api/v1/audit?limit=1000${after != null ? `&after=${after}` : ""}`);
      events = events.concat(data.events || []);
      after = data.next_after ?? null;
      if (after == null) break;
    }
    // Accept the event flattened ({type, service, …}) or as the export's decoded form ({kind: {type, …}}).
    return events.map(flat).sort((a, b) => (b.seq ?? 0) - (a.seq ?? 0));
  }

  async function pageAudit(gen) {
    const type = h("select", { id: "audit-type" }, h("option", { value: "" }, "all types"), AUDIT_TYPES.map((t) => h("option", { value: t }, t.replace(/_/g, " "))));
    const text = h("input", { id: "audit-text", type: "search", placeholder: "actor, service, key, route…", spellcheck: "false" });
    const count = h("p", { class: "meta", id: "audit-count", role: "status" });
    const { table, tbody, wrap } = tableOf("audit-list", ["Seq", "Time", "Type", "Actor", "Subject", "Details"]);
    table.setAttribute("aria-label", "audit events, newest first");
    let rows = []; // {tr, type, text}

    const filter = () => {
      const t = type.value;
      const q = text.value.trim().toLowerCase();
      let n = 0;
      for (const r of rows) {
        const show = (!t || r.type === t) && (!q || r.text.includes(q));
        r.tr.hidden = !show;
        if (show) n++;
      }
      count.textContent = `${n} of ${rows.length} event${rows.length === 1 ? "" : "s"}`;
    };
    const render = (events) => {
      const frag = document.createDocumentFragment();
      rows = events.map((ev) => {
        const tr = auditRow(ev);
        frag.append(tr);
        return { tr, type: ev.type, text: tr.textContent.toLowerCase() };
      });
      tbody.replaceChildren(frag);
      filter();
    };
    type.addEventListener("change", filter);
    text.addEventListener("input", filter);

    const verifyBtn = h("button", { id: "verify-now", type: "button" }, "Verify now");
    const verifyOut = h("div", { id: "verify-result", "aria-live": "polite" });
    verifyBtn.addEventListener("click", () => verifyNow(verifyBtn, verifyOut));

    const events = await fetchAudit();
    if (gen !== S.gen) return;
    const root = h("section", { id: "page-audit", class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "Audit"), h("div", { class: "tools" }, verifyBtn)),
      verifyOut,
      h("div", { class: "controls" },
        h("div", { class: "control" }, h("label", { for: "audit-type" }, "Type"), type),
        h("div", { class: "control grow" }, h("label", { for: "audit-text" }, "Actor or text"), text)),
      count, wrap);
    render(events);
    $("#main").replaceChildren(root);
    let seq = 0;
    S.page = {
      name: "audit",
      dirty: () => false,
      refresh: async () => {
        const mine = ++seq;
        const evs = await fetchAudit();
        if (mine === seq && S.page?.name === "audit") render(evs);
      },
      onSeq: true, // audit events advance the seq, not the epoch
    };
    pageReady("audit");
  }

  function auditRow(ev) {
    let subject = ev.key ? `${ev.service}.${ev.key}` : ev.service ?? "";
    if (ev.type === "token_issued") subject = ev.name ?? ev.token_id ?? "";
    else if (ev.type === "token_revoked" || ev.type === "access_denied_summary") subject = ev.token_id ?? "";
    const details = [];
    if (ev.method || ev.route) details.push(`${ev.method ?? ""} ${ev.route ?? ""}`.trim());
    if (ev.required_role) details.push(`needs ${ev.required_role}`);
    if (ev.type === "token_issued") details.push(`token ${ev.token_id ?? ""}, role ${ev.role ?? ""}${ev.service ? `, only ${ev.service}` : ""}`);
    if (ev.type === "token_revoked") details.push(`token ${ev.token_id ?? ""}`);
    if (ev.type === "access_denied_summary") {
      // Refusals after the token's first on each route, summed over a window (ADR 0013).
      for (const c of ev.counts || []) details.push(`${c.method} ${c.route} ×${c.count}`);
      if (ev.dropped) details.push(`${ev.dropped} on other routes`);
    }
    if (ev.reason) details.push(`“${ev.reason}”`);
    return h("tr", { "data-type": ev.type ?? "", class: `ev-${ev.type ?? "unknown"}` },
      h("td", null, ev.seq == null ? "" : String(ev.seq)),
      h("td", null, fmtTime(ev.time ?? ev.time_ms)),
      h("td", null, h("span", { class: `badge type-${ev.type}` }, String(ev.type ?? "").replace(/_/g, " "))),
      h("td", null, ev.actor ?? ""),
      h("td", null, h("code", null, subject)),
      h("td", null, details.join(" · ")));
  }

  async function verifyNow(btn, out) {
    btn.disabled = true;
    out.className = "";
    out.replaceChildren(h("p", { class: "meta" }, "verifying every event…"));
    try {
      const r = await api("/api/v1/verify", { method: "POST" });
      if (r && r.ok) {
        const signed = typeof r.signed_head === "string" ? r.signed_head : JSON.stringify(r.signed_head, null, 2);
        out.className = "ok";
        out.replaceChildren(
          h("p", null, h("strong", null, `verified ${r.events} events`), r.elapsed_ms != null ? ` in ${r.elapsed_ms} ms` : ""),
          h("dl", { class: "facts" },
            h("dt", null, "head seq"), h("dd", null, String(r.seq)),
            h("dt", null, "epoch"), h("dd", null, String(r.epoch)),
            h("dt", null, "generation"), h("dd", null, String(r.generation)),
            h("dt", null, "head hash"), h("dd", null, h("code", null, r.head_hash ?? "")),
            h("dt", null, "store id"), h("dd", null, h("code", null, r.store_id ?? ""))),
          h("p", { class: "meta" }, "Signed head (JWS):"),
          h("pre", { class: "jws" }, signed ?? ""));
      } else {
        out.className = "error";
        out.replaceChildren(h("p", null, h("strong", null, "verification failed: "), r?.problem ?? "no reason given"));
      }
    } catch (e) {
      out.className = "error";
      out.replaceChildren(h("p", null, h("strong", null, "verification failed: "), e.message));
      report(e);
    } finally {
      btn.disabled = false;
    }
  }

  // ───────────────────────────── live stream (SSE over fetch) ─────────────────────────────

  // EventSource cannot send the Authorization header, so the stream is read with fetch.
  let liveCtl = null;
  let liveRun = 0;

  function setLive(on) {
    const el = $("#live-status");
    el.textContent = on ? "live" : "offline";
    el.classList.toggle("live", on);
    el.classList.toggle("offline", !on);
  }

  function stopLive() {
    liveRun++;
    liveCtl?.abort();
    liveCtl = null;
    setLive(false);
  }

  async function startLive() {
    stopLive();
    const run = liveRun;
    let delay = 1000;
    while (run === liveRun && S.token) {
      const ctl = new AbortController();
      liveCtl = ctl;
      try {
        const res = await fetch("/api/v1/live", { headers: { Authorization: `Bearer ${S.token}`, Accept: "text/event-stream" }, signal: ctl.signal, cache: "no-store", credentials: "omit" });
        if (res.status === 401) {
          const body = await res.json().catch(() => null);
          if (run === liveRun) signOut(body?.message || "the token was refused");
          return;
        }
        if (res.headers.get("confstore-mode") === "read_only_fallback") setReadOnly(true);
        if (!res.ok || !res.body) throw new Error(`live stream: HTTP ${res.status}`);
        setLive(true);
        delay = 1000;
        await readSse(res.body, (event, data) => { if (run === liveRun) onLiveEvent(event, data); });
      } catch (e) {
        if (run !== liveRun) return;
        if (e.name !== "AbortError") console.warn("confstore live:", e.message);
      }
      if (run !== liveRun) return;
      setLive(false);
      if (S.readOnly) api("/api/v1/head").catch(() => {}); // notices the database coming back
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
  }

  // A page the browser keeps for back/forward, or a tab in the background, must not hold its
  // stream open: the server speaks HTTP/1.1 and Chromium allows 6 connections per host, so
  // streams left open by hidden pages starved the 7th page of the UI (it never loaded; found
  // by the UI benchmark). Close the stream when the page is hidden or left; reopen it when
  // it is shown again (its first event brings the page up to date).
  const liveWanted = () => Boolean(S.token) && can("read");
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") stopLive();
    else if (liveWanted() && !liveCtl) startLive();
  });
  window.addEventListener("pagehide", () => stopLive());
  window.addEventListener("pageshow", (e) => {
    if (e.persisted && liveWanted() && document.visibilityState !== "hidden") startLive();
  });

  /** Parses text/event-stream frames: field lines, a blank line ends a frame, ":" lines are keep-alives. */
  async function readSse(body, onFrame) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    let event = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let m;
      // A trailing "\r" may be half of "\r\n": leave it for the next chunk.
      while ((m = /\r\n|\r(?!$)|\n/.exec(buf))) {
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === "") {
          if (data.length) onFrame(event || "message", data.join("\n"));
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  }

  function onLiveEvent(event, text) {
    if (event !== "head") return;
    let hd;
    try { hd = JSON.parse(text); } catch { return; }
    const prev = S.head;
    S.head = hd;
    if (prev && prev.generation != null && hd.generation !== prev.generation) {
      // A restore started a new generation: everything on screen may be from another history.
      toast(`the store was restored (generation ${hd.generation}); showing it afresh`, "note");
      S.epoch = hd.epoch;
      if (!S.page?.dirty()) {
        loadServices().then(buildNav).catch(report).finally(() => route());
        return;
      }
    }
    const grew = typeof hd.epoch === "number" && (S.epoch == null || hd.epoch > S.epoch || pageBehind(hd.epoch));
    noteEpoch(hd.epoch);
    if (grew) refreshSoon("epoch");
    else if (prev && hd.seq > prev.seq && S.page?.onSeq) refreshSoon("seq");
  }

  /** Whether the page on screen shows an older epoch than `e`. */
  function pageBehind(e) {
    const el = $("#page-service");
    return !!el && Number(el.getAttribute("data-epoch")) < e;
  }

  // Coalesces bursts of head events: one refresh at a time, and one more if any came meanwhile.
  let refreshing = false;
  let wanted = null; // "epoch" (configuration changed) or "seq" (only audit events)
  async function refreshSoon(why) {
    wanted = wanted === "epoch" || why === "epoch" ? "epoch" : "seq";
    if (refreshing) return;
    refreshing = true;
    try {
      while (wanted) {
        const w = wanted;
        wanted = null;
        if (w === "epoch" && can("read") && (await loadServices())) buildNav(); // a new service?
        await S.page?.refresh?.();
      }
    } catch (e) {
      wanted = null;
      report(e);
    } finally {
      refreshing = false;
    }
  }

  // ───────────────────────────── keyboard ─────────────────────────────

  let focusSearchNext = false;

  function onKey(e) {
    const t = e.target;
    const typing = t instanceof Element && (t.closest("input,textarea,select,[contenteditable]") !== null);
    if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey && S.who && can("read")) {
      e.preventDefault();
      const input = $("#search-input");
      if (input) input.focus();
      else {
        focusSearchNext = true;
        location.hash = "#/search";
      }
    } else if (e.key === "Escape" && !document.querySelector("dialog[open]")) {
      $("#toast").hidden = true;
    }
  }

  // ───────────────────────────── start ─────────────────────────────

  function start() {
    $("#signin").addEventListener("submit", onSigninSubmit);
    $("#signout").addEventListener("click", () => signOut(""));
    $("#toast .toast-close").addEventListener("click", () => { $("#toast").hidden = true; });
    $("#reveal-ok").addEventListener("click", doReveal);
    $("#reveal-cancel").addEventListener("click", () => {
      pendingReveal = null;
      $("#reveal-confirm").close();
    });
    // No "close" listener clearing pendingReveal: Escape's close event can arrive after the
    // next askReveal. OK is only reachable through askReveal, which always sets it afresh.
    window.addEventListener("hashchange", () => route());
    document.addEventListener("keydown", onKey);
    S.token = sessionStorage.getItem(TOKEN_KEY);
    if (S.token) boot();
    else showSignin("");
  }

  start();
})();
