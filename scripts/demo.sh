#!/usr/bin/env bash
# The main job, end to end, on the embedded default (nothing to install but Rust):
#   keys -> images v1 and v2 fused from real ARM ELF files (tests/fixtures, built by
#   arm-none-eabi-gcc) -> an ota-server on a temporary folder -> a test fleet and a prod fleet
#   of simulated devices running the real firmware code -> v2 released to test, confirmed
#   there -> promoted to prod with the offline prod key -> rolled out in stages.
# Usage: scripts/demo.sh [TEST_DEVICES] [PROD_DEVICES]   (default 20 and 200)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
test_devices=${1:-20}
prod_devices=${2:-200}
fixtures="$root/tests/fixtures/microbit"

echo "building imager, ota-server and fleet-sim (release)..."
cargo build --quiet --release -p imager -p ota-server -p tests --bins \
    --manifest-path "$root/Cargo.toml"
bin="$root/target/release"
work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
short() { cut -c1-12 <<<"$1"; }
image_id() { "$bin/imager" inspect --json "$1" | sed -n 's/^ *"id": "\([0-9a-f]*\)".*/\1/p'; }

bold "1. Keys: one signs images (CI), one signs prod releases (kept offline)"
run "$bin/imager" keygen --out "$work/build"
run "$bin/imager" keygen --out "$work/prod"

bold "2. Two images for the BBC micro:bit, fused from the same real OS and app ELF files"
for v in 1.0.0 2.0.0; do
    run "$bin/imager" fuse --board microbit --os "$fixtures/os.elf" --app "$fixtures/app.elf" \
        --version "$v" --key "$work/build.pem" --out "$work/app-$v.fwi"
done
v1=$(image_id "$work/app-1.0.0.fwi")
v2=$(image_id "$work/app-2.0.0.fwi")

bold "3. An ota-server on a temporary folder (SQLite file + blob folder)"
run "$bin/ota-server" init --data "$work/data" --build-key "$work/build.pub.pem" \
    --prod-key "$work/prod.pub.pem" | tee "$work/init.txt"
export IMAGER_TOKEN
IMAGER_TOKEN=$(sed -n 's/^admin token: //p' "$work/init.txt")
OTA_LOG=warn "$bin/ota-server" serve --data "$work/data" --listen 127.0.0.1:0 \
    >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
export IMAGER_SERVER
IMAGER_SERVER=$(sed -n 's/^listening on //p' "$work/serve.out")
echo "serving at $IMAGER_SERVER"

bold "4. CI pushes both images; v1 is what the factory installs and what test and prod run today"
run "$bin/imager" push "$work/app-1.0.0.fwi"
run "$bin/imager" push "$work/app-2.0.0.fwi"
run "$bin/imager" release test "$v1"
sim() { "$bin/fleet-sim" --board microbit --factory "$work/app-1.0.0.fwi" --checkin-interval 50 "$@"; }
echo "the fleets come up on v1 and check in:"
run sim --devices "$test_devices" --environment test --prefix qa
promote_v1=$("$bin/imager" promote "$v1" --to prod --key "$work/prod.pem")
echo "$promote_v1"
run sim --devices "$prod_devices" --environment prod --prefix field

bold "5. v2 released to test: the QA fleet downloads it, swaps, boots it on trial, confirms"
run "$bin/imager" release test "$v2"
run sim --devices "$test_devices" --environment test --prefix qa
run "$bin/imager" status --env test

bold "6. Promotion to prod, signed with the offline prod key (the server alone cannot do this)"
run "$bin/imager" promote "$v2" --to prod --key "$work/prod.pem"
echo
echo "prod rolls out in stages (5 %, 25 %, 100 % of its devices, by a stable hash of the id);"
echo "each stage starts when enough of the previous one confirmed:"
run sim --devices "$prod_devices" --environment prod --prefix field --power-cut-ratio 0.2
run "$bin/imager" status

bold "Result"
on_v2=$("$bin/imager" devices --env prod --image "$v2" --json | grep -c '"id"' || true)
echo "test ran v2 = image $(short "$v2"); $on_v2 of $prod_devices prod devices run that very image"
echo "(same bytes, same id, same signature), with power cut during 20 % of their updates."
echo "Releases (from the audit log):"
"$bin/imager" audit --limit 1000 | grep -E "release\.(create|rollback)" || true
