// The history page: the timeline of changesets, a diff between epochs, rollback with preview.

import { api } from "./api.js";
import { $, epochInput, epochOf, h, report, tableOf } from "./dom.js";
import { pageReady } from "./shell.js";
import { S, canEdit, noteEpoch } from "./state.js";
import { MASK, changesOf, enc, fmt, fmtTime, isMasked } from "./values.js";

/** Renders the history page, of service `arg` or of every service. */
export async function pageHistory(arg, gen) {
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
  if (t === "rollout_started") {
    const who = ch.cohort?.percent != null ? `${ch.cohort.percent} % of the instances` : `instances ${(ch.cohort?.instances || []).join(", ")}`;
    const staged = (ch.changes || []).map((c) => c.op === "set" ? `${c.key} = ${fmt(c.value)}` : c.op === "unset" ? `${c.key} unset` : `${c.key} = ${MASK} (secret)`);
    return h("span", null, "staged rollout of ", h("code", null, ch.service), ` for ${who}: ${staged.join("; ")}`);
  }
  if (t === "rollout_promoted" || t === "rollout_aborted") {
    const how = ch.automatic ? " automatically" : "";
    return h("span", null, `rollout #${ch.rollout_seq} of `, h("code", null, ch.service), ` ${t === "rollout_promoted" ? "promoted" : "aborted"}${how}`);
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
