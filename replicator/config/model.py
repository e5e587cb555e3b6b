"""The immutable configuration model produced by the parser.

Option sections (``net``, ``disk``, ``startup``, ``options``, ``handlers``) are read-only
mappings of option name -> effective typed value with every default filled in: numbers
as ``int`` in the option's default unit (``resync-rate`` KiB/s, ``timeout`` 0.1 s,
``size`` sectors, ...), booleans as ``bool``, enumerations and strings as ``str``
(``""`` when unset), ``become-primary-on`` as a tuple of names.

What was written explicitly is kept too, as ``Setting`` tuples in file order (duplicates
included, as drbdadm keeps them), because ``drbdadm dump`` prints only those.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .errors import ConfigError, NotForThisHost

SECTION_NAMES = ("options", "net", "disk", "startup", "handlers")
EMPTY: Mapping[str, Any] = MappingProxyType({})


def current_node() -> str:
    """The node name that selects the ``on`` section: ``$__DRBD_NODE__`` or ``uname -n``."""
    return os.environ.get("__DRBD_NODE__") or os.uname().nodename


@dataclass(frozen=True)
class Setting:
    """One option as written: NAME and its value text (None for a bare keyword)."""
    name: str
    text: str | None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Address:
    af: str      # ipv4 | ipv6 | ssocks | sdp
    host: str    # numeric address, without brackets
    port: int

    def __str__(self) -> str:
        if self.af == "ipv6":
            return f"ipv6 [{self.host}]:{self.port}"
        return f"{self.af} {self.host}:{self.port}"

    @property
    def sockaddr(self) -> str:
        """``ipv4:1.2.3.4:7788`` as drbdsetup's connect arguments spell it."""
        host = f"[{self.host}]" if self.af == "ipv6" else self.host
        return f"{self.af}:{host}:{self.port}"


@dataclass(frozen=True)
class Volume:
    vnr: int
    device: str                   # /dev/drbdN unless another path was given
    minor: int
    disk: str | None              # None for ``disk none;`` (diskless)
    meta_disk: str                # 'internal' or a path
    meta_index: int | None        # None for internal / flexible external, int if indexed
    disk_options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)   # effective disk {} for this volume
    implicit: bool = True         # volume 0 given without ``volume 0 { }``
    device_named: bool = True     # False for ``device minor N;`` (dump prints no path)
    meta_index_text: str = "internal"   # 'internal' | 'flexible' | index as written
    disk_settings: tuple[Setting, ...] = ()   # this volume's own disk { } lines

    @property
    def diskless(self) -> bool:
        return self.disk is None

    @property
    def meta_device(self) -> str | None:
        """The device holding the metadata (the backing disk itself for internal)."""
        return self.disk if self.meta_disk == "internal" else self.meta_disk


@dataclass(frozen=True)
class Host:
    names: tuple[str, ...]        # the names after ``on`` (empty for floating)
    address: Address | None
    volumes: tuple[Volume, ...]
    line: int
    floating: bool = False
    option_settings: tuple[Setting, ...] = ()   # a host's own options { }

    @property
    def label(self) -> str:
        """How drbdadm names the section in messages: ``node1`` / ``10.0.0.1:7788``."""
        if self.floating and self.address is not None:
            a = self.address
            return f"ipv6 [{a.host}]:{a.port}" if a.af == "ipv6" else f"{a.host}:{a.port}"
        return " ".join(self.names)

    def volume(self, vnr: int) -> Volume:
        for vol in self.volumes:
            if vol.vnr == vnr:
                return vol
        raise KeyError(vnr)


def address_is_local(addr: Address) -> bool:
    """True if ADDR is assigned to this machine (bind test; sends nothing)."""
    family = socket.AF_INET6 if addr.af == "ipv6" else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((addr.host.split("%")[0], 0))
        return True
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Resource:
    name: str
    file: str                     # absolute path of the file that defines it
    line: int
    protocol: str                 # 'A' | 'B' | 'C'
    net: Mapping[str, Any]
    disk: Mapping[str, Any]
    startup: Mapping[str, Any]
    options: Mapping[str, Any]
    handlers: Mapping[str, Any]
    hosts: tuple[Host, ...]
    settings: Mapping[str, tuple[Setting, ...]] = field(default_factory=lambda: EMPTY)   # section -> lines written here

    def explicit(self, section: str) -> frozenset[str]:
        """Names of the options of SECTION set in this resource itself (not via common)."""
        return frozenset(s.name for s in self.settings.get(section, ()))

    def host_for(self, node: str) -> Host:
        """The host section for NODE: exact, case-sensitive ``on`` name as in 8.4.

        A ``floating`` section matches when NODE is its address (8.4's debugging rule for
        ``__DRBD_NODE__``) or, if nothing matched by name, when the address is local.
        """
        found = [h for h in self.hosts
                 if node in h.names or (h.floating and h.address and h.address.host == node)]
        if not found:
            found = [h for h in self.hosts if h.floating and h.address
                     and address_is_local(h.address)]
        if not found:
            raise NotForThisHost(self.name)
        if len(found) > 1:
            first, second = found[0], found[1]
            raise ConfigError(
                f"{self.file}:{second.line}: in resource {self.name}, on {first.label} "
                f"{{ ... }} ... on {second.label} {{ ... }}:\n"
                "\tThere are multiple host sections for this node.")
        return found[0]

    def peers_of(self, node: str) -> tuple[Host, ...]:
        """Every host section except NODE's own."""
        me = self.host_for(node)
        return tuple(h for h in self.hosts if h is not me)

    def is_for(self, node: str) -> bool:
        try:
            self.host_for(node)
        except NotForThisHost:
            return False
        return True


@dataclass(frozen=True)
class Common:
    """The ``common`` section: effective values (defaults + common) and what it sets."""
    net: Mapping[str, Any]
    disk: Mapping[str, Any]
    startup: Mapping[str, Any]
    options: Mapping[str, Any]
    handlers: Mapping[str, Any]
    settings: Mapping[str, tuple[Setting, ...]] = field(default_factory=lambda: EMPTY)
    present: bool = False         # a common { } section was written
    line: int = 0


@dataclass(frozen=True)
class Config:
    path: str                     # the main file, absolute
    global_options: Mapping[str, Any]
    common: Common
    resources: Mapping[str, Resource]   # in file order
    files: tuple[str, ...] = ()         # every file read, absolute, in reading order
    global_explicit: frozenset[str] = frozenset()   # global options written in the file
    warnings: tuple[str, ...] = field(default=())   # drbdadm's non-fatal WARN lines

    def resource(self, name: str) -> Resource:
        try:
            return self.resources[name]
        except KeyError:
            raise NotForThisHost(name) from None

    def resources_for(self, node: str) -> tuple[Resource, ...]:
        """The resources that have a host section for NODE, in file order."""
        return tuple(r for r in self.resources.values() if r.is_for(node))
