// The editor of a service: a form generated from its JSON Schema (fields.js), checked as
// you type (validate.js), saved with If-Match, with conflict handling.

import { api } from "./api.js";
import { h, report, toast } from "./dom.js";
import { KEY_RE, buildField, nameLabel, secretField, setError } from "./fields.js";
import { S, noteEpoch } from "./state.js";
import { defaultFor, freeKeysAllowed, keySchema } from "./validate.js";
import { canon, changesOf, enc, fmtTime, isMasked, isObj, jsonType } from "./values.js";

/** The edit form of one service at one epoch: its rows, the reason, Save and the conflict box. */
export class Editor {
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
