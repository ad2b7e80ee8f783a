"""The Python client's share of the stream benchmark (crates/confstore-bench/src/bin/stream.rs
runs this against the server and broker it measured the Rust client on, in the same run;
docs/benchmarks.md "Live stream").

1. Write -> callback: one ``PUT /api/v1/services/<service>/values/<key>`` in flight at a
   time (http.client, one keep-alive connection); the time from the request being sent, and
   from its answer, until a ``subscribe`` callback of ``confstore.Client`` runs with the
   epoch the answer named (verified and applied by the Rust client underneath, then handed
   to Python with the GIL taken).
2. ``client.get(key)``: each call timed alone with ``time.perf_counter_ns`` (its own cost,
   ~50-100 ns, is included).

Prints one JSON object: ``{"python": version, "ack_to_callback_ms": LAT,
"put_to_callback_ms": LAT, "callback_before_ack": n, "get_ns": LAT}`` with
``LAT = {"p50", "p90", "p99", "max", "samples"}``, percentiles by nearest rank as the Rust
side computes them. Exit status 2 with a message on stderr if an update never arrives.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import confstore

ARRIVAL_DEADLINE_S = 10.0


def lat(values: list[float]) -> dict[str, Any]:
    """Nearest-rank percentiles (rank = ceil(q * n)), as crates/confstore-bench's `percentile`."""
    v = sorted(values)
    if not v:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan, "samples": 0}

    def pick(q: float) -> float:
        return v[min(max(math.ceil(q * len(v)), 1), len(v)) - 1]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": v[-1], "samples": len(v)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--mqtt-url", required=True)
    p.add_argument("--public-key", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--updates", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--gets", type=int, required=True)
    a = p.parse_args()

    arrived = threading.Condition()
    latest = {"epoch": 0, "at": 0}

    def on_update(update: confstore.Update) -> None:
        at = time.perf_counter_ns()
        with arrived:
            latest["epoch"], latest["at"] = update.epoch, at
            arrived.notify_all()

    client = confstore.Client(
        a.service,
        public_keys=[a.public_key],
        url=a.url,
        token=a.token,
        mqtt_url=a.mqtt_url,
        mqtt_client_id="bench-python-client",
        environ={},
    )
    try:
        client.subscribe(on_update)
        target = urlsplit(a.url)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 80, timeout=30)
        headers = {"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"}
        path = f"/api/v1/services/{a.service}/values/{a.key}"
        put_ms: list[float] = []
        ack_ms: list[float] = []
        before_ack = 0
        for i in range(a.warmup + a.updates):
            body = json.dumps({"value": i})
            t0 = time.perf_counter_ns()
            conn.request("PUT", path, body, headers)
            answer = conn.getresponse()
            data = answer.read()
            acked = time.perf_counter_ns()
            if answer.status != 200:
                print(f"PUT {path}: {answer.status} {data[:300]!r}", file=sys.stderr)
                return 2
            epoch = json.loads(data)["epoch"]
            with arrived:
                if not arrived.wait_for(lambda: latest["epoch"] >= epoch, timeout=ARRIVAL_DEADLINE_S):
                    print(f"epoch {epoch} never reached the Python callback", file=sys.stderr)
                    return 2
                at = latest["at"]
            if i >= a.warmup:
                before_ack += at < acked
                ack_ms.append(max(at - acked, 0) / 1e6)
                put_ms.append((at - t0) / 1e6)
        conn.close()

        get, clock, key = client.get, time.perf_counter_ns, a.key
        gets = [0.0] * a.gets
        for i in range(a.gets):
            t = clock()
            get(key)
            gets[i] = clock() - t
    finally:
        client.close()
    print(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "ack_to_callback_ms": lat(ack_ms),
                "put_to_callback_ms": lat(put_ms),
                "callback_before_ack": before_ack,
                "get_ns": lat(gets),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
