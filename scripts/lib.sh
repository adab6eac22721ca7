# shellcheck shell=bash
# Shared helpers of the scripts: checks that the machine has what MPS needs (installing Debian
# packages when running as root, and saying exactly what to install otherwise), free ports and
# readiness, stopping a process, and what the two load-test scripts share (settings, build, the
# demo network, the flags of a run against North Bank).

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

# running PID: the process exists and has not exited (a process a previous `--keep` left has no
# parent of ours to reap it, so it stays a zombie for a while after it exits).
running() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }

# stop_pid PID: SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, up to 10 s, SIGKILL.
stop_pid() {
    local pid=$1
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        running "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# The load tests of the demo network (scripts/loadtest, scripts/loadtest-instances).

# loadtest_settings: reads the environment both load-test scripts share into $repo, $demo
# (MPS_DEMO_DIR, default build/demo), $profile (MPS_PROFILE, default release), $payers
# (LOADTEST_PAYERS, default 1000) and $bin (the profile's binaries under CARGO_TARGET_DIR).
loadtest_settings() {
    repo=$(pwd)
    demo=${MPS_DEMO_DIR:-$repo/build/demo}
    profile=${MPS_PROFILE:-release}
    # shellcheck disable=SC2034 # read by the scripts that call this
    payers=${LOADTEST_PAYERS:-1000}
    # shellcheck disable=SC2034 # read by the scripts that call this
    case "$profile" in
        dev) bin=${CARGO_TARGET_DIR:-$repo/target}/debug ;;
        release) bin=${CARGO_TARGET_DIR:-$repo/target}/release ;;
        *) die "MPS_PROFILE is dev or release, not '$profile'" ;;
    esac
}

# loadtest_build: builds the demo's binaries and loadtest in $profile.
loadtest_build() {
    need_toolchain
    say "building the $profile binaries (the release profile takes a while: fat LTO)"
    # The demo's own build command first, the same packages, so the demo finds it done: cargo
    # unifies features over the packages of one command, and another set would build them all again.
    cargo build --locked -q --profile "$profile" -p mps-hsm -p mps-pki -p mps-authz -p mps-gateway -p mps-merchant -p mps-sim -p mps-settlement --bins
    cargo build --locked -q --profile "$profile" -p mps-loadtest --bins
}

# demo_pid_of NAME: the pid the demo recorded for NAME, if that process still runs from $demo.
demo_pid_of() {
    local name pid
    [ -f "$demo/pids" ] || return 1
    while read -r name pid; do
        if [ "$name" = "$1" ] && [ -r "/proc/$pid/cmdline" ] && grep -qF "$demo/" <<<"$(tr '\0' ' ' < "/proc/$pid/cmdline")"; then
            echo "$pid"
            return 0
        fi
    done < "$demo/pids"
    return 1
}

# listen_of FILE N: the Nth `listen = "..."` address of a configuration file.
listen_of() { sed -n 's/^listen = "\(.*\)"/\1/p' "$1" | sed -n "${2}p"; }

# loadtest_demo_up: the demo network under $demo, started (scripts/demo --keep) unless it runs.
loadtest_demo_up() {
    if demo_pid_of authz-A > /dev/null && demo_pid_of gateway > /dev/null; then
        say "reusing the demo running under $demo"
    else
        say "starting the demo under $demo (scripts/demo --keep)"
        mkdir -p "$(dirname "$demo")"
        MPS_PROFILE=$profile MPS_DEMO_DIR=$demo scripts/demo --keep > "$demo.loadtest-demo.log" 2>&1 ||
            { tail -n 20 "$demo.loadtest-demo.log" >&2; die "the demo did not start (log: $demo.loadtest-demo.log)"; }
    fi
}

# loadtest_bank_flags AUTHZ_CONFIG: sets the array bank_flags, the flags of every run against
# North Bank (bank A): payers registered through AUTHZ_CONFIG, the scheme's trust, the merchant
# Corner Coffee who signs every request.
loadtest_bank_flags() {
    # shellcheck disable=SC2034 # read by the scripts that call this
    bank_flags=(--authz-config "$1" --transport-key-file "$demo/bank-A/vendor-transport.key"
        --payers "$payers" --scheme-ca "$demo/pki/root.crt" --crl "$demo/pki/crls.pem"
        --merchant-id COFFEE-SHOP-01
        --merchant-cert "$demo/pki/merchant-coffee.crt" --merchant-key "$demo/pki/merchant-coffee.key")
}

# loadtest_authz_flags: sets the array authz_flags, the shape of the run straight to authz
# acting as the gateway: closed loop, 16 connections, 10 s, the mix.
loadtest_authz_flags() {
    # shellcheck disable=SC2034,SC2054 # read by the scripts that call this; the mix's commas are its own
    authz_flags=(--target authz --cert "$demo/pki/gateway-client.crt" --key "$demo/pki/gateway-client.key"
        --connections 16 --duration 10 --mix wrong-password=2,retransmit=2,bad-mac=2)
}
