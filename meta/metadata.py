"""The metadata of one DRBD volume: what the daemon and drbdmeta both use.

Typical daemon use::

    md = Metadata.open("/dev/sdb1", "internal")     # or MetaSpec("/dev/sdc1", 0)
    notes = md.attach(al_extents=1237)              # refuses unclean metadata
    first, last = Bitmap.extents_of_range(off, len(data))
    md.al.begin_io(first, last)                     # commits an AL transaction if needed
    ... write data at off via md.backing.pwrite ...
    md.al.end_io(first, last)
    md.bitmap.set_range(off, len(data))             # while the peer is out of reach
    md.flush_bitmap()                               # now and then
    md.detach()                                     # clean shutdown

Every failure raises ``MetadataError`` whose text is one line naming the device.
"""
from __future__ import annotations

import dataclasses
import errno
import re
import threading
from dataclasses import dataclass, field

from meta import activity_log
from meta.activity_log import ActivityLog, ReplayResult, replay
from meta.al07 import replay_07
from meta.backing import BackingDevice, DeviceError
from meta.bitmap import PAGE, Bitmap
from meta.layout import (FLEX_EXTERNAL, INTERNAL, SECTOR, LayoutError, MetaLayout,
                         bm_bits_for_sectors, bm_bytes_for_sectors, compute_layout, data_sectors)
from meta.superblock import (MD_MAGIC_08, MD_MAGIC_84_UNCLEAN, MDF, Superblock, SuperblockError,
                             check_la_size, check_magic, validate)

BM_BYTES_PER_AL_EXT = 128          # 4 MiB / 4 KiB / 8 bits


class MetadataError(Exception):
    """One-line, user-facing metadata error (names the device)."""


class UncleanMetadata(MetadataError):
    """The activity log must be applied before attaching."""


@dataclass(frozen=True)
class MetaSpec:
    """A ``meta-disk``: internal, or an external device, flexible (index None) or indexed."""

    device: str | None = None
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> "MetaSpec":
        """``internal``, ``/dev/X`` (flexible) or ``/dev/X [N]`` / ``/dev/X[N]``."""
        text = text.strip()
        if text == "internal":
            return cls()
        m = re.fullmatch(r"(\S+?)\s*\[\s*(\d+)\s*\]", text)
        if m:
            return cls(m.group(1), int(m.group(2)))
        if not text or text.startswith("["):
            raise MetadataError(f"invalid meta-disk {text!r}")
        return cls(text)

    @property
    def md_index(self) -> int:
        if self.device is None:
            return INTERNAL
        return FLEX_EXTERNAL if self.index is None else self.index

    @property
    def is_internal(self) -> bool:
        return self.device is None

    def __str__(self) -> str:
        if self.device is None:
            return "internal"
        return self.device if self.index is None else f"{self.device} [{self.index}]"


@dataclass
class ApplyResult:
    """Outcome of ``apply_al``: drbdmeta's exit code and its stderr lines."""

    rc: int
    messages: list[str] = field(default_factory=list)
    additional_bits: int = 0


def ppsize(kb: int) -> str:
    """drbd-utils' ``ppsize``: KB with a unit, e.g. ``8192 KB``, ``16 MB``."""
    units = "KMGTPE"
    base = 0
    while kb >= 10000 and base < len(units) - 1:
        kb = (kb >> 10) + (1 if kb & (1 << 9) else 0)
        base += 1
    return f"{kb} {units[base]}B"


def _as_spec(spec: "MetaSpec | str") -> MetaSpec:
    return spec if isinstance(spec, MetaSpec) else MetaSpec.parse(spec)


def _md_error(path: str, e: Exception) -> MetadataError:
    if isinstance(e, DeviceError):
        return MetadataError(str(e))
    return MetadataError(f"'{path}': {e}")


class Metadata:
    """Open v08 metadata of one volume (superblock in memory, bitmap on demand).

    ``mddev`` holds the metadata; ``backing`` is the data device (the same
    object for internal metadata, ``None`` if an external-metadata volume was
    opened without its backing path).
    """

    def __init__(self, mddev: BackingDevice, layout: MetaLayout, sb: Superblock,
                 backing: BackingDevice | None):
        self.mddev = mddev
        self.layout = layout
        self.sb = sb
        self.backing = backing
        self.bitmap: Bitmap | None = None
        self.al: ActivityLog | None = None
        self.attached = False
        # superblock and bitmap writes from worker threads vs. moving the metadata
        self._io_lock = threading.RLock()
        self.moves = 0                 # relocate() calls: superblocks packed before are stale

    # -- opening -----------------------------------------------------------------------
    @staticmethod
    def open_devices(backing: str | None, spec: "MetaSpec | str", *, readonly: bool = False,
                     lock: bool = True) -> tuple[BackingDevice, BackingDevice | None]:
        """Open the meta device and (if given) the backing device; returns (mddev, backing)."""
        spec = _as_spec(spec)
        if spec.is_internal:
            if backing is None:
                raise MetadataError("internal meta data needs the backing device")
            dev = BackingDevice(backing, readonly=readonly, lock=lock)
            return dev, dev
        mddev = BackingDevice(spec.device, readonly=readonly, lock=lock)  # type: ignore[arg-type]
        try:
            data = BackingDevice(backing, readonly=readonly, lock=False) if backing else None
        except BaseException:
            mddev.close()
            raise
        return mddev, data

    @classmethod
    def probe(cls, mddev: BackingDevice, index: int,
              strict: bool = True) -> tuple[Superblock | None, MetaLayout, str]:
        """Read and check the superblock where ``index`` puts it.

        Returns (superblock or None, layout, reason it is invalid or "").
        ``strict=False`` skips the plausibility checks (see superblock.validate).
        """
        try:
            layout = compute_layout(mddev.size, index)
        except LayoutError as e:
            raise MetadataError(f"'{mddev.path}': {e}") from None
        sb = Superblock.unpack(mddev.pread(4096, layout.md_offset))
        try:
            check_magic(sb)
            layout = compute_layout(mddev.size, index, sb.al_stripes, sb.al_stripe_size_4k)
            validate(sb, layout, strict)
        except (SuperblockError, LayoutError) as e:
            return None, layout, str(e)
        return sb, layout, ""

    @classmethod
    def open(cls, backing: str | None, spec: "MetaSpec | str" = "internal", *,
             readonly: bool = False, lock: bool = True) -> "Metadata":
        """Open existing metadata; raise MetadataError if none is valid."""
        spec = _as_spec(spec)
        try:
            mddev, data = cls.open_devices(backing, spec, readonly=readonly, lock=lock)
        except DeviceError as e:
            raise MetadataError(str(e)) from None
        try:
            sb, layout, why = cls.probe(mddev, spec.md_index)
            if sb is None:
                raise MetadataError(f"'{mddev.path}': {why}")
            return cls(mddev, layout, sb, data)
        except BaseException as e:
            mddev.close()
            if data is not None and data is not mddev:
                data.close()
            if isinstance(e, (DeviceError, LayoutError)):
                raise _md_error(mddev.path, e) from None
            raise

    @classmethod
    def create(cls, backing: str | None, spec: "MetaSpec | str" = "internal", *,
               al_stripes: int = 1, al_stripe_size_4k: int = 8,
               peer_max_bio_size: int = 0) -> "Metadata":
        """Write fresh metadata (no questions asked; see drbdmeta for the checks)."""
        spec = _as_spec(spec)
        try:
            mddev, data = cls.open_devices(backing, spec)
        except DeviceError as e:
            raise MetadataError(str(e)) from None
        try:
            layout = compute_layout(mddev.size, spec.md_index, al_stripes, al_stripe_size_4k)
            md = cls(mddev, layout, Superblock.fresh(layout, peer_max_bio_size), data)
            md.write_fresh()
            return md
        except BaseException as e:
            mddev.close()
            if data is not None and data is not mddev:
                data.close()
            if isinstance(e, (DeviceError, LayoutError)):
                raise _md_error(mddev.path, e) from None
            raise

    def write_fresh(self, sb: Superblock | None = None, bitmap_bytes: bytes = b"") -> None:
        """Initialise the AL, write the bitmap (zeros after ``bitmap_bytes``), then the superblock.

        The superblock is written last with one pwrite, so an interrupted run
        leaves no valid-looking half-written metadata behind.
        """
        if sb is not None:
            self.sb = sb
        lay = self.layout
        activity_log.initialize(self.mddev, lay.al_offset, lay.al_stripes, lay.al_stripe_size_4k,
                                sync=False)
        size = min(self.zeroed_bitmap_bytes(), lay.bm_area_bytes)
        size = max(size, min(-(-len(bitmap_bytes) // PAGE) * PAGE, lay.bm_area_bytes))
        chunk = 8 << 20
        zeros = bytes(min(chunk, size))
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            part = bitmap_bytes[off:off + n]
            self.mddev.pwrite(part + zeros[:n - len(part)] if len(part) < n else part,
                              lay.bm_offset + off)
        self.mddev.fdatasync()
        self.write_superblock()

    def zeroed_bitmap_bytes(self) -> int:
        """Bitmap bytes create-md clears: what the data needs (drbdmeta: the md device size)."""
        if self.layout.is_internal or self.backing is None:
            return bm_bytes_for_sectors(self.layout.md_dev_bytes // SECTOR)
        return bm_bytes_for_sectors(self.data_sectors)

    # -- sizes ------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.mddev.path

    @property
    def data_sectors(self) -> int:
        """Usable data size in sectors (meta.layout.usable_data_size / 512)."""
        backing = self.backing.size if self.backing is not None else self.layout.md_dev_bytes
        return data_sectors(self.layout, backing)

    @property
    def data_bytes(self) -> int:
        return self.data_sectors * SECTOR

    # -- superblock ---------------------------------------------------------------------
    def read_superblock(self) -> Superblock:
        sb, layout, why = self.probe(self.mddev, self.layout.index)
        if sb is None:
            raise MetadataError(f"'{self.path}': {why}")
        self.sb, self.layout = sb, layout
        return sb

    def write_superblock(self) -> None:
        """Validate, then write the superblock with one pwrite and fdatasync."""
        self.write_superblock_image(self.superblock_image(), self.moves)

    def superblock_image(self, sb: Superblock | None = None) -> bytes:
        """The superblock as it is now (or ``sb``), validated and packed (to write later,
        with ``moves`` as it was when packed)."""
        try:
            validate(sb or self.sb, self.layout)
        except SuperblockError as e:
            raise MetadataError(f"'{self.path}': refusing to write superblock: {e}") from None
        return (sb or self.sb).pack()

    def write_superblock_image(self, image: bytes, moves: int) -> None:
        """Write a packed superblock; one packed before the metadata last moved
        (``moves`` differs) is packed again: its offsets and size are the old ones."""
        with self._io_lock:
            if moves != self.moves:
                image = self.superblock_image()
            self.mddev.pwrite(image, self.layout.md_offset)
        self.mddev.fdatasync()

    @property
    def uuids(self) -> list[int]:
        """[current, bitmap, history1, history2] (a copy)."""
        return list(self.sb.uuids)

    def set_uuids(self, uuids: list[int]) -> None:
        if len(uuids) != 4 or any(not 0 <= u < 1 << 64 for u in uuids):
            raise MetadataError("need four 64-bit UUIDs")
        self.sb.uuids = list(uuids)

    @property
    def flags(self) -> int:
        return self.sb.flags

    def set_flag(self, flag: int, on: bool = True) -> None:
        self.sb.set_flag(flag, on)

    def mark_unclean(self) -> None:
        """What the 8.4 kernel writes while attached: magic 84_UNCLEAN, AL_CLEAN cleared."""
        self.sb.magic = MD_MAGIC_84_UNCLEAN
        self.sb.set_flag(MDF.AL_CLEAN, False)
        self.write_superblock()

    def mark_clean(self) -> None:
        """Magic 08 and AL_CLEAN: apply-al has nothing to do."""
        self.sb.magic = MD_MAGIC_08
        self.sb.set_flag(MDF.AL_CLEAN, True)
        self.write_superblock()

    # -- bitmap -------------------------------------------------------------------------
    def load_bitmap(self) -> Bitmap:
        """Read the bitmap covering the usable data size into memory."""
        n = bm_bits_for_sectors(self.data_sectors)
        if -(-n // 8) > self.layout.bm_area_bytes:
            raise MetadataError(f"'{self.path}': bitmap area too small for {n} bits")
        self.bitmap = Bitmap.load(self.mddev, self.layout.bm_offset, n, self.data_bytes)
        return self.bitmap

    def flush_bitmap(self, everything: bool = False) -> int:
        """Write the dirty bitmap pages (all with ``everything``); returns pages written."""
        with self._io_lock:
            if self.bitmap is None:
                return 0
            n = self.bitmap.flush(self.mddev, self.layout.bm_offset, everything=everything,
                                  sync=False)
        if n:
            self.mddev.fdatasync()
        return n

    def _flush_extent_pages(self, extents: list[int]) -> None:
        with self._io_lock:
            if self.bitmap is None:
                return
            pages = [e * BM_BYTES_PER_AL_EXT // PAGE for e in extents]
            n = self.bitmap.flush(self.mddev, self.layout.bm_offset, pages=pages, sync=False)
        if n:
            self.mddev.fdatasync()

    # -- resize ---------------------------------------------------------------------------
    def layout_for_current_size(self) -> MetaLayout:
        """Re-read the devices' sizes and return the layout they call for now: internal
        meta data belongs at the end of the backing device, wherever that is now."""
        self.mddev.refresh_size()
        if self.backing is not None and self.backing is not self.mddev:
            self.backing.refresh_size()
        try:
            return compute_layout(self.mddev.size, self.layout.index, self.sb.al_stripes,
                                  self.sb.al_stripe_size_4k)
        except LayoutError as e:
            raise MetadataError(f"'{self.path}': {e}") from None

    @staticmethod
    def find_at_size(mddev: BackingDevice, last_size: int) -> tuple[Superblock, MetaLayout] | None:
        """Internal meta data where a disk of ``last_size`` bytes kept it (the disk has
        grown since, see meta.lkbd), or None."""
        if not 0 < last_size < mddev.size:
            return None
        try:
            layout = compute_layout(last_size, INTERNAL)
            sb = Superblock.unpack(mddev.pread(4096, layout.md_offset))
            check_magic(sb)
            layout = compute_layout(last_size, INTERNAL, sb.al_stripes, sb.al_stripe_size_4k)
            validate(sb, layout)
        except (SuperblockError, LayoutError, DeviceError):
            return None
        return sb, layout

    def move_to_end(self) -> MetaLayout:
        """Move internal meta data found by ``find_at_size`` (its activity log applied)
        to the end of the grown disk; the device keeps its last agreed size (it grows
        at the next connect or resize). Returns the new layout."""
        self.load_bitmap()
        layout = self.layout_for_current_size()
        self.relocate(layout, self.bitmap.resized(self.max_data_bytes(layout)),
                      self.sb.la_size_sect)
        self.bitmap = None
        return layout

    def max_data_bytes(self, layout: MetaLayout) -> int:
        """The data size the backing device offers with the meta data in ``layout``."""
        backing = self.backing.size if self.backing is not None else layout.md_dev_bytes
        return data_sectors(layout, backing) * SECTOR

    def check_move(self, layout: MetaLayout) -> None:
        """MetadataError if the meta data cannot move to ``layout`` (a disk that shrank
        under its internal meta data)."""
        if layout.is_internal and layout.md_offset < self.layout.md_offset:
            raise MetadataError(f"'{self.path}': the backing device shrank under its "
                                f"internal meta data")

    def relocate(self, layout: MetaLayout, bitmap: Bitmap, la_size_sect: int) -> None:
        """Write the meta data in ``layout`` with ``bitmap`` and the new last agreed size
        (after an online resize), in 8.4's order: the superblock first, flagged FULL_SYNC,
        so a crash before the end makes the next attach resync everything; then the
        activity log ring with what is hot now, the whole bitmap, the superblock again.
        Internal meta data moves to the new end of the disk, and the old superblock is
        wiped (the caller marks what becomes data area out of sync)."""
        self.check_move(layout)
        old_sb = self.layout.md_offset
        sb = self.sb
        with self._io_lock:
            self.moves += 1
            self.layout, self.bitmap = layout, bitmap
            sb.md_size_sect = layout.md_size_sect
            sb.al_offset, sb.bm_offset = layout.al_offset_sect, layout.bm_offset_sect
            sb.la_size_sect = la_size_sect
            first = dataclasses.replace(sb, uuids=list(sb.uuids))
            first.set_flag(MDF.FULL_SYNC, True)            # (on disk only, until the end)
            self.mddev.pwrite(self.superblock_image(first), layout.md_offset)
            self.mddev.fdatasync()
        if self.al is not None:       # (its lock before ours, as a transaction takes them)
            with self.al.lock:
                self.al.write_ring_at(layout.al_offset)
                self.mddev.fdatasync()
        else:
            self.initialize_al()
        with self._io_lock:
            bitmap.flush(self.mddev, layout.bm_offset, everything=True)
            self.write_superblock()
        if layout.is_internal and layout.md_offset != old_sb:
            # the copy left behind is valid-looking; wiped, it can never be taken for the
            # meta data (by meta.lkbd after a stale record, or on a disk shrunk back). It
            # lies past the device's size still: no data of the user's is there yet.
            self.mddev.pwrite(bytes(4096), old_sb)
            self.mddev.fdatasync()

    # -- activity log ----------------------------------------------------------------------
    def read_al(self) -> bytes:
        return self.mddev.pread(self.layout.al_size_bytes, self.layout.al_offset)

    def replay_al(self) -> ReplayResult:
        """Decode the on-disk AL (8.4 format, or the 8.3 one drbdmeta falls back to)."""
        al = self.read_al()
        if self._al_is_84(al):
            return replay(al, self.sb.al_stripes, self.sb.al_stripe_size_4k)
        return replay_07(al, self.sb.al_nr_extents)

    def _al_is_84(self, al: bytes) -> bool:
        magic = activity_log.AL_MAGIC.to_bytes(4, "big")
        return (self.sb.magic == MD_MAGIC_84_UNCLEAN or al[0:4] == magic
                or al[4096:4100] == magic or (self.sb.al_stripes, self.sb.al_stripe_size_4k) != (1, 8))

    def initialize_al(self) -> None:
        lay = self.layout
        activity_log.initialize(self.mddev, lay.al_offset, lay.al_stripes, lay.al_stripe_size_4k)

    def apply_al(self) -> ApplyResult:
        """drbdmeta apply-al: replay into the on-disk bitmap if PRIMARY_IND, mark clean.

        Works on the on-disk bitmap (the part ``la_size_sect`` covers, as
        drbdmeta does); must not be called while attached.
        """
        if self.attached:
            raise MetadataError(f"'{self.path}': apply-al while attached")
        res = ApplyResult(0)
        al = self.read_al()
        is84 = self._al_is_84(al)
        rep = (replay(al, self.sb.al_stripes, self.sb.al_stripe_size_4k) if is84
               else replay_07(al, self.sb.al_nr_extents))
        res.messages += rep.warnings
        reinit = not is84
        need = self.sb.has(MDF.PRIMARY_IND)
        if rep.status < 0:
            if need and not self.sb.has(MDF.FULL_SYNC):    # (a full sync covers it all:
                res.rc = 1 if rep.status == -errno.ENODATA else 2     # a crash while an
                return res                                  # online resize moved the AL)
            res.messages.append("Error ignored, no need to apply the AL")
            reinit = True
        if rep.status > 0 and need:
            res.additional_bits = self._set_extents_on_disk(rep.extents, res.messages)
        if reinit or rep.status > 0:
            self.initialize_al()
        if not self.sb.has(MDF.AL_CLEAN) or self.sb.magic != MD_MAGIC_08:
            self.mark_clean()
        return res

    def _set_extents_on_disk(self, extents: list[int], messages: list[str]) -> int:
        bm_bytes = bm_bytes_for_sectors(min(self.sb.la_size_sect, self.layout.max_data_sect))
        todo = []
        for ext in extents:
            if ext * BM_BYTES_PER_AL_EXT >= bm_bytes:
                messages.append(f"extent {ext} beyond end of bitmap!")
            else:
                todo.append(ext)
        if not todo:
            messages.append("Nothing to do.")
            return 0
        added = 0
        pages: dict[int, bytearray] = {}
        for ext in todo:
            pos = ext * BM_BYTES_PER_AL_EXT
            page = pos // PAGE
            if page not in pages:
                pages[page] = bytearray(self.mddev.pread(PAGE, self.layout.bm_offset + page * PAGE))
            buf, o = pages[page], pos % PAGE
            added += BM_BYTES_PER_AL_EXT * 8 - int.from_bytes(buf[o:o + 128], "little").bit_count()
            buf[o:o + BM_BYTES_PER_AL_EXT] = b"\xff" * BM_BYTES_PER_AL_EXT
        for page, buf in sorted(pages.items()):
            self.mddev.pwrite(buf, self.layout.bm_offset + page * PAGE)
        self.mddev.fdatasync()
        messages.append(f"Marked additional {ppsize(added * 4)} as out-of-sync based on AL.")
        return added

    # -- attach / detach (the daemon) -----------------------------------------------------
    def attach(self, al_extents: int = 257) -> list[str]:
        """Take the metadata into use, as the 8.4 kernel's attach does.

        Refuses unclean metadata (run apply-al first), loads the bitmap, honours
        FULL_SYNC, sets la_size_sect when it is still 0 (standalone rule), marks
        the superblock unclean and starts the activity log writer.  Returns
        kernel-style log lines worth logging.
        """
        notes: list[str] = []
        if not self.sb.is_clean:
            raise UncleanMetadata(f"'{self.path}': Found unclean meta data. "
                                  "Did you \"drbdadm apply-al\"?")
        try:
            check_la_size(self.sb, self.data_sectors)
        except SuperblockError as e:
            raise MetadataError(f"'{self.path}': {e}") from None
        bm = self.load_bitmap()
        if self.sb.has(MDF.FULL_SYNC):
            notes.append("Assuming that all blocks are out of sync (aka FullSync)")
            bm.set_all()
            self.flush_bitmap()
            self.sb.set_flag(MDF.FULL_SYNC, False)
        if self.sb.la_size_sect == 0:
            self.sb.la_size_sect = self.data_sectors
        self.sb.al_nr_extents = al_extents
        self.al = ActivityLog.resume(self.mddev, self.layout.al_offset, self.sb.al_stripes,
                                     self.sb.al_stripe_size_4k, al_extents,
                                     before_evict=self._flush_extent_pages)
        self.mark_unclean()
        self.attached = True
        return notes

    def detach(self) -> None:
        """Clean shutdown: flush the bitmap, empty the AL, mark clean, close."""
        if self.attached:
            self.flush_bitmap()
            self.initialize_al()
            self.al = None
            self.attached = False
            self.mark_clean()
        self.close()

    def close(self) -> None:
        if self.backing is not None and self.backing is not self.mddev:
            self.backing.close()
        self.mddev.close()

    def __enter__(self) -> "Metadata":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
