"""drbdmeta: the DRBD v08 metadata tool, compatible with drbd-utils' drbdmeta.

Usage (as drbdadm-84 calls it)::

    drbdmeta [--force] MINOR v08 DEVICE INDEX COMMAND [ARGS]

DEVICE holds the metadata: the backing disk for ``internal``, the meta device
for ``flex-external`` (alias ``flexible``) or an index ``N``.  We also accept
``MINOR v08 BACKING METADEV INDEX COMMAND`` (the backing disk is then checked
for existence and used to size the bitmap on create-md).  Unlike drbd-utils,
regular files are accepted without --force: a plain file is a valid backing
disk for udrbd.  Texts, streams and exit codes follow drbd-utils 9.22.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from meta import dumpmd, gi, lkbd
from meta.backing import BackingDevice, DeviceBusy, DeviceError
from meta.detect import SO_MUCH, detect
from meta.layout import (FLEX_EXTERNAL, INTERNAL, MAX_AL_4K, MIN_MD_DEVICE_BYTES,
                         LayoutError, MetaLayout, bm_bytes_for_sectors, compute_layout)
from meta.metadata import Metadata, MetadataError
from meta.superblock import (MD_MAGIC_07, MD_MAGIC_08, MD_MAGIC_09, MD_MAGIC_84_UNCLEAN, MDF,
                             Superblock)

USAGE_COMMANDS = [
    "get-gi --node-id {val} ", "show-gi --node-id {val} ", "dump-md ", "restore-md file",
    "verify-dump file", "apply-al ", "wipe-md ", "outdate ", "invalidate ", "dstate ",
    "check-resize ",
    "create-md [--peer-max-bio-size {val}] [--al-stripes {val}] [--al-stripe-size-kB {val}] "
    "{max_peers}",
]
# name -> modifies metadata
COMMANDS = {"get-gi": False, "show-gi": False, "dump-md": False, "restore-md": True,
            "verify-dump": False, "apply-al": True, "wipe-md": True, "outdate": True,
            "invalidate": True, "dstate": False, "read-dev-uuid": False, "write-dev-uuid": True,
            "set-gi": True, "check-resize": True, "create-md": True, "forget-peer": True}


class Exit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@dataclass
class Options:
    force: bool = False
    verbose: int = 0
    ignore_sanity_checks: bool = False
    peer_max_bio_size: int = 0
    node_id: int = -1
    al_stripes: int = 1
    al_stripe_size_4k: int = 8
    al_stripes_used: bool = False
    args: list[str] = field(default_factory=list)


def out(text: str) -> None:
    sys.stdout.write(text)


def err(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()


def usage() -> "Exit":
    lines = ["", "USAGE: drbdmeta [--force] DEVICE FORMAT [FORMAT ARGS...] COMMAND [CMD ARGS...]",
             "", "FORMATS:", "  v08 device index", "", "COMMANDS:"]
    lines += [f"  {c}" for c in USAGE_COMMANDS]
    out("\n".join(lines) + "\n")
    return Exit(20)


def _number(text: str, default_unit: str = "") -> int:
    """drbd-utils m_strtoll: a number with an optional K/M/G/s unit."""
    shifts = {"": 0, "k": 10, "K": 10, "m": 20, "M": 20, "g": 30, "G": 30, "s": 9}
    base_shift = -10 if default_unit == "k" else 0
    digits = text.rstrip("kKmMgGs")
    unit = text[len(digits):]
    if not digits.isdigit() or len(unit) > 1:
        err(f"{text} is not a valid number\n")
        raise Exit(20)
    value, shift = int(digits), base_shift + shifts[unit]
    return -(-value >> -shift) if shift < 0 else value << shift


def parse_options(argv: list[str]) -> Options:
    """GNU getopt_long style: options may appear anywhere, ``--`` ends them."""
    o = Options()
    longs = {"force": False, "verbose": False, "ignore-sanity-checks": False,
             "peer-max-bio-size": True, "node-id": True, "al-stripes": True,
             "al-stripe-size-kB": True}
    shorts = {"f": "force", "v": "verbose", "p": "peer-max-bio-size", "i": "node-id",
              "s": "al-stripes", "z": "al-stripe-size-kB"}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            o.args += argv[i:]
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            matches = [n for n in longs if n == name] or [n for n in longs if n.startswith(name)]
            if len(matches) != 1:
                err(f"drbdmeta: unrecognized option '{a}'\n")
                raise usage()
            name = matches[0]
            if longs[name] and not eq:
                if i >= len(argv):
                    err(f"drbdmeta: option '--{name}' requires an argument\n")
                    raise usage()
                val, i = argv[i], i + 1
        elif a.startswith("-") and len(a) == 2 and a[1] in shorts:
            name = shorts[a[1]]
            if longs[name]:
                if i >= len(argv):
                    raise usage()
                val, i = argv[i], i + 1
        else:
            o.args.append(a)
            continue
        if name == "force":
            o.force = True
        elif name == "verbose":
            o.verbose += 1
        elif name == "ignore-sanity-checks":
            o.ignore_sanity_checks = True
        elif name == "peer-max-bio-size":
            o.peer_max_bio_size = _number(val)
            if not 0 <= o.peer_max_bio_size <= 1 << 20:
                err("peer-max-bio-size out of range (0...1M)\n")
                raise Exit(10)
        elif name == "node-id":
            o.node_id = _number(val)
            if not 0 <= o.node_id <= 31:
                err("node-id out of range (0...31)\n")
                raise Exit(10)
        elif name == "al-stripes":
            o.al_stripes, o.al_stripes_used = _number(val), True
        else:
            o.al_stripe_size_4k, o.al_stripes_used = _number(val, "k") // 4, True
    return o


def parse_index(text: str) -> int | None:
    """v07_parse: internal, flex-internal, flex-external (or flexible), or 0..255."""
    named = {"internal": INTERNAL, "flex-internal": INTERNAL, "flex-external": FLEX_EXTERNAL,
             "flexible": FLEX_EXTERNAL}
    if text in named:
        return named[text]
    try:
        v = int(text, 0)
    except ValueError:
        return None
    return v if 0 <= v <= 255 else None


def check_minor(text: str) -> None:
    if text == "-" or text.isdigit() or (text.startswith("/dev/drbd") and text[9:].isdigit()):
        return
    err(f"Cannot determine minor device number of drbd device '{text}'\n")
    raise Exit(20)


class Tool:
    """One drbdmeta invocation on one metadata device."""

    def __init__(self, opts: Options, minor: str, device: str, index: int,
                 backing: str | None, argv: list[str]):
        """``argv``: the command line without the program name (for the dump header)."""
        self.o = opts
        self.minor = minor
        self.device = device
        self.index = index
        self.backing = backing if backing is not None else (device if index == INTERNAL else None)
        self.argv = argv
        self.dev: BackingDevice | None = None
        self.stale = False
        self.command = ""

    # -- helpers ---------------------------------------------------------------------
    def confirmed(self, text: str) -> bool:
        err(f"\n{text}\n")
        if self.o.force:
            err("*** confirmation forced via --force option ***\n")
            return True
        if not sys.stdin.isatty():
            err("stdin not a TTY, not waiting for confirmation\n")
            return False
        err("[need to type 'yes' to confirm] ")
        answer = sys.stdin.readline()
        err("\n")
        return len(answer) == 4 and answer.startswith("yes")

    def open(self, modifies: bool) -> BackingDevice:
        """Open the meta device; a busy device is only readable (the daemon holds it).

        Like drbdmeta, a block device holding internal or flexible metadata is
        opened O_EXCL to modify it; if that fails (mounted?) we ask first.
        """
        if self.dev is not None:
            return self.dev
        exclusive = modifies and self.index < 0
        try:
            try:
                self.dev = BackingDevice(self.device, readonly=not modifies, exclusive=exclusive)
            except DeviceBusy as e:
                if not e.exclusive_open:
                    raise
                err(f"{e}\n")
                if (not self.o.force and self.command == "apply-al") or \
                        not self.confirmed("Exclusive open failed. Do it anyways?"):
                    out("Operation canceled.\n")
                    raise Exit(20)
                self.dev = BackingDevice(self.device, readonly=False)
        except DeviceBusy:
            if modifies:
                err(f"Device '{self.minor}' is configured! ('{self.device}' is in use by "
                    "another process)\n")
                raise Exit(20)
            self.dev = BackingDevice(self.device, readonly=True, lock=False)
            self.stale = True
        except DeviceError as e:
            err(f"{e}\n")
            raise Exit(20)
        if self.dev.size < MIN_MD_DEVICE_BYTES:
            err(f"{self.device} is only {self.dev.size} bytes. That's not enough.\n")
            raise Exit(10)
        if self.backing and self.backing != self.device and not os.path.exists(self.backing):
            err(f"'{self.backing}': No such file or directory\n")
            raise Exit(20)
        return self.dev

    def layout(self, stripes: int = 1, size_4k: int = 8) -> MetaLayout:
        assert self.dev is not None
        try:
            return compute_layout(self.dev.size, self.index, stripes, size_4k)
        except LayoutError as e:
            err(f"'{self.device}': {e}\n")
            raise Exit(10)

    def metadata(self, quiet_invalid: bool = False, modifies: bool = False) -> Metadata:
        """Open and validate; on failure print the reason (and drbdmeta's line) and exit 1.

        Metadata that passes drbdmeta's own checks but fails our plausibility
        checks (damaged bytes) is refused, except that ``--force`` lets the
        read-only commands show it, with a warning.
        """
        dev = self.dev or self.open(False)
        try:
            sb, layout, why = Metadata.probe(dev, self.index, strict=False)
            damage = Metadata.probe(dev, self.index, strict=True)[2] if sb is not None else ""
        except MetadataError as e:
            err(f"{e}\n")
            raise Exit(10)
        if sb is not None and damage:
            if self.o.force and not modifies:
                err(f"'{self.device}': warning: {damage}\n")
            else:
                sb, why = None, damage + ("" if modifies else " (use --force to read it anyway)")
        if sb is None:
            err(f"'{self.device}': {why}\n")
            if not quiet_invalid:
                err("No valid meta data found\n")
            raise Exit(1)
        return Metadata(dev, layout, sb, None)

    def clip_la_size(self, md: Metadata) -> None:
        if md.sb.la_size_sect > md.layout.max_data_sect:
            out(f"# la-size-sect was too big ({md.sb.la_size_sect}), truncated "
                f"({md.layout.max_data_sect})!\n")
            md.sb.la_size_sect = md.layout.max_data_sect

    # -- a disk grown under its internal meta data (meta.lkbd) ----------------------------
    def minor_number(self) -> int | None:
        m = self.minor.removeprefix("/dev/drbd")
        return int(m) if m.isdigit() else None

    def remember_size(self) -> None:
        if self.index == INTERNAL and self.dev is not None and not self.stale:
            lkbd.record(self.minor_number(), self.device, self.dev.size)

    def move_if_grown(self) -> None:
        """The disk grew since its internal meta data was last seen at its end (a crash
        before ``resize`` moved it, or grown while down): apply its activity log where it
        is, then move it to the new end."""
        if self.index != INTERNAL:
            return
        dev = self.open(True)
        if Metadata.probe(dev, self.index)[0] is not None:
            return
        last = lkbd.last_size(self.minor_number(), self.device)
        found = Metadata.find_at_size(dev, last) if last else None
        if found is None:
            return
        md = Metadata(dev, found[1], found[0], dev)
        res = md.apply_al()
        for line in res.messages:
            err(line + "\n")
        if res.rc:
            raise Exit(res.rc)
        md.move_to_end()
        err(f"'{self.device}' grew from {last} to {dev.size} bytes since its meta data was "
            "last seen: moved it from there to the new end\n")

    # -- commands ------------------------------------------------------------------------
    def cmd_get_gi(self, args: list[str]) -> int:
        md = self.metadata(quiet_invalid=True)
        out(gi.format_gi(md.uuids, md.flags))
        return 0

    def cmd_show_gi(self, args: list[str]) -> int:
        md = self.metadata(quiet_invalid=True)
        out(gi.format_show_gi(md.uuids, md.flags, md.sb.la_size_sect,
                              md.sb.la_peer_max_bio_size))
        return 0

    def cmd_dstate(self, args: list[str]) -> int:
        md = self.metadata()
        out(gi.dstate(md.flags) + "\n")
        return 0

    def cmd_read_dev_uuid(self, args: list[str]) -> int:
        md = self.metadata(quiet_invalid=True)
        out(f"{md.sb.device_uuid:016X}\n")
        return 0

    def cmd_write_dev_uuid(self, args: list[str]) -> int:
        if not args:
            err("Required Argument missing\n")
            raise Exit(10)
        md = self.metadata(quiet_invalid=True, modifies=True)
        try:
            md.sb.device_uuid = int(args[0], 16) & ((1 << 64) - 1)
        except ValueError:
            err(f"'{args[0]}' is not a number.\n")
            raise Exit(10)
        md.write_superblock()
        return 0

    def cmd_dump_md(self, args: list[str]) -> int:
        md = self.metadata()
        clean = md.sb.is_clean
        if not clean:
            err("Found meta data is \"unclean\", please apply-al first\n")
            if not self.o.force:
                return 1
        self.clip_la_size(md)
        lay = md.layout
        bm_bytes = bm_bytes_for_sectors(md.sb.la_size_sect)
        bitmap = md.mddev.pread(bm_bytes, lay.bm_offset) if bm_bytes else b""
        header = dumpmd.dump_header(["drbdmeta"] + self.argv, os.uname().nodename)
        text, _ = dumpmd.format_dump(md.sb, lay.md_offset, lay.al_offset, lay.bm_offset, bitmap,
                                     header, unclean=not clean)
        out(text)
        return 0

    def cmd_apply_al(self, args: list[str]) -> int:
        self.move_if_grown()
        md = self.metadata(modifies=True)
        res = md.apply_al()
        for line in res.messages:
            err(line + "\n")
        if res.rc == 0:
            self.remember_size()
        return res.rc

    def cmd_outdate(self, args: list[str]) -> int:
        md = self.metadata(quiet_invalid=True, modifies=True)
        if not md.flags & MDF.CONSISTENT:
            err("Device is inconsistent.\n")
            return 5
        md.set_flag(MDF.WAS_UP_TO_DATE, False)
        md.write_superblock()
        return 0

    def cmd_invalidate(self, args: list[str]) -> int:
        md = self.metadata(quiet_invalid=True, modifies=True)
        md.set_flag(MDF.CONSISTENT | MDF.WAS_UP_TO_DATE, False)
        md.set_flag(MDF.FULL_SYNC, True)
        md.write_superblock()
        return 0

    def cmd_set_gi(self, args: list[str]) -> int:
        if len(args) > 1:
            err("Ignoring additional arguments\n")
        if not args:
            err("Required Argument missing\n")
            return 10
        md = self.metadata(quiet_invalid=True, modifies=True)
        try:
            uuids, flags = gi.apply_set_gi(args[0], md.uuids, md.flags)
        except gi.SetGiError as e:
            err(f"{e}\n")
            return 10
        out("previously " + gi.format_gi(md.uuids, md.flags))
        out("set GI to  " + gi.format_gi(uuids, flags))
        if not self.confirmed("Write new GI to disk?"):
            out("Operation canceled.\n")
            return 0
        md.set_uuids(uuids)
        md.sb.flags = flags
        md.write_superblock()
        return 0

    def cmd_wipe_md(self, args: list[str]) -> int:
        dev = self.open(True)
        sb, layout, _ = Metadata.probe(dev, self.index, strict=False)
        if sb is None:
            err("There appears to be no drbd meta data to wipe out?\n")
            return 0
        if not self.confirmed("Do you really want to wipe out the DRBD meta data?"):
            out("Operation cancelled.\n")
            return 1
        out("Wiping meta data...\n")
        dev.pwrite(bytes(4096), layout.md_offset)
        dev.fsync()
        if self.index == INTERNAL:            # nothing to find at a last known size either
            lkbd.forget(self.minor_number(), self.device)
        out("DRBD meta data block successfully wiped out.\n")
        return 0

    def cmd_check_resize(self, args: list[str]) -> int:
        dev = self.open(True)
        self.move_if_grown()
        sb, _, why = Metadata.probe(dev, self.index)
        if sb is not None:
            self.remember_size()
            return 0
        if self.index != INTERNAL:
            err("Operation only supported for >= v8 internal meta data\n")
        else:
            err(f"'{self.device}': {why}\nno suitable meta data found :(\n")
        return 1

    def cmd_forget_peer(self, args: list[str]) -> int:
        err("forget-peer is a v09 (DRBD 9) command; not supported for v08 meta data\n")
        return 20

    # -- create-md / restore-md ------------------------------------------------------------
    def existing_md_check(self) -> None:
        """check_internal/external_md_flavours: ask before overwriting metadata."""
        assert self.dev is not None
        dev, lay = self.dev, self.layout()
        raw = Superblock.unpack(dev.pread(4096, lay.md_offset))
        found = None
        if raw.magic in (MD_MAGIC_08, MD_MAGIC_84_UNCLEAN):
            sb, _, _ = Metadata.probe(dev, self.index, strict=False)
            found = "v08" if sb is not None else None
        elif raw.magic == MD_MAGIC_09:
            found = "v09"
        elif raw.magic == MD_MAGIC_07:
            found = "v07"
        if found is None:
            return
        if self.index == INTERNAL:
            err("You want me to create a v08 style flexible-size internal meta data block.\n"
                f"There appears to be a {found} flexible-size internal meta data block\n"
                f"already in place on {self.device} at byte offset {lay.md_offset}\n")
            question = "Do you really want to overwrite the existing meta-data?"
        else:
            question = "Valid meta data seems to be in place.\nDo you really want to overwrite?"
        if found != "v08":   # we do not convert other versions: only replace them
            question = (f"So you want me to replace the {found} meta-data\n"
                        "with newly initialized v08 meta-data?")
        if not self.confirmed(question):
            out("Operation cancelled.\n")
            raise Exit(1)

    def existing_data_check(self, lay: MetaLayout) -> None:
        """check_for_existing_data: refuse or ask when the device holds a filesystem."""
        assert self.dev is not None
        f = detect(self.dev.pread(min(SO_MUCH, self.dev.size), 0))
        if f is None:
            return
        out(f"md_offset {lay.md_offset}\nal_offset {lay.al_offset}\nbm_offset {lay.bm_offset}\n")
        out(f"\nFound {f.kind}\n")
        max_usable_kb = lay.max_data_sect >> 1
        if f.used_bytes or f.refuse:
            if self.index >= 0 or self.index == FLEX_EXTERNAL:
                out("\nThis would corrupt existing data.\n")
                if self.o.ignore_sanity_checks:
                    out("\nIgnoring sanity check on user request.\n\n")
                    return
                out("If you want me to do this, you need to zero out the first part\n"
                    "of the device (destroy the content).\nYou should be very sure that you "
                    "mean it.\nOperation refused.\n\n")
                raise Exit(40)
            if not f.refuse:
                out(f"{-(-f.used_bytes // 1024):12d} kB data area apparently used\n")
            out(f"{max_usable_kb:12d} kB left usable by current configuration\n")
            if f.size_unknown:
                out("Could not determine the size of the actually used data area.\n\n")
            if f.refuse:
                out("Device size would be truncated, which\nwould corrupt data and result in\n"
                    "'access beyond end of device' errors.\n")
                if self.o.ignore_sanity_checks:
                    out("\nIgnoring sanity check on user request.\n\n")
                    return
                out("If you want me to do this, you need to zero out the first part\n"
                    "of the device (destroy the content).\nYou should be very sure that you "
                    "mean it.\nOperation refused.\n\n")
                raise Exit(40)
            if -(-f.used_bytes // 1024) > max_usable_kb:
                out("\nDevice size would be truncated, which\nwould corrupt data and result in\n"
                    "'access beyond end of device' errors.\nYou need to either\n"
                    "   * use external meta data (recommended)\n"
                    "   * shrink that filesystem first\n"
                    "   * zero out the device (destroy the filesystem)\nOperation refused.\n\n")
                raise Exit(40)
            out("\nEven though it looks like this would place the new meta data into\n"
                "unused space, you still need to confirm, as this is only a guess.\n")
        else:
            out("\n ==> This might destroy existing data! <==\n")
        if not self.confirmed("Do you want to proceed?"):
            out("Operation canceled.\n")
            raise Exit(1)

    def _md_for_write(self, lay: MetaLayout, sb: Superblock) -> Metadata:
        assert self.dev is not None
        data = None
        if self.backing and self.backing != self.device:
            try:
                data = BackingDevice(self.backing, readonly=True, lock=False)
            except DeviceError as e:
                err(f"{e}\n")
                raise Exit(20)
        return Metadata(self.dev, lay, sb, data if data is not None else
                        (self.dev if self.index == INTERNAL else None))

    def cmd_create_md(self, args: list[str]) -> int:
        if args:
            err("Ignoring additional arguments\n")
        self.open(True)
        self.existing_md_check()
        lay = self.layout(self.o.al_stripes, self.o.al_stripe_size_4k)
        self.existing_data_check(lay)
        md = self._md_for_write(lay, Superblock.fresh(lay, self.o.peer_max_bio_size))
        out("initializing activity log\n")
        err(f"initializing bitmap ({min(md.zeroed_bitmap_bytes(), lay.bm_area_bytes) >> 10} KB) "
            "to all zero\n")
        out("Writing meta data...\n")
        md.write_fresh()
        self.remember_size()
        out("New drbd meta data block successfully created.\n")
        return 0

    def read_dump(self, path: str) -> dumpmd.DumpData:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            err(f"open of '{path}' failed: {e.strerror}.\n")
            raise Exit(20)
        try:
            return dumpmd.parse_dump(text)
        except dumpmd.DumpParseError as e:
            err(f"{e}\n")
            raise Exit(10)

    def cmd_verify_dump(self, args: list[str]) -> int:
        if not args:
            err("Required Argument missing\n")
            return 10
        self.read_dump(args[0])
        out("input file parsed ok\n")
        return 0

    def cmd_restore_md(self, args: list[str]) -> int:
        if not args:
            err("Required Argument missing\n")
            return 10
        dump = self.read_dump(args[0])
        dev = self.open(True)
        stripes = self.o.al_stripes if self.o.al_stripes_used else dump.al_stripes
        size_4k = self.o.al_stripe_size_4k if self.o.al_stripes_used else dump.al_stripe_size_4k
        if self.o.al_stripes_used and (stripes, size_4k) != (dump.al_stripes,
                                                             dump.al_stripe_size_4k):
            err("override activity log striping from commandline\n")
        dump.al_stripes, dump.al_stripe_size_4k = stripes, size_4k
        old, _, _ = Metadata.probe(dev, self.index, strict=False)
        if old is not None and not self.confirmed("Valid meta-data in place, overwrite?"):
            return 1
        err("reinitializing\n")
        lay = self.layout(stripes, size_4k)
        self.existing_data_check(lay)
        sb = dump.superblock(Superblock.fresh(lay))
        if dump.bm_bytes_per_bit != 4096:
            err(f"'{self.device}': unexpected bm_bytes_per_bit: {dump.bm_bytes_per_bit} "
                "(expected 4096)\n")
            return 10
        if sb.la_size_sect > lay.max_data_sect:
            out(f"# la-size-sect was too big ({sb.la_size_sect}), truncated "
                f"({lay.max_data_sect})!\n")
            sb.la_size_sect = lay.max_data_sect
        limit = bm_bytes_for_sectors(sb.la_size_sect)
        bitmap = dump.bitmap
        if len(bitmap) > limit:
            if bitmap[limit:].strip(b"\0"):
                err("Bitmap info too large, truncated!\n")
            bitmap = bitmap[:limit]
        md = self._md_for_write(lay, sb)
        try:
            md.write_fresh(sb, bitmap)
        except MetadataError as e:
            err(f"{e}\nWriting failed\n")
            return 1
        out("Successfully restored meta data\n")
        return 0


def split_positionals(args: list[str]) -> tuple[str, str, str | None, str, int, str, list[str]]:
    """(minor, format, backing, device, index, command, command args)."""
    if len(args) < 2:
        raise usage()
    minor, fmt = args[0], args[1]
    if fmt in ("v06", "v07", "v09"):
        err(f"Format '{fmt}' is not supported by udrbd's drbdmeta (v08 only).\n")
        raise Exit(20)
    if fmt != "v08":
        err(f"Unknown format '{fmt}'.\n")
        raise Exit(20)
    rest = args[2:]
    if len(rest) < 2:
        err("Too few arguments for format\n")
        raise Exit(20)
    backing = None
    index = parse_index(rest[1])
    if index is None and len(rest) >= 3 and parse_index(rest[2]) is not None \
            and parse_index(rest[2]) != INTERNAL:
        backing, rest = rest[0], rest[1:]          # MINOR v08 BACKING METADEV INDEX CMD
        index = parse_index(rest[1])
    if index is None:
        err(f"'{rest[1]}' is not a valid index number.\n")
        raise Exit(20)
    if len(rest) < 3:
        err("command missing\n")
        raise Exit(20)
    return minor, fmt, backing, rest[0], index, rest[2], rest[3:]


def run(args: list[str]) -> int:
    if len(args) < 3:
        raise usage()
    opts = parse_options(args)
    minor, _, backing, device, index, command, cmd_args = split_positionals(opts.args)
    if command not in COMMANDS:
        err(f"Unknown command '{command}'.\n")
        return 20
    check_minor(minor)
    if opts.peer_max_bio_size and command != "create-md":
        err("The --peer-max-bio-size option is only allowed with create-md\n")
        return 10
    if opts.al_stripes_used and command not in ("create-md", "restore-md"):
        err("The --al-stripe* options are only allowed with create-md and restore-md\n")
        return 10
    n = opts.al_stripes * opts.al_stripe_size_4k
    if n > MAX_AL_4K:
        err("invalid (too large) al-stripe* settings\n")
        return 10
    if n < 8:
        err("invalid (too small) al-stripe* settings\n")
        return 10
    if opts.node_id != -1 and command not in ("get-gi", "show-gi", "set-gi", "forget-peer"):
        err(f"The {command} command does not accept the --node-id option\n")
        return 10
    if opts.node_id > 0:
        err("Not v09, implicitly set --node-id = 0\n")
    tool = Tool(opts, minor, device, index, backing, args)
    tool.command = command
    func = getattr(tool, "cmd_" + command.replace("-", "_"))
    try:
        if command != "verify-dump":
            tool.open(COMMANDS[command])
        rc = func(cmd_args)
    finally:
        if tool.dev is not None:
            tool.dev.close()
    if tool.stale:
        err(f"# Output might be stale, since minor {minor} is attached\n")
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` are the arguments without the program name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = run(argv)
    except Exit as e:
        rc = e.code
    except (MetadataError, DeviceError) as e:
        err(f"{e}\n")
        rc = 10
    except BrokenPipeError:
        rc = 1
    except KeyboardInterrupt:
        err("Interrupted.\n")
        rc = 130
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
