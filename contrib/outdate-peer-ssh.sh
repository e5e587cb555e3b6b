#!/bin/bash
# fence-peer handler for two nodes without a cluster manager: outdate the peer's disk over
# ssh (another network than the replication link), so that it cannot be promoted with
# stale data. In drbd.conf:
#
#   disk     { fencing resource-only; }
#   handlers { fence-peer "/path/to/outdate-peer-ssh.sh"; }
#
# drbdadm runs it with DRBD_RESOURCE and DRBD_PEERS set. Exit codes are DRBD 8.4's:
#   4  the peer's disk is Outdated now (or was already)
#   5  the peer could not be reached (assumed dead if our data is UpToDate)
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
    17) exit 6 ;;       # (-2) Need access to UpToDate data: the peer is Primary
    *) exit 1 ;;
esac
