"""The type stubs hold: `mypy --strict` passes on the example service, and fails on a
misuse (so the check is real)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "service.py"


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    # Required, not skipped: the test environment (ops/test.sh) installs mypy.
    assert importlib.util.find_spec("mypy"), "mypy is not installed (pip install mypy)"
    return subprocess.run(
        # No cache: nothing written into the checkout.
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir=/dev/null", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_example_service_passes_mypy_strict() -> None:
    done = mypy(str(EXAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_misuse_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import confstore\n"
        "c = confstore.Client('web', public_keys=['k'])\n"
        "v: str = c.epoch\n"
        "c.subscribe(lambda u: u.no_such_field)\n"
    )
    done = mypy(str(bad))
    assert done.returncode != 0
    assert 'Incompatible types in assignment (expression has type "int"' in done.stdout, done.stdout
    assert "no_such_field" in done.stdout, done.stdout

