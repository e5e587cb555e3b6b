"""Generation identifier texts of drbdmeta v08: get-gi, show-gi, dstate, set-gi."""
from __future__ import annotations

from meta.metadata import ppsize
from meta.superblock import MDF

_GI_FLAGS = (MDF.CONSISTENT, MDF.WAS_UP_TO_DATE, MDF.PRIMARY_IND, MDF.CONNECTED_IND,
             MDF.FULL_SYNC, MDF.PEER_OUT_DATED, MDF.CRASHED_PRIMARY)

_ART_TOP = """
       +--<  Current data generation UUID  >-
       |               +--<  Bitmap's base data generation UUID  >-
       |               |                 +--<  younger history UUID  >-
       |               |                 |         +-<  older history  >-
       V               V                 V         V
"""
_ART_BOTTOM = """\
                                                                    ^ ^ ^ ^ ^ ^ ^
                                      -<  Data consistency flag  >--+ | | | | | |
                             -<  Data was/is currently up-to-date  >--+ | | | | |
                                  -<  Node was/is currently primary  >--+ | | | |
                                  -<  Node was/is currently connected  >--+ | | |
         -<  Node was in the progress of setting all bits in the bitmap  >--+ | |
                        -<  The peer's disk was out-dated or inconsistent  >--+ |
      -<  This node was a crashed primary, and has not seen its peer since   >--+

"""


def format_gi(uuids: list[int], flags: int) -> str:
    """``CURRENT:BITMAP:HIST1:HIST2:c:u:p:n:f:o:x`` plus newline."""
    bits = ":".join("1" if flags & f else "0" for f in _GI_FLAGS)
    return "".join(f"{u:016X}:" for u in uuids) + bits + "\n"


def format_show_gi(uuids: list[int], flags: int, la_size_sect: int,
                   la_peer_max_bio_size: int) -> str:
    """show-gi: the ASCII art, the flags line and the size lines."""
    f = MDF(flags & 0x1FF)
    disk = ("UpToDate" if f & MDF.WAS_UP_TO_DATE else "Outdated") if f & MDF.CONSISTENT \
        else "Inconsistent"
    line = (f"flags:{' crashed' if f & MDF.CRASHED_PRIMARY else ''} "
            f"{'Primary' if f & MDF.PRIMARY_IND else 'Secondary'}, "
            f"{'Connected' if f & MDF.CONNECTED_IND else 'StandAlone'}, {disk}"
            f"{', need full sync' if f & MDF.FULL_SYNC else ''}"
            f"{', peer Outdated' if f & MDF.PEER_OUT_DATED else ''}\n")
    out = [_ART_TOP, format_gi(uuids, flags), _ART_BOTTOM, line,
           f"meta-data: {'clean' if f & MDF.AL_CLEAN else 'need apply-al'}\n"]
    if la_size_sect:
        out.append(f"last agreed size: {ppsize(la_size_sect >> 1)} ({la_size_sect} sectors)\n")
        out.append(f"last agreed max bio size: {la_peer_max_bio_size} Byte\n")
    else:
        out.append("zero size device -- never seen peer yet?\n")
    return "".join(out)


def dstate(flags: int) -> str:
    """drbdmeta dstate: the disk state the flags imply."""
    if not flags & MDF.CONSISTENT:
        return "Inconsistent"
    if not flags & MDF.WAS_UP_TO_DATE:
        return "Outdated"
    return "UpToDate" if flags & MDF.PEER_OUT_DATED else "Consistent"


class SetGiError(ValueError):
    """A set-gi field is not a number / not 0 or 1 (drbdmeta exits 10)."""


def apply_set_gi(arg: str, uuids: list[int], flags: int) -> tuple[list[int], int]:
    """New (uuids, flags) from ``C:B:H1:H2:c:u:p:n:f:o:x``; empty fields keep values.

    UUIDs are hex (an optional 0x is accepted); flag fields must be 0 or 1.
    Fewer fields than eleven change only the given ones.
    """
    fields = arg.split(":")
    uuids = list(uuids)
    for i, text in enumerate(fields[:4]):
        if text:
            try:
                v = int(text, 16)
            except ValueError:
                raise SetGiError(f"'{text}' is not a number.") from None
            if not 0 <= v < 1 << 64:
                raise SetGiError(f"'{text}': Numerical result out of range")
            uuids[i] = v
    for text, flag in zip(fields[4:], _GI_FLAGS):
        if text:
            try:
                v = int(text, 0)
            except ValueError:
                raise SetGiError(f"'{text}' is not a number.") from None
            if v not in (0, 1):
                raise SetGiError(f"'{v}' is not 0 or 1.")
            flags = (flags | flag) if v else (flags & ~flag)
    return uuids, flags
