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
import os
import sys
import threading
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar, Union

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
    "Update",
    "Updates",
    "env_var_name",
]

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


class Client:
    """A running client for one service: the current configuration and live updates.

    Start-up returns once the client holds a verified configuration — from REST, else the
    retained MQTT message (waiting up to ``startup_timeout`` seconds), else the LKG file —
    and raises ``NoVerifiedConfig`` (listing why each source failed) otherwise. Reads are
    memory only. ``close()`` (or leaving a ``with`` block, or the interpreter's exit)
    disconnects cleanly and ends the client's thread.
    """

    __slots__ = ("_native", "_queues", "_lock", "__weakref__")

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
            )
        )

    def _init(self, native: _native.Client) -> None:
        self._native = native
        # The event loops and queues of the running `updates()` iterators.
        self._queues: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = set()
        self._lock = threading.Lock()

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
    def generation(self) -> int:
        """The store's generation."""
        return self._native.generation

    @property
    def store_id(self) -> str:
        """The store's id (hex)."""
        return self._native.store_id

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

    def model(self, cls: type[_M]) -> _M:
        """The current configuration validated into the Pydantic v2 model ``cls``.

        Raises ``ConfigValidationError`` naming the keys that do not fit. Pydantic is an
        optional dependency (``pip install confstore[pydantic]``), imported only here.
        """
        data = self.snapshot()
        validate = getattr(cls, "model_validate", None)
        if validate is None:
            raise TypeError(f"{cls!r} is not a Pydantic v2 model (it has no model_validate)")
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


def _environ(environ: Optional[Mapping[str, str]]) -> list[tuple[str, str]]:
    """The variables as pairs for the Rust side (``os.environ`` by default)."""
    return list((os.environ if environ is None else environ).items())
