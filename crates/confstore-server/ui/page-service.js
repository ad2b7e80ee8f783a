// The service page (and the global settings): keys with value, type, source and epoch;
// the editor on Edit; secrets masked until the audited reveal.

import { ApiError, api } from "./api.js";
import { $, h, report, tableOf } from "./dom.js";
import { Editor } from "./editor.js";
import { refreshSoon } from "./live.js";
import { pageReady, takePrefetched } from "./shell.js";
import { S, can, canEdit, noteEpoch } from "./state.js";
import { enc, fmt, isMasked, jsonType, plain } from "./values.js";

/** Renders the page of service `name` (or of `global`). */
export async function pageService(name, gen) {
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

/** The reveal dialog's Cancel: nothing is revealed. */
export function cancelReveal() {
  pendingReveal = null;
  $("#reveal-confirm").close();
}

/** The reveal dialog's OK: asks the server (which records the reveal) and shows the value in its row. */
export async function doReveal() {
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
