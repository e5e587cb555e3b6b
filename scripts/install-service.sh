#!/usr/bin/env bash
# Install udrbd's drbd.service (contrib/drbd.service) into /etc/systemd/system.
#
#   scripts/install-service.sh [UDRBD_HOME]
#
# UDRBD_HOME: absolute path of the udrbd checkout (with its .venv) on the target system;
#             default: the checkout holding this script. It replaces @UDRBD_HOME@ in the unit.
# ROOT=/      target root directory: the unit goes to $ROOT/etc/systemd/system/drbd.service.
# DRY_RUN=1   print systemctl daemon-reload instead of running it.
# systemctl daemon-reload runs only for ROOT=/ on a machine where systemd is running
# (/run/systemd/system exists, as sd_booted(3) tests); otherwise the script says so.
# The unit is not enabled (neither is DRBD's own): start it with `systemctl start drbd`.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${1:-${UDRBD_HOME:-$src}}
root=${ROOT:-/}
dry_run=${DRY_RUN:-0}

fail() {
    echo "install-service: $*" >&2
    exit 1
}

case $home in
    /*) ;;
    *) fail "UDRBD_HOME must be an absolute path, not '$home'" ;;
esac
# the path goes into ExecStart= unquoted and through sed: keep it to plain characters
[[ $home =~ ^[A-Za-z0-9._/+-]+$ ]] || fail "unsupported characters in UDRBD_HOME '$home'"
home=${home%/}

template=$src/contrib/drbd.service
[ -f "$template" ] || fail "missing $template"
wrapper=$home/contrib/drbd-service.sh
if [ "$root" = / ] && [ ! -x "$wrapper" ]; then
    fail "$wrapper is missing or not executable: is UDRBD_HOME the udrbd checkout?"
fi
if [ "$root" != / ] && [ ! -x "${root%/}$wrapper" ] && [ ! -x "$wrapper" ]; then
    echo "install-service: note: $wrapper does not exist (yet)"
fi

unit_dir=${root%/}/etc/systemd/system
unit=$unit_dir/drbd.service
mkdir -p "$unit_dir"
tmp=$(mktemp "$unit_dir/.drbd.service.XXXXXX")
trap 'rm -f "$tmp"' EXIT
sed "s|@UDRBD_HOME@|$home|g" "$template" >"$tmp"
if grep -q '@[A-Z_]*@' "$tmp"; then
    fail "unsubstituted placeholder left in $unit"
fi
chmod 0644 "$tmp"
mv -f "$tmp" "$unit"
trap - EXIT
echo "install-service: installed $unit (udrbd in $home)"

if [ "$root" != / ]; then
    echo "install-service: ROOT=$root is not this system: skipped systemctl daemon-reload"
elif [ ! -d /run/systemd/system ]; then
    echo "install-service: systemd is not running on this machine (no /run/systemd/system):" \
         "skipped systemctl daemon-reload"
elif [ "$dry_run" = 1 ]; then
    echo "would run: systemctl daemon-reload"
else
    systemctl daemon-reload
    echo "install-service: systemctl daemon-reload done; start it with: systemctl start drbd"
fi
