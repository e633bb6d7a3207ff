#!/usr/bin/env bash
# The test command: installs what the tests need (see scripts/tools.sh: a line per tool, and
# the exact command to run where it cannot install one), then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p firmware`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

echo "tools the tests need:"
need_rust_target thumbv6m-none-eabi "the device code is built for a Cortex-M0"
need_apt qemu-system-arm qemu-system-arm "the micro:bit runs in QEMU"
need_apt arm-none-eabi-objcopy binutils-arm-none-eabi "factory files read back"
need_apt openssl openssl "imager's keys read by OpenSSL"
need_pip heatshrink2 heatshrink2==0.15.0 "the reference C heatshrink"
need_pg "the server's tests run on PostgreSQL too"
# Garage with only its LMDB metadata engine: no SQLite, K2V or metrics to compile (a third less).
# It refuses to build without bundled-libs or system-libs; bundled-libs needs no system library.
need_cargo_install garage garage 2.5.0 "the S3 object store the server's replicas share" bundled-libs lmdb
tools_check_done

echo "running the tests:"
exec cargo test --workspace --locked "$@"
