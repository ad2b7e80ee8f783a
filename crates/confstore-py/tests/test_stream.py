"""The Python client on the live stream, attacked: start-up from the retained MQTT message
alone, and the attack corpus of docs/testing.md row 13 (tests/tests/stream_attacks.rs) sent
through a real Mosquitto by an outsider (mosquitto_pub, anonymous): a replayed older
version, a redelivered copy of the version held, another service's genuine snapshot on
this service's topic, a forged next version (payload edited under a genuine signature), a
genuine snapshot of another store signed by its own key, and non-JWS garbage (counted as
`signature`: not a JWS signed by a trusted key). Every one is
rejected and counted by kind, none reaches a callback or changes what the client holds —
the Rust client's rules, seen from Python — and a real write still arrives afterwards.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any, Optional

import confstore
from conftest import DEADLINE, Broker, Store, clean_env, wait_for


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rejected(client: confstore.Client) -> dict[str, int]:
    return dict(client.stats()["rejected"])


def test_starts_from_the_retained_message_without_rest(store: Store, broker: Broker) -> None:
    settings = store.client_settings()
    del settings["url"], settings["token"]
    with confstore.Client("web", **settings) as client:
        # The retained snapshot may be one version behind for one coalescing window
        # (docs/format.md §17.2); the newer one follows on the stream.
        wait_for("the retained snapshot's values", lambda: client.get("region") == "eu-west")
        assert client["port"] == 8080 and client.source("port") == "service"
        assert client.stats()["applied"] >= 1
        # Without REST there is no stored schema to compare a model with: a clear error.
        try:
            client.stored_schema()
        except confstore.ConfstoreError as e:
            assert "schema" in str(e)


def test_forged_replayed_and_cross_topic_messages_are_rejected(store: Store, broker: Broker, tmp_path: Path) -> None:
    first = store.put("web", "timeout_ms", 100)
    store.create_service("db")
    store.put("db", "host", "db.internal")
    held_epoch = store.put("web", "timeout_ms", 200)

    def retained_version() -> Optional[int]:
        message = broker.retained("system/config/web")
        if message is None:
            return None
        return int(json.loads(b64url_decode(json.loads(message)["payload"]))["changed_epoch"])

    # The retained snapshot follows the last write within one coalescing window (docs/format.md
    # §17.2): once it is there, nothing more for `web` is on its way.
    wait_for("the retained snapshot of the last write", lambda: retained_version() == held_epoch)
    client = confstore.Client("web", **store.client_settings())
    seen: list[confstore.Update] = []
    lock = threading.Lock()

    def record(update: confstore.Update) -> None:
        with lock:
            seen.append(update)

    client.subscribe(record)
    try:
        assert client.version == held_epoch
        # Copies of the version held reach a new client after start-up (the retained
        # message, the snapshot that follows the last delta, a catch-up): each a duplicate,
        # and how many depends on timing. Duplicates are therefore counted as "at least";
        # every other kind exactly.
        wait_for("the start-up copies to settle", lambda: client.stats()["catch_ups"] == 1)
        before = rejected(client)
        assert set(before) <= {"duplicate"}, before

        def counted(expected: dict[str, int]) -> bool:
            now = rejected(client)
            return all(
                now.get(k, 0) >= n if k == "duplicate" else now.get(k, 0) == n for k, n in expected.items()
            ) and set(now) <= set(expected) | {"duplicate"}

        genuine = json.loads(store.snapshot_jws("web"))
        payload = json.loads(b64url_decode(genuine["payload"]))
        assert payload["changed_epoch"] == held_epoch
        # A forged next version: the payload edited, the genuine signature kept.
        forged_payload = dict(payload, changed_epoch=held_epoch + 1, prev_epoch=held_epoch, epoch=held_epoch + 1)
        forged_payload["config"] = dict(payload["config"], port=1)
        forged = dict(genuine, payload=b64url_encode(json.dumps(forged_payload, separators=(",", ":")).encode()))

        other = Store(tmp_path / "other-store", broker.url)
        other.run("service", "add", "web")
        other.run("set", "web", "port", "1")
        foreign = other.run("snapshot", "web", "--jws").strip().encode()

        attacks: list[tuple[str, bytes, str]] = [
            ("an older version replayed", store.snapshot_jws("web", epoch=first), "stale"),
            ("the version held, again", store.snapshot_jws("web"), "duplicate"),
            ("service db's genuine snapshot on web's topic", store.snapshot_jws("db"), "wrong_service"),
            ("a forged next version", json.dumps(forged).encode(), "signature"),
            ("another store's snapshot, signed by its key", foreign, "signature"),
            ("not a JWS at all", b"{\"port\": 1}", "signature"),
        ]
        expected = {"duplicate": before.get("duplicate", 0), **before}
        for what, message, kind in attacks:
            broker.publish("system/config/web", message)
            expected[kind] = expected.get(kind, 0) + 1
            wait_for(f"{what} to be rejected as {kind} ({expected})", lambda: counted(expected))

        assert client.version == held_epoch and client["port"] == 8080 and client["timeout_ms"] == 200
        with lock:
            assert seen == [], "no rejected message reached a callback"

        # A planted retained message is no better: a new client rejects it too (REST first,
        # then the plant arrives as the retained message).
        broker.publish("system/config/web", json.dumps(forged).encode(), retain=True)
        with confstore.Client("web", **store.client_settings()) as fresh:
            wait_for("the planted retained message to be rejected", lambda: rejected(fresh).get("signature") == 1)
            assert fresh["port"] == 8080

        # The genuine stream still works.
        after = store.put("web", "port", 8081)
        # (The new version is readable a moment before the callbacks run: wait for them.)
        def updates() -> list[int]:
            with lock:
                return [u.epoch for u in seen]

        wait_for("a real write after the attacks", lambda: updates() == [after])
        assert client.get("port") == 8081
        assert client.stats()["applied"] >= 2
    finally:
        client.close()


def test_a_model_is_compared_with_the_stored_schema(store: Store, caplog: Any) -> None:
    import logging

    import pydantic

    schema = {
        "type": "object",
        "properties": {
            "port": {"type": "integer"},
            "region": {"type": "string"},
            "replicas": {"type": "integer", "default": 1},
        },
        "required": ["port"],
    }

    class Exact(pydantic.BaseModel):
        port: int
        region: str = "eu-west"
        replicas: int = 1

    class Drifted(pydantic.BaseModel):
        port: str
        region: str
        timeout_ms: int = 500

    with confstore.Client("web", **store.client_settings()) as client:
        assert client.schema_hash is None and client.stored_schema() is None
        none = client.schema_drift(Exact)
        assert none.ok and not none.store_schema and "no schema" in str(none)

        store.request("PUT", "/api/v1/services/web/schema", schema)
        wait_for("the version with the schema", lambda: client.schema_hash)
        assert client.stored_schema() == schema

        exact = client.schema_drift(Exact)
        assert exact.ok and exact.store_schema and exact.schema_hash == client.schema_hash, exact

        drift = client.schema_drift(Drifted)
        assert not drift.ok
        assert drift.only_in_model == ("timeout_ms",)
        assert drift.only_in_store == ("replicas",)
        assert drift.type_mismatch == (("port", ("integer",), ("string",)),)
        assert drift.required_mismatch == ("region",)
        assert len(drift.differences()) == 4 and "Drifted" in str(drift)

        # model(): a warning once per model and schema version by default, an error on
        # request, nothing with "ignore" (validation itself is unchanged).
        with caplog.at_level(logging.WARNING, logger="confstore"):
            client.model(Exact)
            try:
                client.model(Drifted)
            except confstore.ConfigValidationError as e:
                assert e.keys == ("port",)  # 8080 is not a str: validation still runs
            warned = [r.getMessage() for r in caplog.records if r.name == "confstore"]
        assert len(warned) == 1 and "Drifted has drifted" in warned[0] and "timeout_ms" in warned[0]
        try:
            client.model(Drifted, drift="raise")
            raise AssertionError("model(drift='raise') accepted a drifted model")
        except confstore.SchemaDriftError as e:
            assert e.drift == drift and isinstance(e, confstore.ConfstoreError)
        assert client.model(Exact, drift="raise").port == 8080


def test_an_instance_reports_its_status_to_the_fleet_view(store: Store) -> None:
    def instance(state: str) -> Optional[dict[str, Any]]:
        for i in store.request("GET", "/api/v1/fleet/web")["instances"]:
            if i["instance"] == "py-1" and i["state"] == state:
                return dict(i)
        return None

    settings = dict(store.client_settings(), report_status=True, instance_id="py-1")
    settings["environ"] = {"WEB__REGION": "us-east"}
    client = confstore.Client("web", **settings)
    assert client.instance_id == "py-1"
    shown = wait_for("the instance in the fleet view", lambda: instance("current"))
    assert shown["version"] == client.version and shown["env_overrides"] == ["region"], shown
    assert "us-east" not in json.dumps(shown), "names only, never values"
    client.set_healthy(False)
    wait_for("the instance unhealthy", lambda: instance("unhealthy"))
    client.close()
    wait_for("the instance offline after close()", lambda: instance("offline"))
    # Reports are on by default with a broker; report_status=False turns them off.
    with confstore.Client("web", **dict(store.client_settings(), instance_id="py-2")) as default:
        assert default.instance_id == "py-2"
        wait_for("a default client in the fleet view", lambda: any(
            i["instance"] == "py-2" for i in store.request("GET", "/api/v1/fleet/web")["instances"]))
    with confstore.Client("web", **dict(store.client_settings(), report_status=False)) as silent:
        assert silent.instance_id is None, "no reports when turned off"


def test_a_cohort_instance_runs_the_staged_version_until_the_rollout_ends(store: Store) -> None:
    """docs/format.md §21 through Python: the Rust client's acceptance rule, nothing re-implemented."""
    store.put("web", "timeout_ms", 100)
    canary = confstore.Client("web", **dict(store.client_settings(), instance_id="py-canary"))
    other = confstore.Client("web", **dict(store.client_settings(), instance_id="py-other"))
    seen: list[Any] = []
    canary.subscribe(lambda update: seen.append(update.new.get("timeout_ms")))
    try:
        start = {"set": {"timeout_ms": 250}, "cohort": {"instances": ["py-canary"]}, "bake_seconds": 3600, "auto": False}
        rollout = int(store.request("POST", "/api/v1/services/web/rollout", start)["first_seq"])
        wait_for("the canary on the staged version", lambda: canary.get("timeout_ms") == 250)
        assert canary.rollout == rollout and other.rollout is None
        assert other.get("timeout_ms") == 100, "not in the cohort"
        assert canary.version == other.version, "a staged configuration keeps the base version"
        wait_for("the callback saw it", lambda: 250 in seen)
        store.request("POST", "/api/v1/services/web/rollout/abort", {"reason": "python test"})
        wait_for("the canary back on the current version", lambda: canary.get("timeout_ms") == 100)
        assert canary.rollout is None
    finally:
        canary.close()
        other.close()
