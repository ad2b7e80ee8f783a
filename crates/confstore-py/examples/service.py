"""A Python service reading its configuration from confstore (README "Python services").

Configured from the environment: CONFSTORE_SERVICE, CONFIG_SIGNATURE_PUBLIC_KEY,
CONFSTORE_URL, CONFSTORE_TOKEN, CONFSTORE_LKG_PATH; `WEB__PORT=9000` overrides a key.
tests/test_typing.py checks it with `mypy --strict`.
"""

import asyncio

from pydantic import BaseModel

import confstore


class Web(BaseModel):
    port: int
    region: str
    timeout_ms: int = 500


async def main() -> None:
    with confstore.Client.from_env() as config:
        web = config.model(Web)  # a validated Web, or ConfigValidationError naming the keys
        print(f"listening on {web.port} in {web.region} (port from {config.source('port')})")
        async for update in config.updates():  # every new verified version, in order
            if "port" in update.changed:
                print(f"port {update.old.get('port')} -> {update.new['port']} at epoch {update.epoch}")


if __name__ == "__main__":
    asyncio.run(main())
