// The search page: results as you type, by service and "changed since epoch".

import { api } from "./api.js";
import { $, epochInput, epochOf, h, report, tableOf } from "./dom.js";
import { pageReady } from "./shell.js";
import { S, serviceHref } from "./state.js";
import { enc, fmt } from "./values.js";

let searchCtl = null;

/** Renders the search page, with the last query of this session. */
export async function pageSearch(gen) {
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
  if (S.focusSearch) {
    S.focusSearch = false;
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
