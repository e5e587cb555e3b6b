#!/bin/bash
# fence-peer handler for two nodes without a cluster manager: outdate the peer's disk over
# ssh (another network than the replication link), so that it cannot be promoted with
# stale data. In drbd.conf:
#
#   disk     { fencing resource-only; }
#   handlers { fence-peer "/path/to/outdate-peer-ssh.sh"; }
#
# drbdadm runs it with DRBD_RESOURCE and DRBD_PEERS set. Exit codes are DRBD 8.4's:
#   3  the peer's disk is Inconsistent (a resync target): nothing to outdate
#   4  the peer's disk is Outdated now (or was already)
#   5  ssh could not reach the peer: it is assumed dead if our data is UpToDate. ssh
#      cannot tell a dead host from a broken management network (or a rejected key), so
#      where that matters use a handler that really fences (stonith, crm-fence-peer.sh)
#   6  the peer is Primary (refused to be outdated): we outdate ourselves
#   1  anything else: the handler failed, DRBD changes nothing
# UDRBD_FENCE_SSH replaces the ssh command (the tests run both nodes on one machine).

set -euo pipefail

ssh_cmd=${UDRBD_FENCE_SSH:-ssh -o BatchMode=yes -o ConnectTimeout=5}
resource=${DRBD_RESOURCE:?run by drbdadm fence-peer: DRBD_RESOURCE is not set}
peer=${DRBD_PEERS:?run by drbdadm fence-peer: DRBD_PEERS is not set}

rc=0
# shellcheck disable=SC2086  # ssh_cmd is a command with its options
$ssh_cmd "root@$peer" drbdadm outdate "$resource" || rc=$?
case $rc in
    0) exit 4 ;;
    255) exit 5 ;;      # ssh: no connection
    5) exit 3 ;;        # (-16) Disk state is lower than outdated
    17) exit 6 ;;       # (-2) Need access to UpToDate data: the peer is Primary
    *) exit 1 ;;
esac
