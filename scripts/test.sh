#!/usr/bin/env bash
# The test command: installs what the tests need (see scripts/tools.sh: a line per tool, and
# the exact command to run where it cannot install one), then runs every test of the workspace
# and, last, every benchmark at a size that takes seconds (`scripts/bench.sh --quick`, in the
# dev profile the tests already built), so that a benchmark whose inputs broke fails here.
# Extra arguments go to `cargo test` only, and then the benchmarks are not run (e.g.
# `scripts/test.sh -p firmware`).
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
need_garage
tools_check_done

echo "running the tests:"
cargo test --workspace --locked "$@"
if [ $# -eq 0 ]; then
    echo "running every benchmark at a size that takes seconds:"
    exec scripts/bench.sh --quick
fi
