"""confstore for Python services: the service's configuration, verified and live.

The client is the Rust one (``confstore-client``), compiled into ``confstore._native``:
every snapshot — from REST, MQTT or the LKG file — is an Ed25519-signed JWS checked
against the trusted keys, applied only if it is the next version (never backwards, never
twice, gaps filled over REST), kept in the LKG file, and overridden by the environment
variables ``<SERVICE>__<KEY>``. This module adds what is Python's own: the asyncio
iterator of updates and Pydantic models. Nothing here re-checks or re-implements those
rules.

    import confstore

    with confstore.Client.from_env() as config:
        port = config["port"]
        config.subscribe(lambda update: print("changed:", update.changed))
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, TypeVar, Union

from confstore import _native
from confstore._native import (
    ClientClosed,
    ConfstoreError,
    InvalidSetting,
    LkgError,
    NoVerifiedConfig,
    Update,
    env_var_name,
)

__all__ = [
    "Client",
    "ClientClosed",
    "ConfigValidationError",
    "ConfstoreError",
    "InvalidSetting",
    "LkgError",
    "NoVerifiedConfig",
    "SchemaDrift",
    "SchemaDriftError",
    "Update",
    "Updates",
    "env_var_name",
]

_log = logging.getLogger("confstore")

_M = TypeVar("_M")

# What `updates()` queues when the client closes: the iterator ends there.
_CLOSED = object()


class ConfigValidationError(ConfstoreError, ValueError):
    """The configuration does not fit the model given to ``Client.model``.

    ``keys`` names the configuration keys that failed, ``errors`` is Pydantic's list.
    """

    def __init__(self, message: str, keys: tuple[str, ...], errors: list[Any]) -> None:
        super().__init__(message)
        self.keys = keys
        self.errors = errors


@dataclass(frozen=True)
class SchemaDrift:
    """How a service's model of its configuration differs from the JSON Schema the store
    validates the service's values with (``Client.schema_drift``).

    Compared per top-level key: ``only_in_model`` are fields of the model the stored schema
    does not declare (the store accepts anything, or nothing, there); ``only_in_store`` are
    keys the stored schema declares that the model lacks; ``type_mismatch`` lists
    ``(key, store types, model types)`` where the store allows a JSON type the model does not
    accept; ``required_mismatch`` are keys the model requires that the store lets be absent
    (without a default). ``store_schema`` is False when the service has no schema in the
    store (then there is nothing to drift from and ``ok`` is True).
    """

    service: str
    model: str
    schema_hash: Optional[str]
    store_schema: bool
    only_in_model: tuple[str, ...] = ()
    only_in_store: tuple[str, ...] = ()
    type_mismatch: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    required_mismatch: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No difference found."""
        return not (self.only_in_model or self.only_in_store or self.type_mismatch or self.required_mismatch)

    def differences(self) -> list[str]:
        """Each difference as a sentence."""
        out = [f"{k}: in the model, not declared by the stored schema" for k in self.only_in_model]
        out += [f"{k}: declared by the stored schema, not in the model" for k in self.only_in_store]
        out += [
            f"{k}: the store allows {'/'.join(store)}, the model takes {'/'.join(model) or 'nothing'}"
            for k, store, model in self.type_mismatch
        ]
        out += [f"{k}: required by the model, optional in the store (no default)" for k in self.required_mismatch]
        return out

    def __str__(self) -> str:
        if not self.store_schema:
            return f"service {self.service!r} has no schema in the store: nothing to compare {self.model} with"
        if self.ok:
            return f"{self.model} matches the stored schema of service {self.service!r} ({self.schema_hash})"
        return (
            f"{self.model} has drifted from the stored schema of service {self.service!r} "
            f"({self.schema_hash}): " + "; ".join(self.differences())
        )


class SchemaDriftError(ConfstoreError, ValueError):
    """``Client.model(..., drift="raise")`` found the model differs from the stored schema;
    ``drift`` is the report."""

    def __init__(self, drift: SchemaDrift) -> None:
        super().__init__(str(drift))
        self.drift = drift


class Client:
    """A running client for one service: the current configuration and live updates.

    Start-up returns once the client holds a verified configuration — from REST, else the
    retained MQTT message (waiting up to ``startup_timeout`` seconds), else the LKG file —
    and raises ``NoVerifiedConfig`` (listing why each source failed) otherwise. Reads are
    memory only. ``close()`` (or leaving a ``with`` block, or the interpreter's exit)
    disconnects cleanly and ends the client's thread.
    """

    __slots__ = ("_native", "_queues", "_lock", "_drift_seen", "__weakref__")

    def __init__(
        self,
        service: str,
        *,
        public_keys: Union[str, Iterable[str]],
        url: Optional[str] = None,
        token: Optional[str] = None,
        mqtt_url: Optional[str] = None,
        lkg_path: Union[str, os.PathLike[str], None] = None,
        store_id: Optional[str] = None,
        startup_timeout: float = 3.0,
        mqtt_client_id: Optional[str] = None,
        mqtt_username: Optional[str] = None,
        mqtt_password: Optional[str] = None,
        mqtt_ca_file: Union[str, os.PathLike[str], None] = None,
        environ: Optional[Mapping[str, str]] = None,
        report_status: Optional[bool] = None,
        instance_id: Optional[str] = None,
    ) -> None:
        keys = [public_keys] if isinstance(public_keys, str) else list(public_keys)
        self._init(
            _native.Client(
                service,
                public_keys=keys,
                url=url,
                token=token,
                mqtt_url=mqtt_url,
                lkg_path=None if lkg_path is None else os.fspath(lkg_path),
                store_id=store_id,
                startup_timeout=float(startup_timeout),
                mqtt_client_id=mqtt_client_id,
                mqtt_username=mqtt_username,
                mqtt_password=mqtt_password,
                mqtt_ca_file=None if mqtt_ca_file is None else os.fspath(mqtt_ca_file),
                env=_environ(environ),
                report_status=None if report_status is None else bool(report_status),
                instance_id=instance_id,
            )
        )

    def _init(self, native: _native.Client) -> None:
        self._native = native
        # The event loops and queues of the running `updates()` iterators.
        self._queues: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = set()
        self._lock = threading.Lock()
        # What `model()` found comparing each (model class, schema hash): once each.
        self._drift_seen: dict[tuple[type, Optional[str]], Optional[SchemaDrift]] = {}

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, *, startup_timeout: float = 3.0) -> Client:
        """A client configured from the environment (default ``os.environ``).

        ``CONFSTORE_SERVICE`` and ``CONFIG_SIGNATURE_PUBLIC_KEY`` (base64; several separated
        by commas during a key rotation) are required; ``CONFSTORE_URL``, ``CONFSTORE_TOKEN``,
        ``CONFSTORE_MQTT_URL`` (without it the client asks the server), ``CONFSTORE_LKG_PATH``,
        ``CONFSTORE_STORE_ID``, ``CONFSTORE_MQTT_CLIENT_ID``, ``CONFSTORE_MQTT_USERNAME``,
        ``CONFSTORE_MQTT_PASSWORD`` and ``CONFSTORE_MQTT_CA_FILE`` are optional. The same
        environment supplies the ``<SERVICE>__<KEY>`` overrides.
        """
        client = cls.__new__(cls)
        client._init(_native.Client.from_vars(_environ(environ), startup_timeout=float(startup_timeout)))
        return client

    # Reads: memory only, one verified version each.

    @property
    def service(self) -> str:
        """The service this client is for."""
        return self._native.service

    @property
    def epoch(self) -> int:
        """The store epoch the current configuration reflects."""
        return self._native.epoch

    @property
    def version(self) -> int:
        """The version of the service's configuration: the epoch that last changed it."""
        return self._native.version

    @property
    def rollout(self) -> Optional[int]:
        """The staged rollout whose configuration this instance runs in place of ``version``'s
        (docs/format.md §21: its instance id is in the rollout's cohort), or None."""
        return self._native.rollout

    @property
    def generation(self) -> int:
        """The store's generation."""
        return self._native.generation

    @property
    def store_id(self) -> str:
        """The store's id (hex)."""
        return self._native.store_id

    @property
    def instance_id(self) -> Optional[str]:
        """The instance id this client's status reports name (they are on whenever the client
        has a broker, unless ``report_status=False`` or ``CONFSTORE_REPORT_STATUS=0``); None
        when it makes none."""
        return self._native.instance_id

    def set_healthy(self, healthy: Optional[bool]) -> None:
        """Sets the health this instance reports in the fleet view (docs/format.md §20):
        False marks it unhealthy, None withdraws the word. Nothing happens when the client
        makes no status reports."""
        self._native.set_healthy(healthy)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._native.closed

    def get(self, key: str, default: Any = None) -> Any:
        """The resolved value of ``key`` (env, then store, then schema default), or ``default``."""
        return self._native.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._native[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._native

    def snapshot(self) -> dict[str, Any]:
        """Every resolved key and value of the current version, as a new dict."""
        return self._native.snapshot()

    def source(self, key: str) -> Optional[str]:
        """Where ``key``'s value comes from: ``"env"``, ``"service"``, ``"global"`` or
        ``"default"``; None if there is no such key."""
        return self._native.source(key)

    def stats(self) -> dict[str, Any]:
        """The client's counters: applied versions, rejected snapshots by kind, gaps
        filled, resyncs, reconnects, catch-ups, LKG problems."""
        return self._native.stats()

    @property
    def schema_hash(self) -> Optional[str]:
        """SHA-256 (hex) of the service's JSON Schema in the version held; None without one."""
        return self._native.schema_hash

    def stored_schema(self) -> Optional[dict[str, Any]]:
        """The JSON Schema the store validates this service's values with, for the version
        held (None if it has none). Fetched over REST (``url`` and a token are needed) and
        taken only if it hashes to the verified snapshot's ``schema_hash``. Not from an
        update callback."""
        return self._native.stored_schema()  # type: ignore[no-any-return]

    def schema_drift(self, cls: type[Any]) -> SchemaDrift:
        """Compares the Pydantic v2 model ``cls`` (its ``model_json_schema()``) with the
        service's stored schema (``stored_schema()``): keys on one side only, JSON types the
        store allows that the model does not take, keys the model requires that the store
        may leave out. Raises ``ConfstoreError`` if the stored schema cannot be fetched."""
        model_schema = getattr(cls, "model_json_schema", None)
        if model_schema is None:
            raise TypeError(f"{cls!r} is not a Pydantic v2 model (it has no model_json_schema)")
        schema_hash = self.schema_hash
        stored = self.stored_schema()
        return _drift(self.service, cls.__name__, schema_hash, stored, model_schema())

    def model(self, cls: type[_M], *, drift: Literal["warn", "raise", "ignore"] = "warn") -> _M:
        """The current configuration validated into the Pydantic v2 model ``cls``.

        Raises ``ConfigValidationError`` naming the keys that do not fit. Pydantic is an
        optional dependency (``pip install confstore[pydantic]``), imported only here.

        The first time a model meets a version of the service's stored schema, the two are
        compared (``schema_drift``): ``drift="warn"`` (the default) logs the differences on
        the ``confstore`` logger, ``"raise"`` raises ``SchemaDriftError``, ``"ignore"`` skips
        the comparison (and its REST request). A schema that cannot be fetched is a warning
        with ``"warn"`` and an error with ``"raise"``.
        """
        if drift not in ("warn", "raise", "ignore"):
            raise ValueError(f"drift must be 'warn', 'raise' or 'ignore', not {drift!r}")
        validate = getattr(cls, "model_validate", None)
        if validate is None:
            raise TypeError(f"{cls!r} is not a Pydantic v2 model (it has no model_validate)")
        if drift != "ignore":
            self._check_drift(cls, drift == "raise")
        data = self.snapshot()
        try:
            return validate(data)  # type: ignore[no-any-return]
        except Exception as e:
            pydantic = sys.modules.get("pydantic")
            if pydantic is None or not isinstance(e, pydantic.ValidationError):
                raise
            errors = e.errors()
            keys = tuple(sorted({str(err["loc"][0]) if err["loc"] else "" for err in errors}))
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors
            )
            raise ConfigValidationError(
                f"configuration of service {self.service!r} does not fit {cls.__name__}: "
                f"keys {', '.join(keys)}: {details}",
                keys,
                errors,
            ) from e

    def _check_drift(self, cls: type[Any], strict: bool) -> None:
        seen = (cls, self.schema_hash)
        # A report per model and schema version; None: the schema could not be fetched (and
        # that was logged), tried again only when drift is an error.
        report = self._drift_seen.get(seen)
        if report is None and (strict or seen not in self._drift_seen):
            try:
                report = self.schema_drift(cls)
            except ConfstoreError as e:
                if strict:
                    raise
                _log.warning(
                    "cannot compare %s with the stored schema of service %r: %s", cls.__name__, self.service, e
                )
                self._drift_seen[seen] = None
                return
            self._drift_seen[seen] = report
            if not strict and not report.ok:
                _log.warning("%s", report)
        if strict and report is not None and not report.ok:
            raise SchemaDriftError(report)

    # Live updates.

    def subscribe(self, callback: Callable[[Update], object]) -> int:
        """Calls ``callback(update)`` for every version applied from now on, in order, once
        each. It runs on the client's thread with the GIL held: keep it short. An exception
        in it is logged (logger ``confstore``) and the client carries on. Returns an id for
        ``unsubscribe``."""
        return self._native.subscribe(callback)

    def unsubscribe(self, subscription: int) -> bool:
        """Stops the callback ``subscribe`` returned ``subscription`` for."""
        return self._native.unsubscribe(subscription)

    def updates(self) -> Updates:
        """The versions applied from this call on, in order, each once, for asyncio::

            async for update in client.updates():
                print(update.epoch, update.changed)

        Call it from a coroutine (it binds the running loop). The iteration ends when the
        client closes, or at ``aclose()``. Updates wait in an unbounded queue until the
        loop takes them: none is skipped.
        """
        return Updates(self)

    # Shutdown.

    def close(self) -> None:
        """Disconnects from the broker, stops live updates, ends the client's thread and
        ends every ``updates()`` iteration. Idempotent."""
        self._native.close()
        with self._lock:
            queues = list(self._queues)
            self._queues.clear()
        for loop, queue in queues:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, _CLOSED)
            except RuntimeError:
                pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._native)


class Updates:
    """The asyncio iterator ``Client.updates()`` returns (subscribed from its creation)."""

    __slots__ = ("_client", "_loop", "_queue", "_subscription", "_done")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._done = False
        loop, queue = self._loop, self._queue

        # Runs on the client's thread: hands the update to the loop's thread. Holds the
        # loop and the queue, not this iterator, so dropping the iterator unsubscribes.
        def deliver(update: Update) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, update)
            except RuntimeError:
                pass  # the loop is closed: nobody is iterating any more

        self._subscription = 0
        # Under the lock `close()` takes to end the iterations: either this one is
        # registered before and ends with the others, or it sees the client closed.
        with client._lock:
            try:
                self._subscription = client._native.subscribe(deliver)
            except ClientClosed:
                self._done = True
                return
            client._queues.add((loop, queue))

    def __aiter__(self) -> Updates:
        return self

    async def __anext__(self) -> Update:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _CLOSED:
            self._finish()
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Ends the iteration and unsubscribes."""
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._client._native.unsubscribe(self._subscription)
        with self._client._lock:
            self._client._queues.discard((self._loop, self._queue))

    def __del__(self) -> None:
        try:
            self._finish()
        except Exception:
            pass  # interpreter shutdown: the client is closed by then


# JSON Schema types, and which accept which (a number field takes integers).
_ACCEPTS = {"number": {"number", "integer"}}


def _types(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Optional[frozenset[str]]:
    """The JSON types a (sub)schema allows, or None when it does not say (no ``type``, or
    something this comparison does not follow)."""
    if not isinstance(schema, dict) or depth > 16:
        return None
    if "$ref" in schema:
        ref = schema["$ref"]
        name = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None
        return _types(defs.get(name) if name else None, defs, depth + 1)
    t = schema.get("type")
    if isinstance(t, str):
        return frozenset({t})
    if isinstance(t, list) and all(isinstance(x, str) for x in t):
        return frozenset(t)
    for union in ("anyOf", "oneOf"):
        subs = schema.get(union)
        if isinstance(subs, list):
            parts = [_types(sub, defs, depth + 1) for sub in subs]
            if any(p is None for p in parts):
                return None
            return frozenset().union(*[p for p in parts if p is not None])
    values = schema["enum"] if isinstance(schema.get("enum"), list) else [schema["const"]] if "const" in schema else None
    if values is not None:
        return frozenset(_json_type(v) for v in values)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _member(schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``schema[name]`` if it is an object, else an empty one."""
    value = schema.get(name)
    return value if isinstance(value, dict) else {}


def _drift(
    service: str, model: str, schema_hash: Optional[str], stored: Optional[Mapping[str, Any]], ours: Mapping[str, Any]
) -> SchemaDrift:
    """The comparison behind ``Client.schema_drift``."""
    if stored is None:
        return SchemaDrift(service, model, schema_hash, store_schema=False)
    store_props = _member(stored, "properties")
    model_props = _member(ours, "properties")
    store_defs = _member(stored, "$defs")
    model_defs = _member(ours, "$defs")
    store_required = set(stored.get("required") or ())
    model_required = set(ours.get("required") or ())
    mismatched = []
    for key in sorted(store_props.keys() & model_props.keys()):
        store_types = _types(store_props[key], store_defs)
        model_types = _types(model_props[key], model_defs)
        if store_types is None or model_types is None:
            continue
        taken = set().union(*(_ACCEPTS.get(t, {t}) for t in model_types))
        if not store_types <= taken:
            mismatched.append((key, tuple(sorted(store_types)), tuple(sorted(model_types))))
    optional_in_store = [
        k
        for k in sorted(model_required)
        if k in store_props and k not in store_required and "default" not in (store_props[k] or {})
    ]
    return SchemaDrift(
        service,
        model,
        schema_hash,
        store_schema=True,
        only_in_model=tuple(sorted(model_props.keys() - store_props.keys())),
        only_in_store=tuple(sorted(store_props.keys() - model_props.keys())),
        type_mismatch=tuple(mismatched),
        required_mismatch=tuple(optional_in_store),
    )


def _environ(environ: Optional[Mapping[str, str]]) -> list[tuple[str, str]]:
    """The variables as pairs for the Rust side (``os.environ`` by default)."""
    return list((os.environ if environ is None else environ).items())
