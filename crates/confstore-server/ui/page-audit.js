// The audit page: reveals, denials and token events, filtered; "verify now".

import { api } from "./api.js";
import { $, h, report, tableOf } from "./dom.js";
import { pageReady } from "./shell.js";
import { S } from "./state.js";
import { flat, fmtTime } from "./values.js";

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

/** Renders the audit page (route generation `gen`: a newer route drops this one). */
export async function pageAudit(gen) {
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
