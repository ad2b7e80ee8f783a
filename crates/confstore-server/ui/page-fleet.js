// The fleet page: which instance runs which version (GET /api/v1/fleet, docs/format.md §20).
// #/fleet counts each service's instances by state; #/fleet/<service> lists its instances.
// Reports change without a new epoch, so the page also asks again every few seconds.

import { api } from "./api.js";
import { $, h, tableOf } from "./dom.js";
import { pageReady } from "./shell.js";
import { S } from "./state.js";
import { fmtTime } from "./values.js";

const POLL_MS = 5000;

const num = (n) => (n == null ? "–" : String(n));

function servicesTable(data) {
  const { table, tbody, wrap } = tableOf("fleet-services", ["Service", "Version", "Instances", "Current", "Behind", "Unhealthy", "Offline", "Oldest version"]);
  table.setAttribute("aria-label", "instances of each service by state");
  for (const s of data.services || []) {
    tbody.append(h("tr", { "data-service": s.service },
      h("td", null, h("a", { href: `#/fleet/${encodeURIComponent(s.service)}` }, s.service)),
      h("td", null, num(s.version)),
      h("td", null, num(s.instances)),
      h("td", { class: "f-current" }, num(s.current)),
      h("td", { class: "f-behind" }, num(s.behind)),
      h("td", { class: "f-unhealthy" }, num(s.unhealthy)),
      h("td", { class: "f-offline" }, num(s.offline)),
      h("td", null, num(s.oldest_version))));
  }
  return wrap;
}

function instancesTable(data) {
  const { table, tbody, wrap } = tableOf("fleet-instances", ["Instance", "State", "Version", "Behind by", "Source", "Healthy", "Rollout", "Last seen", "Env overrides"]);
  table.setAttribute("aria-label", `instances of ${data.service}`);
  for (const i of data.instances || []) {
    const healthy = i.healthy == null ? "–" : i.healthy ? "yes" : "no";
    tbody.append(h("tr", { "data-instance": i.instance, "data-state": i.state },
      h("td", null, h("code", null, i.instance)),
      h("td", null, h("span", { class: `badge state-${i.state}` }, i.state)),
      h("td", null, num(i.version)),
      h("td", null, i.lag_epochs ? `${i.lag_epochs} epochs` : "–"),
      h("td", null, i.source ?? "–"),
      h("td", null, healthy),
      h("td", { class: "f-rollout" }, i.rollout == null ? "–" : `staged #${i.rollout}`),
      h("td", null, fmtTime(i.last_seen_ms)),
      h("td", null, (i.env_overrides || []).join(", ") || "–")));
  }
  return wrap;
}

// The service's active staged rollout (docs/format.md §21), in one line; none: null.
function rolloutLine(r) {
  const a = r && r.active;
  if (!a) return null;
  const who = a.cohort.percent != null ? `${a.cohort.percent} % of the instances` : `instances ${a.cohort.instances.join(", ")}`;
  const applied = (a.members || []).filter((m) => m.applied).length;
  const how = a.auto ? "decided automatically" : "decided by hand";
  return h("p", { class: "meta", id: "fleet-rollout" },
    `Staged rollout #${a.rollout} for ${who}: ${applied} of ${(a.members || []).length} applied; bake time ends ${fmtTime(a.bake_ends_ms)}, ${how}.`);
}

/** Renders #/fleet (every service) or #/fleet/<service> (route generation `gen`). */
export async function pageFleet(service, gen) {
  const path = service ? `/api/v1/fleet/${encodeURIComponent(service)}` : "/api/v1/fleet";
  const draw = (data) => {
    const empty = service ? !(data.instances || []).length : !(data.services || []).length;
    const body = empty
      ? h("p", { class: "meta", id: "fleet-empty" }, "No instance has reported yet (clients with a broker report unless CONFSTORE_REPORT_STATUS=0).")
      : service ? instancesTable(data) : servicesTable(data);
    const title = service ? `Fleet: ${service}` : "Fleet";
    const sub = service
      ? h("p", { class: "meta" }, `current version ${num(data.version)} · `, h("a", { href: "#/fleet" }, "all services"))
      : h("p", { class: "meta" }, "Which instance runs which version, as each reports it.");
    return h("section", { id: "page-fleet", class: "page", "data-service": service || "" },
      h("div", { class: "page-head" }, h("h1", null, title)), sub, rolloutLine(data.rollout), body);
  };
  // A service's page also shows its active rollout (an unregistered service has none).
  const load = async () => {
    const data = await api(path);
    if (service) data.rollout = await api(`/api/v1/services/${encodeURIComponent(service)}/rollout`).catch(() => null);
    return data;
  };
  const data = await load();
  if (gen !== S.gen) return;
  $("#main").replaceChildren(draw(data));
  let seq = 0;
  const refresh = async () => {
    const mine = ++seq;
    const fresh = await load();
    if (mine === seq && S.page?.name === "fleet" && S.gen === gen) $("#main").replaceChildren(draw(fresh));
  };
  S.page = { name: "fleet", dirty: () => false, refresh };
  const timer = setInterval(() => {
    if (S.page?.name !== "fleet" || S.gen !== gen) clearInterval(timer);
    else refresh().catch(() => {});
  }, POLL_MS);
  pageReady("fleet");
}
