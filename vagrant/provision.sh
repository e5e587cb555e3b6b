#!/usr/bin/env bash
# Provision one udrbd demo VM (Vagrant runs it as root on node1 and node2; see README.md):
# install udrbd from the synced repository, link its tools into /usr/local/sbin, write the
# walk-through's /etc/drbd.conf with this VM's second disk as the backing disk, and install
# drbd.service (not started: `drbdadm create-md r0` comes first).
#
# Environment:
#   ROOT=/                 target root directory; every file this script writes goes under it
#   UDRBD_SRC=/opt/udrbd   the udrbd repository (Vagrant syncs the repo root there); it is
#                          read and built where it is (not under ROOT), and the links and
#                          the unit point to it
#   DISK=                  backing disk written into the config; default: the second disk,
#                          the first block device of $ROOT/dev/{vdb,sdb,xvdb} (libvirt,
#                          virtualbox, xen). It must be blank or carry DRBD metadata.
#   DRY_RUN=1              print the commands that change the machine (apt-get, make setup,
#                          systemctl) instead of running them; files are still written
#   SKIP_APT=1             do not run apt-get here (make setup still installs what it needs)
set -euo pipefail

R=${ROOT:-/}
R=${R%/}                      # "" for /, so "$R/etc" is /etc
UDRBD_SRC=${UDRBD_SRC:-/opt/udrbd}
DRY_RUN=${DRY_RUN:-0}
SKIP_APT=${SKIP_APT:-0}
TOOLS=(drbdadm drbdsetup drbdmeta drbdmon)
# what make setup needs before it can run on a fresh Debian box
APT_PREREQS=(make python3-venv)

say() { echo "provision: $*"; }
fail() {
    echo "provision: $*" >&2
    exit 1
}
run() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

# The backing disk: $DISK, else the VM's second disk. Prints the path as the VM sees it.
detect_disk() {
    local name
    if [ -n "${DISK:-}" ]; then
        echo "$DISK"
        return 0
    fi
    for name in vdb sdb xvdb; do
        if [ -b "$R/dev/$name" ]; then
            echo "/dev/$name"
            return 0
        fi
    done
    fail "no second disk: none of /dev/vdb, /dev/sdb, /dev/xvdb is a block device under" \
         "ROOT=${R:-/} (give the VM a second disk, or set DISK=/dev/...)"
}

# Refuse a disk holding anything but DRBD metadata (a file system made on /dev/drbd0 shows
# on the backing disk too, next to the DRBD signature, and is fine).
check_disk() {
    local dev=$1 sigs
    [ -b "$dev" ] || fail "$dev is not a block device"
    sigs=$(wipefs --noheadings --output TYPE "$dev") || fail "cannot read $dev (wipefs failed)"
    if [ -n "$sigs" ] && ! grep -qx drbd <<<"$sigs"; then
        fail "$dev is not blank and holds no DRBD metadata (found: $(echo "$sigs" | paste -sd, -));" \
             "refusing to use it as the backing disk (wipe it, or set DISK=)"
    fi
}

# /etc/drbd.conf exactly as in the walk-through, with this VM's backing disk.
write_config() {
    local disk=$1 conf=$R/etc/drbd.conf tmp
    mkdir -p "$R/etc"
    tmp=$(mktemp "$R/etc/.drbd.conf.XXXXXX")
    cat >"$tmp" <<CONF
global { usage-count no; }
common { syncer { rate 100M; } }
resource r0 {
protocol C;
startup {
wfc-timeout 15;
degr-wfc-timeout 60;
}
net {
cram-hmac-alg sha1;
shared-secret "secret";
}
on node1 {
device /dev/drbd0;
disk $disk;
address 192.168.122.122:7788;
meta-disk internal;
}
on node2 {
device /dev/drbd0;
disk $disk;
address 192.168.122.28:7788;
meta-disk internal;
}
}
CONF
    chmod 0644 "$tmp"
    mv -f "$tmp" "$conf"
    say "wrote $conf (disk $disk)"
}

link_tools() {
    local t target
    mkdir -p "$R/usr/local/sbin"
    for t in "${TOOLS[@]}"; do
        target=$UDRBD_SRC/.venv/bin/$t
        if [ "$DRY_RUN" != 1 ] && [ ! -x "$target" ]; then
            fail "$target is missing: did make setup fail?"
        fi
        ln -sfn "$target" "$R/usr/local/sbin/$t"
    done
    say "linked ${TOOLS[*]} into $R/usr/local/sbin -> $UDRBD_SRC/.venv/bin"
}

main() {
    local disk
    if [ ! -f "$UDRBD_SRC/Makefile" ] || [ ! -f "$UDRBD_SRC/scripts/install-service.sh" ]; then
        fail "no udrbd repository at $UDRBD_SRC (is the repo root synced there?)"
    fi
    disk=$(detect_disk)
    check_disk "$R$disk"

    if [ "$SKIP_APT" != 1 ]; then
        export DEBIAN_FRONTEND=noninteractive
        run apt-get update -qq
        run apt-get install -y -qq --no-install-recommends "${APT_PREREQS[@]}"
    fi
    run make -C "$UDRBD_SRC" setup

    link_tools
    write_config "$disk"
    ROOT=${R:-/} DRY_RUN=$DRY_RUN bash "$UDRBD_SRC/scripts/install-service.sh" "$UDRBD_SRC"
    say "done on $(uname -n): next, as root: drbdadm create-md r0; systemctl start drbd"
}

main "$@"
