// Element helpers: h() builds elements (text only, never markup), tables, epoch inputs,
// and the toast that shows messages and errors.

/** The first element matching `sel` under `root`. */
export const $ = (sel, root = document) => root.querySelector(sel);

/** h("tag", {attr: value, class, text, on<event>: fn}, ...children): an element. */
export function h(tag, props, ...kids) {
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

/** A data table with a header row: {table, tbody, wrap (its scrolling box)}. */
export function tableOf(id, headers, cls = "data") {
  const tbody = h("tbody");
  const table = h("table", { id, class: cls }, h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col" }, t)))), tbody);
  return { table, tbody, wrap: h("div", { class: "table-wrap" }, table) };
}

/** A labelled input for an epoch: {input, el}. */
export function epochInput(id, label, value) {
  const input = h("input", { id, type: "number", min: "0", step: "1", inputmode: "numeric", value: value ?? null });
  return { input, el: h("div", { class: "control" }, h("label", { for: id }, label), input) };
}

/** A whole, non-negative number typed into an input, or null. */
export function epochOf(input) {
  const t = input.value.trim();
  return /^\d+$/.test(t) ? Number(t) : null;
}

// Toast: errors stay until dismissed or replaced (never swallowed); notes fade.
let toastTimer = 0;
/** Shows `message`: an error stays until dismissed or replaced, a note (`kind` "note") fades. */
export function toast(message, kind = "error") {
  const el = $("#toast");
  $(".toast-text", el).textContent = message;
  el.className = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  if (kind !== "error") toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}
/** Shows an error as a toast, unless it was an abort or already handled (a 401 signs out). */
export function report(err) {
  if (!err || err.name === "AbortError" || err.handled) return;
  toast(err.message || String(err));
}
