#!/bin/bash
# What one sequential PUT costs `confstore serve`, stream on or off (issue 15; results and
# how to read them: docs/benchmarks.md, "Where a write's CPU goes").
#
#   crates/confstore-bench/wrk/profile-write.sh on|off [perf|callgraph]
#
# Starts `serve` on a fresh data directory (stream on: the embedded broker, one
# mosquitto_sub subscribed to the written service at QoS 1; off: --no-mqtt), makes a
# service of 20 keys, then overwrites those keys for 10 s with wrk -c1 -t1 and
# confstore-put.lua (300-byte values). Prints the server's CPU and context switches per
# write, from /proc, for the process and for each of its threads. With `perf` or
# `callgraph` it also records the process with perf (999 Hz; or 499 Hz with DWARF call
# graphs) into $OUT/<mode>.data.
#
# Needs: a release build (B, default target/release/confstore), wrk, curl, jq, python3,
# mosquitto_sub (stream on), perf (optional). Environment: B, OUT (default a new temp
# directory), SECS (default 10), HTTP_PORT (18090), MQTT_PORT (18893).
set -euo pipefail
mode=${1:?usage: profile-write.sh on|off [perf|callgraph]}
record=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
B=${B:-$repo/target/release/confstore}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
SECS=${SECS:-10}
HTTP_PORT=${HTTP_PORT:-18090}
MQTT_PORT=${MQTT_PORT:-18893}
cd "$OUT"
rm -rf d .env
"$B" --data-dir "$OUT/d" init >/dev/null 2>&1
set -a && . ./.env && set +a
TOKEN=$("$B" --data-dir "$OUT/d" token create --role admin --name bench --json | jq -r .token)
if [ "$mode" = on ]; then stream=(--mqtt-listen "127.0.0.1:$MQTT_PORT"); else stream=(--no-mqtt); fi
"$B" --data-dir "$OUT/d" serve --listen "127.0.0.1:$HTTP_PORT" "${stream[@]}" >serve.log 2>&1 &
SP=$!
pids=("$SP")
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
H="Authorization: Bearer $TOKEN"
url="http://127.0.0.1:$HTTP_PORT/api/v1/services"
curl -sf -X POST -H "$H" -H 'content-type: application/json' -d '{"name":"bench"}' "$url" >/dev/null
python3 -c 'import json; print(json.dumps({"set": {"k%05d" % i: "x" * 300 for i in range(20)}}))' |
  curl -sf -X PATCH -H "$H" -H 'content-type: application/json' --data-binary @- "$url/bench/values" >/dev/null
if [ "$mode" = on ]; then
  mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u bench -P "$TOKEN" -t system/config/bench -q 1 >sub.out &
  pids+=($!)
  # Subscribed once the retained snapshot arrived.
  for _ in $(seq 100); do [ -s sub.out ] && break; sleep 0.1; done
  [ -s sub.out ] || { echo "the subscriber got no retained snapshot" >&2; exit 1; }
fi
{ echo "local P = {service='bench', token='$TOKEN', value_bytes=300, keys=20, threads=1}"; cat "$here/confstore-put.lua"; } >put.lua
threads() {
  for t in /proc/"$SP"/task/*; do
    echo "$(basename "$t") $(awk '/ctxt_switches/{s+=$2} END{print s}' "$t/status") $(awk '{print $14+$15}' "$t/stat")"
  done
}
case "$record" in
  perf) perf record -F 999 -p "$SP" -o "$mode.data" -- sleep $((SECS + 2)) >/dev/null 2>&1 & ;;
  callgraph) perf record -F 499 --call-graph dwarf,16384 -p "$SP" -o "$mode.data" -- sleep $((SECS + 2)) >/dev/null 2>&1 & ;;
  "") true & ;;
  *) echo "unknown recording $record" >&2; exit 2 ;;
esac
PP=$!
threads >threads.before
wrk -c1 -t1 -d"${SECS}s" -s put.lua "http://127.0.0.1:$HTTP_PORT" >"wrk.$mode.txt"
threads >threads.after
wait "$PP" || true
python3 - "$mode" "wrk.$mode.txt" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
mode, wrk, tck = sys.argv[1], open(sys.argv[2]).read(), int(sys.argv[3])
req = int(re.search(r"^\s+(\d+) requests", wrk, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
if bad:
    sys.exit(f"{bad.group(1)} requests failed; see {sys.argv[2]}")
rate = re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1)
before = {l.split()[0]: l.split() for l in open("threads.before")}
rows, cs, cpu = [], 0, 0
for line in open("threads.after"):
    tid, c, t = line.split()
    _, c0, t0 = before.get(tid, [tid, "0", "0"])
    dc, dt = int(c) - int(c0), (int(t) - int(t0)) * 1e6 / tck
    cs, cpu = cs + dc, cpu + dt
    if dc / req >= 0.01 or dt / req >= 0.5:
        rows.append(f"  thread {tid}: {dt / req:6.1f} us, {dc / req:4.2f} switches per write")
print(f"stream {mode}: {req} writes, {rate}/s; server CPU {cpu / req:.1f} us and {cs / req:.2f} context switches per write")
print("\n".join(rows))
EOF
