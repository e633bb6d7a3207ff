# Sourced by scripts/test.sh and scripts/bench.sh: finds or installs the tools the tests and
# benchmarks need, one line per tool, and stops before anything runs when it cannot install one,
# naming the exact command to run. Run a second time, it installs nothing.
#
# Where things go:
#   rustup targets      rustup target add (the toolchain rustup manages)
#   Debian packages     apt-get install, as root or through sudo without a password
#   Python packages     a virtual environment in target/tools/venv (never the system Python)
#   cargo programs      cargo install, linked into target/tools/bin (e.g. garage; the build is
#                       kept in ~/.cache/fwi-tools, see need_cargo_install)
# The environment is then set so that the tests find them: target/tools/venv/bin and
# target/tools/bin first on PATH.

# shellcheck shell=bash
tools_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir="$tools_root/target/tools"
tools_venv="$tools_dir/venv"
tools_missing=()   # commands the user must run before the tests can
tools_apt_updated=""

tools_say() { printf '  %-24s %s\n' "$1" "$2"; }

# How this process can run a command as root: "" when it is root, "sudo" when sudo needs no
# password, or nothing at all (returns 1).
tools_root_prefix() {
    if [ "$(id -u)" -eq 0 ]; then
        echo ""
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        echo "sudo"
    else
        return 1
    fi
}

# need_rust_target TRIPLE WHY
need_rust_target() {
    local triple=$1 why=$2
    if rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
        tools_say "$triple" "ok"
    elif ! command -v rustup >/dev/null; then
        tools_say "$triple" "MISSING ($why), and rustup is not there to add it"
        tools_missing+=("rustup target add $triple   # after installing rustup")
    else
        tools_say "$triple" "installing: rustup target add $triple ($why)"
        rustup target add "$triple" >/dev/null 2>&1 || tools_missing+=("rustup target add $triple")
    fi
}

# need_apt COMMAND PACKAGE WHY: COMMAND on PATH, else the Debian package that provides it.
need_apt() {
    local cmd=$1 package=$2 why=$3 prefix
    if command -v "$cmd" >/dev/null; then
        tools_say "$cmd" "ok"
        return
    fi
    if ! prefix=$(tools_root_prefix); then
        tools_say "$cmd" "MISSING ($why); not root and no password-less sudo"
        tools_missing+=("sudo apt-get install -y $package")
        return
    fi
    tools_say "$cmd" "installing: apt-get install $package ($why)"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$tools_apt_updated" ]; then
        $prefix apt-get update -qq >/dev/null 2>&1 || true
        tools_apt_updated=1
    fi
    if ! $prefix apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 \
        || ! command -v "$cmd" >/dev/null; then
        tools_missing+=("sudo apt-get install -y $package")
    fi
}

# need_pg: PostgreSQL's server programs (initdb, pg_ctl, postgres). Debian keeps them in
# /usr/lib/postgresql/VERSION/bin, off PATH; that folder is put on PATH.
need_pg() {
    local why=$1 bin
    tools_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
    bin=$(tools_pg_bin)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        local prefix
        if ! prefix=$(tools_root_prefix); then
            tools_say "postgresql" "MISSING ($why); not root and no password-less sudo"
            tools_missing+=("sudo apt-get install -y postgresql")
            return
        fi
        tools_say "postgresql" "installing: apt-get install postgresql ($why)"
        export DEBIAN_FRONTEND=noninteractive
        if [ -z "$tools_apt_updated" ]; then
            $prefix apt-get update -qq >/dev/null 2>&1 || true
            tools_apt_updated=1
        fi
        $prefix apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 || true
        bin=$(tools_pg_bin)
        if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
            tools_missing+=("sudo apt-get install -y postgresql")
            return
        fi
    else
        tools_say "postgresql" "ok ($bin)"
    fi
    export PATH="$bin:$PATH"
}

# need_python_venv: the virtual environment the Python packages go into.
tools_venv_ready() { [ -x "$tools_venv/bin/python" ] && "$tools_venv/bin/python" -c 'import sys' 2>/dev/null; }
need_python_venv() {
    if tools_venv_ready; then
        export PATH="$tools_venv/bin:$PATH"
        return
    fi
    if ! command -v python3 >/dev/null; then
        need_apt python3 python3 "Python, for the reference tools"
    fi
    tools_say "python venv" "creating $tools_venv"
    mkdir -p "$tools_dir"
    if ! python3 -m venv "$tools_venv" >/dev/null 2>&1; then
        # Debian's python3 keeps venv (ensurepip) in a package of its own.
        rm -rf "$tools_venv"
        need_apt_package python3-venv "python3 -m venv"
        python3 -m venv "$tools_venv" >/dev/null 2>&1 || {
            tools_missing+=("sudo apt-get install -y python3-venv")
            return
        }
    fi
    export PATH="$tools_venv/bin:$PATH"
}

# need_apt_package PACKAGE WHY: a package with no command of its own to look for.
need_apt_package() {
    local package=$1 why=$2 prefix
    if dpkg -s "$package" >/dev/null 2>&1; then
        return
    fi
    if ! prefix=$(tools_root_prefix); then
        tools_missing+=("sudo apt-get install -y $package")
        return
    fi
    tools_say "$package" "installing: apt-get install $package ($why)"
    $prefix apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 \
        || tools_missing+=("sudo apt-get install -y $package")
}

# need_pip MODULE REQUIREMENT WHY: `import MODULE` works in the venv, else pip installs REQUIREMENT.
need_pip() {
    local module=$1 requirement=$2 why=$3
    need_python_venv
    if ! tools_venv_ready; then
        return
    fi
    if "$tools_venv/bin/python" -c "import $module" 2>/dev/null; then
        tools_say "$module" "ok"
        return
    fi
    tools_say "$module" "installing: pip install $requirement into target/tools/venv ($why)"
    "$tools_venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" \
        >/dev/null 2>&1 || tools_missing+=("$tools_venv/bin/python -m pip install $requirement")
}

# need_cargo_install COMMAND CRATE VERSION WHY [FEATURES...]: a program built from crates.io
# (`cargo install --locked`; with FEATURES, only those: --no-default-features --features) into
# target/tools/bin, once. The build itself goes outside the work tree, into
# ${FWI_TOOLS_CACHE:-~/.cache/fwi-tools}/CRATE-VERSION[+FEATURES], and target/tools/bin links
# to it: a fresh clone on the same machine (CI's) links it at once instead of compiling again
# (garage takes a quarter of an hour on 2 cores). Another VERSION or FEATURES builds anew.
need_cargo_install() {
    local cmd=$1 crate=$2 version=$3 why=$4
    shift 4
    local features stamp root args=() cache
    features=$(IFS=,; echo "$*")
    stamp="$crate $version${features:+ --features $features}"
    export PATH="$tools_dir/bin:$PATH"
    if [ -x "$tools_dir/bin/$cmd" ] && [ "$(cat "$tools_dir/bin/.$cmd.installed" 2>/dev/null)" = "$stamp" ]; then
        tools_say "$cmd" "ok"
        return
    fi
    cache=${FWI_TOOLS_CACHE:-${HOME:+$HOME/.cache/fwi-tools}}
    root=${cache:+$cache/$crate-$version${features:++$features}}
    root=${root:-$tools_dir}
    [ -n "$features" ] && args=(--no-default-features --features "$features")
    mkdir -p "$tools_dir/bin" "$root"
    if [ -x "$root/bin/$cmd" ]; then
        tools_say "$cmd" "ok (built before, in $root)"
    else
        tools_say "$cmd" "installing: cargo install $stamp ($why; a while, once)"
        if ! cargo install --quiet --locked --root "$root" "$crate" --version "$version" "${args[@]}" \
            >"$tools_dir/$crate-install.log" 2>&1 || [ ! -x "$root/bin/$cmd" ]; then
            tools_missing+=("cargo install --locked --root $root $crate --version $version ${args[*]}  # see $tools_dir/$crate-install.log")
            return
        fi
    fi
    [ "$root" = "$tools_dir" ] || ln -sfn "$root/bin/$cmd" "$tools_dir/bin/$cmd"
    echo "$stamp" >"$tools_dir/bin/.$cmd.installed"
}

# need_garage: the S3 object store the server's replicas share, with only its LMDB metadata
# engine: no SQLite, K2V or metrics to compile (a third less). It refuses to build without
# bundled-libs or system-libs; bundled-libs needs no system library.
need_garage() {
    need_cargo_install garage garage 2.5.0 "the S3 object store the server's replicas share" bundled-libs lmdb
}

# tools_check_done: stops with the commands to run if anything could not be installed.
tools_check_done() {
    if [ ${#tools_missing[@]} -gt 0 ]; then
        echo
        echo "error: some tools could not be installed; run these, then this script again:" >&2
        printf '    %s\n' "${tools_missing[@]}" >&2
        exit 1
    fi
}
