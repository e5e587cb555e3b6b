"""``drbdadm dump`` in drbdadm-84's normal form.

The layout (indentation, column widths, the per-host expansion of device/disk/meta-disk,
only explicitly set options, values as written) is what drbd-utils 9.22's 8.4 personality
prints. Deliberate differences, so that dump -> parse -> dump is stable:
* host names are quoted when they need it (8.4 prints ``on 1.2.3.4 {`` for a quoted
  ``on "1.2.3.4"``, which it could not read back);
* disk options of a resource-level ``volume N { disk { } }`` appear in every host's
  volume (8.4 drops them; see parser.py).
"""
from __future__ import annotations

import re

from .errors import NotForThisHost
from .lexer import TK_INTEGER, TK_ON, TK_STRING, Lexer
from .model import Config, Host, Resource, Setting, Volume, current_node
from .options import CMD_TIMEOUT_DEFS, SECTIONS

_PLAIN = re.compile(r"[a-zA-Z0-9/._-]+")
INDENT = 4


def esc(text: str | None) -> str:
    """drbd-utils esc(): quote a token unless it is a plain word of at most 80 characters."""
    if not text:
        return '""'
    if _PLAIN.fullmatch(text) and len(text) <= 80:
        return text
    return _quote(text)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def word(text: str | None, *allowed: int) -> str:
    """esc(), but also quote a plain word the parser would not read back as a string
    (``1.2.3.4``, ``on``, ``123``): drbdadm-84 prints those bare and cannot re-read them."""
    out = esc(text)
    if out.startswith('"'):
        return out
    tok = Lexer(out, "").next()
    if tok.text != out or tok.code not in (TK_STRING,) + allowed:
        return _quote(out)
    return out


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.indent = 0

    def i(self, text: str) -> None:
        """printI(): a line at the current indentation."""
        self.lines.append(" " * (INDENT * self.indent) + text)

    def a(self, name: str, value: str) -> None:
        """printA(): NAME padded to column 24, VALUE right-aligned in three columns."""
        width = 24 - INDENT * self.indent
        self.i(f"{name:<{width}} {value:>3};")

    def options(self, section: str, settings: tuple[Setting, ...] | list[Setting]) -> None:
        if not settings:
            return
        table = SECTIONS[section]
        self.i(f"{section} {{")
        self.indent += 1
        for s in settings:
            opt = table.get(s.name)
            if s.text is None:
                self.i(f"{s.name};")
            elif s.name == "become-primary-on":
                self.a(s.name, " ".join(word(n) for n in s.text.split(" ")))
            elif opt is not None and opt.kind == "bool":
                self.a(s.name, s.text)                  # yes | no
            else:
                self.a(s.name, word(s.text, TK_INTEGER, TK_ON))
        self.indent -= 1
        self.i("}")


def _global(out: _Out, g, explicit: frozenset[str]) -> None:
    if (not g["minor-count"] and not g["disable-ip-verification"]
            and g["dialog-refresh"] == 1 and g["usage-count"] == "ask"):
        return
    out.i("global {")
    out.indent += 1
    if g["disable-ip-verification"]:
        out.i("disable-ip-verification;")
    if g["minor-count"]:
        out.i(f"minor-count {g['minor-count']};")
    if g["dialog-refresh"] != 1:
        out.i(f"dialog-refresh {g['dialog-refresh']};")
    if g["usage-count"] != "ask":
        out.i(f"usage-count {g['usage-count']};")
    for name, default in CMD_TIMEOUT_DEFS.items():
        # drbdadm-84 omits a timeout equal to its "default" even when written, but reads
        # an absent one as 600/0 -- so dump -> parse would change it; we print written ones
        if g[name] != default or name in explicit:
            out.i(f"{name} {g[name]};")
    out.indent -= 1
    out.i("}")
    out.lines.append("")


SECTION_ORDER = ("options", "net", "disk", "startup", "handlers")   # as drbdadm-84 prints


def _sections(out: _Out, settings) -> None:
    for section in SECTION_ORDER:
        out.options(section, settings.get(section, ()))


def _named(config: Config, names: list[str], node: str) -> list[Resource]:
    """The named resources, each with a section for ``node`` (else NotForThisHost)."""
    selected = []
    for name in names:
        res = config.resources.get(name)
        if res is None or not res.is_for(node):
            raise NotForThisHost(name)
        selected.append(res)
    return selected


def _volume(out: _Out, vol: Volume) -> None:
    if not vol.implicit:
        out.i(f"volume {vol.vnr} {{")
        out.indent += 1
    out.options("disk", vol.disk_settings)
    pad = " " * (19 - INDENT * out.indent)
    path = f"{word(vol.device)} " if vol.device_named else ""
    out.i(f"device{pad}{path}minor {vol.minor};")
    out.a("disk", word(vol.disk or "none"))
    if vol.meta_index_text == "flexible":
        out.i(f"{'meta-disk':<16} {word(vol.meta_disk)};")
    elif vol.meta_index_text == "internal":
        out.a("meta-disk", "internal")
    else:
        out.i(f"{'meta-disk':<16} {word(vol.meta_disk)} [{vol.meta_index_text}];")
    if not vol.implicit:
        out.indent -= 1
        out.i("}")


def _address(out: _Out, name: str, host: Host) -> None:
    a = host.address
    if a is None:
        return
    where = f"[{a.host}]" if a.af == "ipv6" else a.host
    out.i(f"{name:<16} {a.af} {where}:{a.port};")


def _host(out: _Out, host: Host) -> None:
    if host.floating and host.address is not None:
        a = host.address
        if a.af == "ipv6":
            out.i(f"floating ipv6 [{a.host}]:{a.port} {{")
        else:
            out.i(f"floating {a.af} {a.host}:{a.port} {{")
    else:
        out.i(f"on {' '.join(word(n) for n in host.names)} {{")
    out.indent += 1
    out.options("options", host.option_settings)
    for vol in host.volumes:
        _volume(out, vol)
    if not host.floating:
        _address(out, "address", host)
    out.indent -= 1
    out.i("}")


def _resource(out: _Out, res: Resource, node: str) -> None:
    state = "not ignored" if res.is_for(node) else "ignored"
    out.i(f"# resource {esc(res.name)} on {node}: {state}, not stacked")
    out.i(f"# defined at {res.file}:{res.line}")
    out.i(f"resource {word(res.name)} {{")
    out.indent += 1
    for host in res.hosts:
        _host(out, host)
    _sections(out, res.settings)
    out.indent -= 1
    out.i("}")
    out.lines.append("")


def dump_config(config: Config, names: list[str] | None = None,
                node: str | None = None) -> str:
    """``drbdadm dump [RES...|all]`` for NODE (default: current_node()).

    With no names (or ``all``) the header, global and common sections and every resource
    (also those not for NODE, marked "ignored") are printed; named resources must exist
    and have a section for NODE, else NotForThisHost (exit 1).
    """
    node = current_node() if node is None else node
    out = _Out()
    if not names or names[0] == "all":
        out.i(f"# {config.path}")
        _global(out, config.global_options, config.global_explicit)
        if config.common.present:
            out.i("common {")
            out.indent += 1
            _sections(out, config.common.settings)
            out.indent -= 1
            out.i("}")
            out.lines.append("")
        selected = list(config.resources.values())
    else:
        selected = _named(config, names, node)
    for res in selected:
        _resource(out, res, node)
    return "\n".join(out.lines) + "\n"


# -- dump-xml -------------------------------------------------------------------------------
def esc_xml(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def _xml_options(out: _Out, section: str, settings) -> None:
    if not settings:
        return
    out.i(f'<section name="{section}">')
    out.indent += 1
    for s in settings:
        value = "" if s.text is None else f' value="{esc_xml(s.text)}"'
        out.i(f'<option name="{s.name}"{value}/>')
    out.indent -= 1
    out.i("</section>")


def _xml_sections(out: _Out, settings) -> None:
    for section in SECTION_ORDER:
        _xml_options(out, section, settings.get(section, ()))


def _xml_volume(out: _Out, vol: Volume) -> None:
    out.i(f'<volume vnr="{vol.vnr}">')
    out.indent += 1
    _xml_options(out, "disk", vol.disk_settings)
    path = esc_xml(vol.device) if vol.device_named else ""
    out.i(f'<device minor="{vol.minor}">{path}</device>')
    out.i(f"<disk>{esc_xml(vol.disk or 'none')}</disk>")
    if vol.meta_index_text in ("internal", "flexible"):
        meta = "internal" if vol.meta_index_text == "internal" else esc_xml(vol.meta_disk)
        out.i(f"<meta-disk>{meta}</meta-disk>")
    else:
        out.i(f'<meta-disk index="{vol.meta_index_text}">{esc_xml(vol.meta_disk)}</meta-disk>')
    out.indent -= 1
    out.i("</volume>")


def _xml_host(out: _Out, host: Host) -> None:
    if host.floating:
        out.i('<host floating="1">')
    else:
        out.i(f'<host name="{esc_xml(" ".join(host.names))}">')
    out.indent += 1
    _xml_options(out, "options", host.option_settings)
    for vol in host.volumes:
        _xml_volume(out, vol)
    a = host.address
    if a is not None:
        out.i(f'<address family="{a.af}" port="{a.port}">{esc_xml(a.host)}</address>')
    out.indent -= 1
    out.i("</host>")


def _xml_resource(out: _Out, res: Resource) -> None:
    out.i(f'<resource name="{esc_xml(res.name)}" conf-file-line="{esc_xml(res.file)}:'
          f'{res.line}">')
    out.indent += 1
    for host in res.hosts:
        _xml_host(out, host)
    _xml_sections(out, res.settings)
    out.indent -= 1
    out.i("</resource>")


def dump_config_xml(config: Config, names: list[str] | None = None,
                    node: str | None = None) -> str:
    """``drbdadm dump-xml [RES...|all]``: the same contents as :func:`dump_config`, in
    drbdadm-84's XML (what GUIs and cluster tools read). All: ``<config>`` with global
    (its three options that have XML), common and every resource; named ones bare."""
    node = current_node() if node is None else node
    out = _Out()
    if names and names[0] != "all":
        for res in _named(config, names, node):
            _xml_resource(out, res)
        return "\n".join(out.lines) + "\n"
    out.i(f'<config file="{esc_xml(config.path)}">')
    out.indent += 1
    g = config.global_options
    if g["minor-count"] or g["disable-ip-verification"] or g["dialog-refresh"] != 1:
        out.i("<global>")
        out.indent += 1
        if g["disable-ip-verification"]:
            out.i("<disable-ip-verification/>")
        if g["minor-count"]:
            out.i(f'<minor-count count="{g["minor-count"]}"/>')
        if g["dialog-refresh"] != 1:
            out.i(f'<dialog-refresh refresh="{g["dialog-refresh"]}"/>')
        out.indent -= 1
        out.i("</global>")
    if config.common.present:
        out.i("<common>")
        out.indent += 1
        _xml_sections(out, config.common.settings)
        out.indent -= 1
        out.i("</common>")
    for res in config.resources.values():
        _xml_resource(out, res)
    out.indent -= 1
    out.i("</config>")
    return "\n".join(out.lines) + "\n"
