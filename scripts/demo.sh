#!/usr/bin/env bash
# The main job, end to end: a build key, one signed image fused from real ARM ELF files (the OS
# and app in tests/fixtures, built by arm-none-eabi-gcc), inspected, then verified against the
# public key. Usage: scripts/demo.sh [BOARD]   (BOARD: microbit, nrf52840dk, nucleo-f411re,
# rpi-pico; default microbit)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
board=${1:-microbit}
fixtures="$root/tests/fixtures/$board"
[ -d "$fixtures" ] || { echo "no fixtures for board $board (see imager boards)" >&2; exit 2; }

cargo build --quiet --release -p imager --manifest-path "$root/Cargo.toml"
imager="$root/target/release/imager"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step "$imager" keygen --out "$work/build-key"
step "$imager" fuse --board "$board" --os "$fixtures/os.elf" --app "$fixtures/app.elf" \
    --version 1.0.0 --key "$work/build-key.pem" --out "$work/$board.fwi"
step "$imager" inspect "$work/$board.fwi"
step "$imager" verify "$work/$board.fwi" --pubkey "$work/build-key.pub.pem"
echo
echo "verified: $board.fwi is intact and signed by build-key"
