"""Real parts for the Python client's tests: a `confstore serve` process (the workspace's
debug binary, or $CONFSTORE_BIN) on a free port, publishing to a real Mosquitto the test
starts on a free port, and a store created with `confstore init`.

Nothing waits by sleeping for a fixed time: every wait polls a condition until a deadline
and fails with what it was waiting for.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[3]
# Generous: the machine running the suite is shared and may be slow.
DEADLINE = 30.0

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], Optional[T]], deadline: float = DEADLINE) -> T:
    """Polls `check` until it returns something other than None/False; fails after `deadline`."""
    until = time.monotonic() + deadline
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > until:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def confstore_bin() -> Path:
    path = Path(os.environ.get("CONFSTORE_BIN") or REPO / "target" / "debug" / "confstore")
    assert path.is_file(), f"{path} does not exist: build it first (cargo build -p confstore)"
    return path


def mosquitto_bin() -> str:
    for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.path.isfile(p):
            return p
    found = shutil.which("mosquitto")
    assert found, "mosquitto is not installed (apt-get install mosquitto; ops/test.sh does)"
    return found


def clean_env() -> dict[str, str]:
    """The environment without confstore's variables, so nothing of the caller's leaks in."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONFSTORE_", "CONFIG_", "LKG_"))
    }


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A Mosquitto on 127.0.0.1:<free port>, anonymous access, killed at the end."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = directory / "mosquitto.conf"
        # `user root`: as root, mosquitto would otherwise drop to its own user.
        conf.write_text(
            f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "message_size_limit 16777216\npersistence false\n"
        )
        self.log = directory / "mosquitto.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_bin(), "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        wait_for(f"mosquitto to listen on {self.port}", lambda: listening(self.port))

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def retained(self, topic: str) -> Optional[bytes]:
        """The message the broker retains on `topic`, if any (mosquitto_sub --retained-only)."""
        done = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic, "-C", "1", "-W", "1",
             "--retained-only"],
            capture_output=True,
            timeout=DEADLINE,
        )
        return done.stdout.rstrip(b"\n") if done.returncode == 0 and done.stdout else None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publishes `payload` at QoS 1 as an outsider would (mosquitto_pub, anonymous)."""
        command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-t", topic, "-s"]
        if retain:
            command.append("-r")
        done = subprocess.run(command, input=payload, capture_output=True, timeout=DEADLINE)
        assert done.returncode == 0, f"mosquitto_pub {topic}: {done.stderr!r}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)


class Store:
    """A store made by `confstore init` in `directory`, served by `confstore serve`."""

    def __init__(self, directory: Path, mqtt_url: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = directory / "data"
        self.env_file = directory / ".env"
        self.mqtt_url = mqtt_url
        self.log = directory / "serve.log"
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.run("init", "--json")
        self.public_key = self._env_var("CONFIG_SIGNATURE_PUBLIC_KEY")

    def command(self, *args: str) -> list[str]:
        return [str(confstore_bin()), "--data-dir", str(self.data_dir), "--env-file", str(self.env_file), *args]

    def run(self, *args: str) -> str:
        done = subprocess.run(
            self.command(*args), env=clean_env(), capture_output=True, text=True, timeout=DEADLINE
        )
        assert done.returncode == 0, f"confstore {' '.join(args)}: {done.returncode}\n{done.stderr}"
        return done.stdout

    def _env_var(self, name: str) -> str:
        for line in self.env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
                return value.strip().strip('"')
        raise AssertionError(f"{name} not in {self.env_file}")

    def serve(self) -> None:
        """Starts `serve` and waits for /readyz; on a port someone took meanwhile, again on another."""
        while True:
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    self.command("serve", "--listen", f"127.0.0.1:{self.port}", "--mqtt-url", self.mqtt_url),
                    env=clean_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )

            def ready() -> Optional[str]:
                assert self.process is not None
                if self.process.poll() is not None:
                    return "exited"
                try:
                    with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                        return "ready" if r.status == 200 else None
                except (OSError, urllib.error.HTTPError):
                    return None

            if wait_for("confstore serve to be ready", ready) == "ready":
                return
            if "cannot listen" not in self.log.read_text():
                raise AssertionError(f"confstore serve exited:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE) as r:
                text = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from e
        return json.loads(text) if text else None

    def snapshot_jws(self, service: str, epoch: Optional[int] = None) -> bytes:
        """The signed snapshot of `service` (at `epoch`) as REST serves it: the same JSON text
        of a flattened JWS the live stream carries (docs/format.md §14, §17)."""
        query = "" if epoch is None else f"?epoch={epoch}"
        req = urllib.request.Request(f"{self.url}/api/v1/services/{service}/snapshot{query}")
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/jose+json")
        with urllib.request.urlopen(req, timeout=DEADLINE) as r:
            return bytes(r.read())

    def create_service(self, name: str) -> None:
        self.request("POST", "/api/v1/services", {"name": name})

    def put(self, service: str, key: str, value: Any) -> int:
        """Sets a value over REST; the epoch the server acknowledged."""
        answer = self.request("PUT", f"/api/v1/services/{service}/values/{key}", {"value": value})
        return int(answer["epoch"])

    def client_settings(self, service: str = "web") -> dict[str, Any]:
        """What `confstore.Client` needs to reach this store (no env overrides)."""
        return {
            "public_keys": [self.public_key],
            "url": self.url,
            "token": self.token,
            "mqtt_url": self.mqtt_url,
            "mqtt_client_id": f"pytest-{service}-{free_port()}",
            "environ": {},
        }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture
def store(tmp_path: Path, broker: Broker) -> Iterator[Store]:
    """A served store with the service `web` (port 8080, region eu-west)."""
    s = Store(tmp_path / "store", broker.url)
    s.serve()
    s.create_service("web")
    s.put("web", "port", 8080)
    s.put("web", "region", "eu-west")
    yield s
    s.stop()
