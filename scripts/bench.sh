#!/usr/bin/env bash
# The benchmark command: installs each benchmark's baselines the way scripts/test.sh installs
# the tests' tools (scripts/tools.sh), runs every benchmark (or the NAMEs given), and writes
# the figures they recorded (through the `benchkit` crate) into one results file,
# target/bench/results.json, with a readable summary next to it (target/bench/summary.md).
#
#   scripts/bench.sh [--quick] [NAME...]
#
# --quick runs each benchmark at a size that takes seconds and checks that it completes and
# records well-formed figures (not that they meet targets: timing is not a test). It is part of
# the test command, so a benchmark whose inputs break fails CI. Its figures are not to be quoted.
#
# Benchmarks (docs/benchmarks.md has what each measures):
#   fuse             imager fuse vs imgtool sign; heatshrink compression per window
#   flash-cost       R1: erases and bytes programmed per update (counts)
#   power-cut        the power-cut campaign on every geometry
#   power-cut-delta  the same with the update as a patch
#   r2               check-ins and downloads vs bare hyper and nginx, on SQLite and PostgreSQL
#   r3               a fleet of 10,000: one server on SQLite, 3 replicas on PostgreSQL + Garage
#   r4               delta patches vs detools and bsdiff4; R1 with a patch; 1 MiB patch creation
#   boot             the micro:bit bootloader: size, boot instructions in QEMU; the RAM probe
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/tools.sh
source scripts/tools.sh

all=(fuse flash-cost power-cut power-cut-delta r2 r3 r4 boot)
quick=""
names=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "bench.sh: unknown option $arg (usage: scripts/bench.sh [--quick] [NAME...])" >&2; exit 2 ;;
        *)
            if [[ " ${all[*]} " != *" $arg "* ]]; then
                echo "bench.sh: no benchmark $arg (benchmarks: ${all[*]})" >&2
                exit 2
            fi
            names+=("$arg") ;;
    esac
done
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")

# The baselines and tools each benchmark needs, one line per tool.
echo "tools the benchmarks need:"
declare -A tooled=()
for name in "${names[@]}"; do
    case "$name" in
        fuse)
            need_apt arm-none-eabi-g++ gcc-arm-none-eabi "the 1 MiB of Thumb code is compiled"
            need_apt_package libstdc++-arm-none-eabi-newlib "thumb-app.cpp uses libstdc++"
            need_apt arm-none-eabi-objcopy binutils-arm-none-eabi "raw binaries of the input"
            need_pip imgtool imgtool==2.5.0 "the fuse baseline (MCUboot's imgtool)"
            need_pip heatshrink2 heatshrink2==0.15.0 "the reference C heatshrink" ;;
        r2)
            need_apt nginx nginx "the download baseline"
            need_pg "the server on PostgreSQL" ;;
        r3)
            need_pg "the replicas' database"
            need_garage ;;
        r4)
            need_apt arm-none-eabi-g++ gcc-arm-none-eabi "the 1 MiB of Thumb code is compiled"
            need_apt_package libstdc++-arm-none-eabi-newlib "thumb-app.cpp uses libstdc++"
            need_pip detools detools==0.53.0 "the R4 baseline"
            need_pip bsdiff4 bsdiff4==1.2.6 "the R4 baseline" ;;
        boot)
            need_rust_target thumbv6m-none-eabi "the bootloader is built for a Cortex-M0"
            need_apt qemu-system-arm qemu-system-arm "the micro:bit runs in QEMU"
            need_apt arm-none-eabi-size binutils-arm-none-eabi "the bootloader's size" ;;
    esac
    tooled[$name]=1
done
tools_check_done

out=target/bench
figures_dir="$out/figures${quick:+-quick}"
rm -rf "$figures_dir"
mkdir -p "$figures_dir" "$out/logs"
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || commit="$commit-dirty"
export FWI_BENCH_QUICK=${quick:-0}

# The full run measures release builds. The quick run checks that each benchmark completes
# and records well-formed figures, so it runs in the dev profile and reuses what the tests built
# (a release build of the workspace would double CI's compile time); its times mean nothing.
if [ -n "$quick" ]; then profile=(--quiet); else profile=(--quiet --release); fi

# run_benchmark NAME: the benchmark's command, at full size or, with --quick, at a size that
# takes seconds. Its figures go to $FWI_BENCH_FIGURES.
run_benchmark() {
    case "$1" in
        fuse)
            cargo build "${profile[@]}" -p imager
            cargo run "${profile[@]}" -p imager --example fuse-bench ;;
        flash-cost) cargo run "${profile[@]}" -p firmware --example flash-cost ;;
        power-cut) cargo run "${profile[@]}" -p firmware --example power-cut -- ${quick:+--board microbit} ;;
        power-cut-delta) cargo run "${profile[@]}" -p firmware --example power-cut -- --delta ${quick:+--board microbit} ;;
        r2)
            cargo build "${profile[@]}" -p ota-server
            if [ -n "$quick" ]; then
                R2_DEVICES=2000 R2_ROUNDS=1 R2_SECS=1 R2_DL_SECS=1 R2_CONNS=16 R2_DL_CONNS=8 \
                    cargo run "${profile[@]}" -p ota-server --example r2-bench
            else
                cargo run "${profile[@]}" -p ota-server --example r2-bench
            fi ;;
        r3)
            cargo build "${profile[@]}" -p imager -p ota-server
            cargo run "${profile[@]}" -p tests --example r3-bench -- ${quick:+100 400} ;;
        r4) cargo run "${profile[@]}" -p imager --example r4-delta ;;
        boot)
            cargo build "${profile[@]}" -p imager
            cargo run "${profile[@]}" -p tests --example boot-bench ;;
    esac
}

results=()
failed=()
for name in "${names[@]}"; do
    figures="$figures_dir/$name.jsonl"
    log="$out/logs/$name${quick:+-quick}.log"
    echo "== $name${quick:+ (quick)}: log in $log"
    start=$SECONDS
    if [ -n "$quick" ]; then
        FWI_BENCH_FIGURES="$PWD/$figures" run_benchmark "$name" >"$log" 2>&1 && status=0 || status=$?
    else
        FWI_BENCH_FIGURES="$PWD/$figures" run_benchmark "$name" 2>&1 | tee "$log" && status=0 || status=$?
    fi
    if [ "$status" -ne 0 ]; then
        echo "   FAILED (exit $status) after $((SECONDS - start)) s; the end of its log:"
        tail -n 25 "$log" | sed 's/^/   | /'
        failed+=("$name")
    else
        echo "   ok in $((SECONDS - start)) s, $(wc -l <"$figures" 2>/dev/null || echo 0) figures"
        results+=("$name=$figures")
    fi
done

if [ ${#results[@]} -gt 0 ]; then
    suffix=${quick:+-quick}
    if ! cargo run "${profile[@]}" -p benchkit --bin bench-results -- \
        --out "$out/results$suffix.json" --summary "$out/summary$suffix.md" \
        --date "$date" --commit "$commit" ${quick:+--quick} "${results[@]}"; then
        failed+=("(the figures recorded)")
    fi
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "bench.sh: every benchmark ran; results in $out/results${quick:+-quick}.json"
