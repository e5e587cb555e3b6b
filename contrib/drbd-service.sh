#!/usr/bin/env bash
# What udrbd's drbd.service runs, after drbd-utils' 8.4 init script:
#
#   drbd-service.sh start   "[", drbdadm up all (it prints create res / prepare disk /
#                           adjust disk / adjust net per resource), "]", then
#                           drbdadm wait-con-int: wait for the peers as each resource's
#                           startup { wfc-timeout; degr-wfc-timeout; } says, and
#                           drbdadm sh-b-pri all: primary where become-primary-on says so
#   drbd-service.sh stop    unmount the file systems on this node's DRBD devices,
#                           "Stopping all DRBD resources", drbdadm down all
#
# The tools come from $UDRBD_BIN (drbd.service sets it to the installed venv), else from
# the .venv of the checkout holding this script. drbdadm itself honours UDRBD_CONFIG,
# UDRBD_RUN_DIR and __DRBD_NODE__.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UDRBD_BIN=${UDRBD_BIN:-$(dirname "$here")/.venv/bin}
DRBDADM=$UDRBD_BIN/drbdadm

usage() {
    echo "usage: $0 start|stop" >&2
    exit 1
}

start() {
    local rc=0
    echo "["
    "$DRBDADM" up all || rc=$?
    echo "]"
    if [ "$rc" -ne 0 ]; then
        echo "drbdadm up all failed (exit code $rc)" >&2
        exit "$rc"
    fi
    # As the init script does: a peer that does not show up within the startup timeouts
    # leaves the resources running and waiting (WFConnection); the start still succeeds.
    "$DRBDADM" wait-con-int || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "drbdadm wait-con-int exited with code $rc; continuing without the peer" >&2
    fi
    # startup { become-primary-on }: promote where it names this host (failures are
    # reported by drbdadm and do not fail the start, as in the init script)
    "$DRBDADM" sh-b-pri all || true
}

# This node's DRBD device paths, one a line (nothing if the configuration does not load:
# drbdadm down reports that in its own words).
drbd_devices() {
    "$UDRBD_BIN/python" - 2>/dev/null <<'PY' || true
import os
from replicator.config import current_node, load_config
cfg = load_config(os.environ.get("UDRBD_CONFIG") or "/etc/drbd.conf")
node = current_node()
for res in cfg.resources_for(node):
    for vol in res.host_for(node).volumes:
        print(vol.device)
PY
}

# A device is held open while a file system on it is mounted, and DRBD refuses to go down
# then: unmount what is mounted from DEV, directly or through a loop device over it (how
# `mount /dev/drbd0 /mnt/test` mounts udrbd's device file). Innermost mounts first.
unmount_device() {
    local dev=$1 loop back src target
    local sources=("$dev")
    while read -r loop back; do
        if [ "$back" = "$dev" ]; then
            sources+=("$loop")
        fi
    done < <(losetup --list --noheadings --output NAME,BACK-FILE 2>/dev/null || true)
    for src in "${sources[@]}"; do
        while read -r target; do
            printf -v target '%b' "$target"     # findmnt -r writes a space as \x20
            if [ -n "$target" ] && [ "$target" != "$dev" ]; then
                umount "$target"
            fi
        done < <(findmnt --raw --noheadings --source "$src" --output TARGET 2>/dev/null | tac || true)
    done
}

stop() {
    local dev
    while read -r dev; do
        if [ -n "$dev" ]; then
            unmount_device "$dev"
        fi
    done < <(drbd_devices)
    echo "Stopping all DRBD resources"
    "$DRBDADM" down all
}

[ $# -eq 1 ] || usage
case $1 in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
