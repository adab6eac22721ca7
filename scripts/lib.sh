# shellcheck shell=bash
# Shared helpers of scripts/test and scripts/demo: checks that the machine has what MPS needs,
# installing Debian packages when running as root, and saying exactly what to install otherwise.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_package <command-or-file> <debian-package>
need_package() {
    local probe=$1 package=$2
    if [ -e "$probe" ] || command -v "$probe" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing $package (apt-get)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null || die "could not install $package"
        fi
    else
        die "$package is missing: install it with 'sudo apt-get install $package' and run this again"
    fi
}

need_toolchain() {
    command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust with rustup (https://rustup.rs), then run this again"
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: run 'rustup component add rustfmt'"
    cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: run 'rustup component add clippy'"
    need_package gcc gcc
    need_package openssl openssl
    need_package curl curl
    # The demo's scripted day (also run by tests/tests/network_day.rs) reads JSON with jq.
    need_package jq jq
    need_package /usr/lib/softhsm/libsofthsm2.so softhsm2
    need_package softhsm2-util softhsm2
}

# free_port VAR: sets VAR to a TCP port of 127.0.0.1 that nothing listens on now, drawn at
# random from 10000 up to the kernel's ephemeral range (net.ipv4.ip_local_port_range), and never
# one this shell handed out before (MPS_PORTS_TAKEN). A port inside the ephemeral range could be
# taken by any outgoing connection between this check and the service's bind.
free_port() {
    local candidate low=32768 span
    read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
    span=$((low > 10100 ? low - 10000 : 100))
    for _ in $(seq 1 200); do
        candidate=$((10000 + (RANDOM * 32768 + RANDOM) % span))
        case " ${MPS_PORTS_TAKEN:-} " in *" $candidate "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
            MPS_PORTS_TAKEN="${MPS_PORTS_TAKEN:-} $candidate"
            printf -v "$1" '%s' "$candidate"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

# wait_ready URL PID LOG [SECONDS]: polls URL until it answers 200 (at most SECONDS, default
# 30); stops with the end of LOG when the process PID has died or time runs out.
wait_ready() {
    local url=$1 pid=$2 log=$3 polls=$((${4:-30} * 10))
    for _ in $(seq 1 "$polls"); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2
            die "the process behind $url stopped (log: $log)"
        fi
        sleep 0.1
    done
    tail -n 20 "$log" >&2
    die "$url was not ready within ${4:-30} s (log: $log)"
}
