# Type stubs of the package `confstore` (the compiled `confstore._native` included), so
# `mypy --strict` checks services that use it. Kept by hand beside __init__.py and
# src/*.rs; tests/test_typing.py runs mypy --strict on an example service.
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

_M = TypeVar("_M")

class ConfstoreError(Exception):
    """Base class of every error the confstore client raises."""

class InvalidSetting(ConfstoreError):
    """A client setting (argument or environment variable) is unusable."""

    setting: str

class NoVerifiedConfig(ConfstoreError):
    """No source gave a verified configuration."""

    service: str
    reasons: list[tuple[str, str]]

class LkgError(ConfstoreError):
    """The LKG file, the only configured source, is unusable."""

    path: str

class ClientClosed(ConfstoreError):
    """The client was closed."""

class ConfigValidationError(ConfstoreError, ValueError):
    """The configuration does not fit the model given to ``Client.model``."""

    keys: tuple[str, ...]
    errors: list[Any]
    def __init__(self, message: str, keys: tuple[str, ...], errors: list[Any]) -> None: ...

class SchemaDrift:
    """How a model differs from the service's stored JSON Schema (``Client.schema_drift``)."""

    service: str
    model: str
    schema_hash: str | None
    store_schema: bool
    only_in_model: tuple[str, ...]
    only_in_store: tuple[str, ...]
    type_mismatch: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    required_mismatch: tuple[str, ...]
    @property
    def ok(self) -> bool: ...
    def differences(self) -> list[str]: ...

class SchemaDriftError(ConfstoreError, ValueError):
    """``Client.model(..., drift="raise")`` found drift."""

    drift: SchemaDrift
    def __init__(self, drift: SchemaDrift) -> None: ...

class Update:
    """One applied version as a subscriber sees it."""

    @property
    def old(self) -> dict[str, Any]: ...
    @property
    def new(self) -> dict[str, Any]: ...
    @property
    def changed(self) -> tuple[str, ...]: ...
    @property
    def epoch(self) -> int: ...
    @property
    def version(self) -> int: ...

class Client:
    """A running client for one service: the current configuration and live updates."""

    def __init__(
        self,
        service: str,
        *,
        public_keys: str | Iterable[str],
        url: str | None = None,
        token: str | None = None,
        mqtt_url: str | None = None,
        lkg_path: str | os.PathLike[str] | None = None,
        store_id: str | None = None,
        startup_timeout: float = 3.0,
        mqtt_client_id: str | None = None,
        mqtt_username: str | None = None,
        mqtt_password: str | None = None,
        mqtt_ca_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        report_status: bool | None = None,
        instance_id: str | None = None,
    ) -> None: ...
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, startup_timeout: float = 3.0) -> Client: ...
    @property
    def service(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def rollout(self) -> int | None: ...
    @property
    def generation(self) -> int: ...
    @property
    def store_id(self) -> str: ...
    @property
    def instance_id(self) -> str | None: ...
    def set_healthy(self, healthy: bool | None) -> None: ...
    @property
    def closed(self) -> bool: ...
    def get(self, key: str, default: Any = None) -> Any: ...
    def __getitem__(self, key: str) -> Any: ...
    def __contains__(self, key: object) -> bool: ...
    def snapshot(self) -> dict[str, Any]: ...
    def source(self, key: str) -> str | None: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def schema_hash(self) -> str | None: ...
    def stored_schema(self) -> dict[str, Any] | None: ...
    def schema_drift(self, cls: type[Any]) -> SchemaDrift: ...
    def model(self, cls: type[_M], *, drift: Literal["warn", "raise", "ignore"] = "warn") -> _M: ...
    def subscribe(self, callback: Callable[[Update], object]) -> int: ...
    def unsubscribe(self, subscription: int) -> bool: ...
    def updates(self) -> Updates: ...
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(self, *exc: object) -> None: ...

class Updates:
    """The asyncio iterator ``Client.updates()`` returns (subscribed from its creation)."""

    def __aiter__(self) -> Updates: ...
    async def __anext__(self) -> Update: ...
    async def aclose(self) -> None: ...

def env_var_name(service: str, key: str) -> str:
    """The environment variable that overrides ``key`` of ``service``."""

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
