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
    need_package /usr/lib/softhsm/libsofthsm2.so softhsm2
    need_package softhsm2-util softhsm2
}
