#!/usr/bin/env bash
# A tour of the CLI (the main job is `confstore serve`, README): builds the binary,
# creates a store in ./data with keys in ./.env (first run only), makes a few signed
# changes, and shows history, time travel, an export and its offline verification.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p confstore --locked
cs=target/release/confstore
run() { printf '\n$ confstore %s\n' "$*"; "$cs" "$@"; }

if [ ! -f data/config.db ]; then
    run init
fi
"$cs" service list | grep -qx demo || run service add demo --reason "demo service"
run set demo greeting '"hello"' --reason "first greeting"
run set demo timeout_ms=500 retries=3 --reason "tuning, one changeset"
epoch=$("$cs" head --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["epoch"])')
run set demo timeout_ms 750 --reason "slower network"
run set demo api_token '"demo-token"' --secret --reason "a secret: encrypted before the log"
run get demo
run get demo --epoch "$epoch"
run diff "$epoch"
run snapshot demo
run search hello
run history demo --limit 5
run rollback --to-epoch "$epoch" --service demo --reason "demo rollback"
run get demo
run lkg verify
run head
run export --out data/export.jsonl
run verify
run verify --export data/export.jsonl
