"""The Python client against a real `confstore serve` and a real Mosquitto: start-up over
REST, live updates (callbacks and the asyncio iterator), env overrides, the LKG file with
the store down, Pydantic validation, errors, and shutdown (close, collection, exit).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import confstore
from conftest import DEADLINE, Store, free_port, wait_for


def runtime_threads() -> list[str]:
    """The client runtime threads alive in this process (Linux names them in /proc)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue  # ended while listed
    return [n for n in names if n.startswith("confstore-clien")]


def test_starts_over_rest_and_reads_the_verified_configuration(store: Store, tmp_path: Path) -> None:
    with confstore.Client("web", lkg_path=tmp_path / "web.lkg.json", **store.client_settings()) as client:
        assert client.service == "web"
        assert client["port"] == 8080
        assert client.get("region") == "eu-west"
        assert client.get("missing") is None
        assert client.get("missing", 5) == 5
        with pytest.raises(KeyError, match="missing"):
            client["missing"]
        assert "port" in client and "missing" not in client
        snapshot = client.snapshot()
        assert snapshot == {"port": 8080, "region": "eu-west"}
        snapshot["port"] = 1
        assert client["port"] == 8080, "snapshot() is a copy"
        assert client.source("port") == "service"
        assert client.source("missing") is None
        assert client.epoch >= client.version > 0
        assert client.version <= client.epoch
        assert len(client.store_id) > 0 and client.generation >= 1
        assert client.stats()["applied"] >= 1
        assert (tmp_path / "web.lkg.json").is_file(), "the LKG file is written after start-up"
        assert "service=\"web\"" in repr(client)
    assert client.closed
    with pytest.raises(confstore.ClientClosed):
        client.get("port")
    client.close()  # idempotent
    assert runtime_threads() == [], "close() joined the client's thread"


def test_a_write_reaches_callbacks_in_order_and_a_failing_callback_is_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    client = confstore.Client("web", **store.client_settings())
    seen: list[confstore.Update] = []
    reads: list[Any] = []
    cond = threading.Condition()

    def broken(update: confstore.Update) -> None:
        raise RuntimeError("this callback is broken")

    def record(update: confstore.Update) -> None:
        with cond:
            seen.append(update)
            # The callback sees the client already on the new version.
            reads.append(client["port"])
            cond.notify_all()

    client.subscribe(broken)
    sub = client.subscribe(record)
    with caplog.at_level(logging.ERROR, logger="confstore"):
        first = store.put("web", "port", 9090)
        second = store.put("web", "debug", True)
        with cond:
            assert cond.wait_for(lambda: len(seen) >= 2, timeout=DEADLINE), f"updates seen: {seen}"
    a, b = seen[0], seen[1]
    assert (a.epoch, a.changed, a.old["port"], a.new["port"]) == (first, ("port",), 8080, 9090)
    assert a.version == first
    assert (b.epoch, b.changed, b.new["debug"], "debug" in b.old) == (second, ("debug",), True, False)
    assert reads[0] == 9090
    assert client["port"] == 9090 and client.epoch >= second
    failures = [r for r in caplog.records if r.name == "confstore" and "failed" in r.getMessage()]
    assert len(failures) >= 2, "each failure of the broken callback is logged"
    assert failures[0].exc_info is not None and "this callback is broken" in str(failures[0].exc_info[1])
    assert client.unsubscribe(sub) and not client.unsubscribe(sub)
    client.close()
    assert runtime_threads() == []


def test_async_iteration_yields_each_update_and_ends_at_close(store: Store) -> None:
    client = confstore.Client("web", **store.client_settings())

    async def main() -> list[confstore.Update]:
        got: list[confstore.Update] = []
        updates = client.updates()
        # Subscribed once updates() returned: the writes below cannot be missed.
        epochs = [await asyncio.to_thread(store.put, "web", "port", p) for p in (1001, 1002, 1003)]

        async def collect() -> None:
            async for update in updates:
                got.append(update)
                if len(got) == 3:
                    # close() ends the iteration: the loop leaves by itself.
                    await asyncio.to_thread(client.close)

        await asyncio.wait_for(collect(), DEADLINE)
        assert [u.epoch for u in got] == epochs
        return got

    got = asyncio.run(main())
    assert [u.new["port"] for u in got] == [1001, 1002, 1003]
    assert [u.old["port"] for u in got] == [8080, 1001, 1002]
    assert client.closed and runtime_threads() == []


def test_an_env_override_beats_the_store_and_survives_updates(store: Store) -> None:
    settings = store.client_settings()
    settings["environ"] = {"WEB__PORT": "7000", "WEB__EXTRA_FLAG": "true", "DB__PORT": "1"}
    with confstore.Client("web", **settings) as client:
        assert confstore.env_var_name("web", "port") == "WEB__PORT"
        assert client["port"] == 7000 and client.source("port") == "env"
        assert client["extra_flag"] is True and client.source("extra_flag") == "env"
        assert client.source("region") == "service"
        changed = threading.Event()
        client.subscribe(lambda u: changed.set() if "region" in u.changed else None)
        store.put("web", "port", 1)
        store.put("web", "region", "us-east")
        assert changed.wait(DEADLINE)
        assert client["port"] == 7000, "the override stays in force across versions"
        assert client["region"] == "us-east"


def test_from_env_reads_the_documented_variables(store: Store, tmp_path: Path) -> None:
    environ = {
        "CONFSTORE_SERVICE": "web",
        "CONFIG_SIGNATURE_PUBLIC_KEY": store.public_key,
        "CONFSTORE_URL": store.url,
        "CONFSTORE_TOKEN": store.token,
        "CONFSTORE_MQTT_URL": store.mqtt_url,
        "CONFSTORE_LKG_PATH": str(tmp_path / "env.lkg.json"),
        "WEB__REGION": "env-region",
    }
    with confstore.Client.from_env(environ) as client:
        assert client["port"] == 8080
        assert client["region"] == "env-region" and client.source("region") == "env"
    assert (tmp_path / "env.lkg.json").is_file()
    with pytest.raises(confstore.InvalidSetting, match="CONFSTORE_SERVICE") as e:
        confstore.Client.from_env({"CONFIG_SIGNATURE_PUBLIC_KEY": store.public_key})
    assert e.value.setting == "CONFSTORE_SERVICE"


def test_starts_from_the_lkg_file_with_the_store_down(
    store: Store, broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lkg = tmp_path / "web.lkg.json"
    settings = store.client_settings()
    with confstore.Client("web", lkg_path=lkg, **settings) as client:
        epoch, values = client.epoch, client.snapshot()
    store.stop()
    broker.stop()
    # Nothing listens on either port now: REST and MQTT fail, the verified LKG file remains.
    with caplog.at_level(logging.WARNING, logger="confstore"):
        with confstore.Client("web", lkg_path=lkg, startup_timeout=0.5, **settings) as client:
            assert client.snapshot() == values and client.epoch == epoch
    # The Rust client's warning reaches Python's logging.
    warnings = [r.getMessage() for r in caplog.records if r.name == "confstore" and r.levelno == logging.WARNING]
    assert any("starting from the lkg file" in w for w in warnings), warnings
    # Without the file there is nothing verified: the error lists every source.
    with pytest.raises(confstore.NoVerifiedConfig) as e:
        confstore.Client("web", lkg_path=tmp_path / "none.json", startup_timeout=0.5, **settings)
    assert [source for source, _ in e.value.reasons] == ["rest", "mqtt", "lkg"]
    assert "does not exist" in str(e.value)
    # A tampered file, the only source, is an error naming it.
    data = json.loads(lkg.read_text())
    signature = data["jws"]["signature"]
    data["jws"]["signature"] = ("B" if signature[0] == "A" else "A") + signature[1:]
    lkg.write_text(json.dumps(data))
    with pytest.raises(confstore.LkgError) as lkg_error:
        confstore.Client("web", public_keys=[store.public_key], lkg_path=lkg, environ={})
    assert lkg_error.value.path == str(lkg)


def test_model_validates_with_pydantic_and_names_the_keys_that_do_not_fit(store: Store) -> None:
    # Required, not skipped: the test environment (ops/test.sh) installs it.
    import pydantic

    class Web(pydantic.BaseModel):
        port: int
        region: str
        timeout_ms: int = 500

    class Strict(pydantic.BaseModel):
        port: int
        region: int
        replicas: int

    with confstore.Client("web", **store.client_settings()) as client:
        web = client.model(Web)
        assert (web.port, web.region, web.timeout_ms) == (8080, "eu-west", 500)
        with pytest.raises(confstore.ConfigValidationError) as e:
            client.model(Strict)
        assert e.value.keys == ("region", "replicas")
        assert "region" in str(e.value) and "replicas" in str(e.value) and "Strict" in str(e.value)
        assert isinstance(e.value, ValueError) and isinstance(e.value, confstore.ConfstoreError)
        with pytest.raises(TypeError, match="not a Pydantic v2 model"):
            client.model(dict)


def test_bad_settings_are_named() -> None:
    with pytest.raises(confstore.InvalidSetting) as e:
        confstore.Client("web", public_keys=["not base64!"], url="http://127.0.0.1:1", environ={})
    assert e.value.setting == "public_key"
    with pytest.raises(confstore.InvalidSetting) as e:
        confstore.Client("web", public_keys=[], url="http://127.0.0.1:1", environ={})
    assert e.value.setting == "public_key"
    with pytest.raises(confstore.InvalidSetting) as e:
        confstore.Client("web", public_keys="AAAA", startup_timeout=-1.0, environ={})
    assert e.value.setting == "startup_timeout"
    assert runtime_threads() == [], "a failed start leaves no thread behind"


def test_a_collected_client_stops_its_thread(store: Store) -> None:
    client = confstore.Client("web", **store.client_settings())
    client.subscribe(lambda u: None)
    assert len(runtime_threads()) == 1
    del client
    gc.collect()
    assert runtime_threads() == []


def test_a_client_in_a_reference_cycle_is_collected(store: Store) -> None:
    """A service object that holds its client and subscribes its own method: the cycle runs
    through the Rust side, which shows the collector its callbacks."""

    class Service:
        def __init__(self) -> None:
            self.client = confstore.Client("web", **store.client_settings())
            self.client.subscribe(self.on_update)

        def on_update(self, update: confstore.Update) -> None:
            pass

    service = Service()
    assert len(runtime_threads()) == 1
    del service
    gc.collect()
    assert runtime_threads() == [], "the collected client was closed and its thread joined"


def test_the_interpreter_exits_promptly_without_close(store: Store, tmp_path: Path) -> None:
    """A service that never calls close(): the atexit hook shuts the client down, with a
    callback subscribed and an update arriving, and the process ends with status 0."""
    script = textwrap.dedent(
        f"""
        import threading, urllib.request, json, confstore
        client = confstore.Client(
            "web", public_keys=[{store.public_key!r}], url={store.url!r}, token={store.token!r},
            mqtt_url={store.mqtt_url!r}, mqtt_client_id="pytest-exit-{free_port()}", environ={{}},
        )
        got = threading.Event()
        client.subscribe(lambda u: got.set())
        req = urllib.request.Request(
            {store.url!r} + "/api/v1/services/web/values/port", method="PUT",
            data=json.dumps({{"value": 4242}}).encode(),
            headers={{"Authorization": "Bearer " + {store.token!r}, "Content-Type": "application/json"}},
        )
        urllib.request.urlopen(req).read()
        assert got.wait(30), "no update"
        assert client["port"] == 4242
        print("started", flush=True)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "started"
    # Exit includes the clean MQTT disconnect; far below the deadline.
    assert time.monotonic() - started < DEADLINE


def test_ctrl_c_interrupts_a_slow_start(tmp_path: Path) -> None:
    """Waiting for the retained message of a broker that never answers (a socket that
    accepts and stays silent), the constructor still honours Ctrl-C at once."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        silent.settimeout(DEADLINE)
        # Ed25519's base point: a valid public key (nothing will be verified with it).
        key = base64.b64encode(bytes([0x58]) + bytes([0x66]) * 31).decode()
        script = textwrap.dedent(
            f"""
            import confstore
            confstore.Client(
                "web", public_keys=["{key}"], mqtt_url="mqtt://127.0.0.1:{port}",
                startup_timeout=600, environ={{}},
            )
            """
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        # The client has connected to the "broker": the constructor is waiting for it.
        connection, _ = silent.accept()
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=DEADLINE)
        assert "KeyboardInterrupt" in stderr and "panicked" not in stderr, stderr
        assert process.returncode != 0
        # Checked every 100 ms; far below the 600 s start-up timeout.
        assert time.monotonic() - sent < 10
        connection.close()
