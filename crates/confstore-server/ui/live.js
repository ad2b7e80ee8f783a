// Live updates: the server-sent events of /api/v1/live, read with fetch (EventSource cannot
// send the Authorization header); each new head refreshes the page on screen.

import { api } from "./api.js";
import { $, report, toast } from "./dom.js";
import { route } from "./router.js";
import { buildNav, loadServices, setReadOnly, signOut } from "./shell.js";
import { S, can, noteEpoch } from "./state.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// EventSource cannot send the Authorization header, so the stream is read with fetch.
let liveCtl = null;
let liveRun = 0;

function setLive(on) {
  const el = $("#live-status");
  el.textContent = on ? "live" : "offline";
  el.classList.toggle("live", on);
  el.classList.toggle("offline", !on);
}

/** Closes the live stream (and any reconnection loop), and says "offline". */
export function stopLive() {
  liveRun++;
  liveCtl?.abort();
  liveCtl = null;
  setLive(false);
}

/** Opens the live stream and keeps it open, reconnecting with a growing delay (1 s to 10 s). */
export async function startLive() {
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
/** Refreshes the page on screen (and the services, after a new epoch), coalescing bursts. */
export async function refreshSoon(why) {
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
