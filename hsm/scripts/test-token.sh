#!/usr/bin/env bash
# Creates a throwaway SoftHSM2 token for tests and the demo, with its own softhsm2.conf and
# token directory (never the system-wide /var/lib/softhsm), and prints the environment that
# points the MPS binaries at it:
#
#   eval "$(hsm/scripts/test-token.sh demo)"
#   cargo run -p mps-hsm -- keys init --transport-key demo
#
# Usage: test-token.sh [NAME] [--dir DIR] [--label LABEL] [--reset]
#   NAME     token name (default: dev); directory <repo>/target/softhsm/NAME, label mps-NAME
#   --dir    token directory instead of <repo>/target/softhsm/NAME
#   --label  token label instead of mps-NAME
#   --reset  delete an existing token of that directory first (default: reuse it)
#
# The exports are config overrides of mps-hsm (and of `pki --hsm-config`), in the
# MPS_HSM__<KEY> style every MPS binary uses: MPS_HSM__MODULE_PATH, MPS_HSM__TOKEN_LABEL,
# MPS_HSM__PIN_FILE; plus SOFTHSM2_CONF. PINs are random (or taken from MPS_HSM_PIN /
# MPS_HSM_SO_PIN when set), written to user.pin and so.pin (mode 0600) in the token
# directory; the user PIN is passed on as MPS_HSM__PIN_FILE. No MPS key needs the security
# officer (every issuer key is a private object of the user); so.pin is there for token
# administration only. PINs are never printed. Installs the
# softhsm2 package with apt-get when it is missing and this runs as root; otherwise says what
# to install. Everything but the export lines goes to stderr.
set -euo pipefail

name=dev
dir=
label=
reset=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
        --label) label=${2:?--label needs a label}; shift 2 ;;
        --reset) reset=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "test-token.sh: unknown option $1" >&2; exit 2 ;;
        *) name=$1; shift ;;
    esac
done
case "$name" in
    *[!A-Za-z0-9_-]*|'') echo "test-token.sh: NAME must be letters, digits, '-' or '_'" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${dir:-$repo/target/softhsm/$name}
label=${label:-mps-$name}

if ! command -v softhsm2-util >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-token.sh: installing softhsm2 with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >&2
    else
        echo "test-token.sh: softhsm2 is not installed. Install it as root:" >&2
        echo "    apt-get install softhsm2        # Debian, Ubuntu" >&2
        echo "    dnf install softhsm             # Fedora, RHEL" >&2
        exit 1
    fi
fi

module=
for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib64/pkcs11/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    if [ -f "$candidate" ]; then module=$candidate; break; fi
done
if [ -z "$module" ]; then
    echo "test-token.sh: libsofthsm2.so not found in the usual places" >&2
    exit 1
fi

if [ "$reset" = 1 ] && [ -d "$dir" ]; then
    rm -rf "$dir"
fi
mkdir -p "$dir/tokens"
conf=$dir/softhsm2.conf
cat > "$conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

export SOFTHSM2_CONF=$conf
if softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *$label *\$"; then
    echo "test-token.sh: reusing token '$label' in $dir" >&2
else
    umask 077
    # PINs from MPS_HSM_PIN / MPS_HSM_SO_PIN when set (a demo that wants fixed PINs), else random.
    if [ -n "${MPS_HSM_PIN:-}" ]; then printf '%s' "$MPS_HSM_PIN" > "$dir/user.pin"
    else od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$dir/user.pin"; fi
    if [ -n "${MPS_HSM_SO_PIN:-}" ]; then printf '%s' "$MPS_HSM_SO_PIN" > "$dir/so.pin"
    else od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > "$dir/so.pin"; fi
    softhsm2-util --init-token --free --label "$label" \
        --so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" >&2
    echo "test-token.sh: created token '$label' in $dir" >&2
fi

cat <<EXPORTS
export SOFTHSM2_CONF='$conf'
export MPS_HSM__MODULE_PATH='$module'
export MPS_HSM__TOKEN_LABEL='$label'
export MPS_HSM__PIN_FILE='$dir/user.pin'
EXPORTS
