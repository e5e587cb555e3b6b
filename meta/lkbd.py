"""The last known size of each backing disk with internal metadata, as 8.4 keeps it in
``/var/lib/drbd/drbd-minor-N.lkbd`` ("SIZE<tab>PATH").

Internal metadata sits at the end of the disk. When the disk grows and the node goes down
before ``drbdadm resize`` moved the metadata (a crash, or a disk grown while the resource
was down), the end no longer holds it; this record says where the end was, so
``drbdmeta apply-al`` (the first step of ``up``) and ``check-resize`` can find it there and
move it. Written at attach, after every move, and by create-md/apply-al.

The directory is ``$UDRBD_STATE_DIR``, else ``$UDRBD_RUN_DIR`` when set (two nodes on one
machine keep apart), else ``/var/lib/drbd``.
"""
from __future__ import annotations

import os


def state_dir() -> str:
    return (os.environ.get("UDRBD_STATE_DIR") or os.environ.get("UDRBD_RUN_DIR")
            or "/var/lib/drbd")


def path(minor: int) -> str:
    return os.path.join(state_dir(), f"drbd-minor-{minor}.lkbd")


def record(minor: int | None, device: str, size: int) -> None:
    """Remember ``size`` as ``device``'s last known size (atomically; best effort: a
    node that cannot write it only loses this crash-recovery aid)."""
    if minor is None:
        return
    target = path(minor)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{size}\t{os.path.abspath(device)}\n")
        os.replace(tmp, target)
    except OSError:
        pass


def last_size(minor: int | None, device: str) -> int | None:
    """The size recorded for ``device`` under ``minor``, or None."""
    if minor is None:
        return None
    try:
        with open(path(minor)) as f:
            size, _, where = f.read().strip().partition("\t")
        if where == os.path.abspath(device):
            return int(size)
    except (OSError, ValueError):
        pass
    return None


def forget(minor: int | None, device: str) -> None:
    """Drop the record for ``device`` (its meta data was wiped)."""
    if last_size(minor, device) is not None:
        try:
            os.unlink(path(minor))  # type: ignore[arg-type]
        except OSError:
            pass
