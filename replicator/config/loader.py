"""Entry points: read drbd.conf, run the parser, check it, build the frozen model."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from .errors import E_CONFIG_INVALID, E_EXEC_ERROR, ConfigError
from .model import Address, Common, Config, Host, Resource, Setting, Volume
from .options import SECTIONS, Opt, strtoll
from .parser import _Parser, _Res, _Vol, canonify


def _typed(opt: Opt, text: str | None) -> Any:
    if opt.kind == "int":
        return strtoll(text or "0", opt.scale)
    if opt.kind == "bool":
        return text == "yes"
    return text or ""


def _effective(section: str, *layers: list[Setting] | tuple[Setting, ...]) -> dict[str, Any]:
    table = SECTIONS[section]
    values = {name: opt.default for name, opt in table.items()}
    for layer in layers:
        for s in layer:
            opt = table.get(s.name)
            if opt is not None and opt.kind != "names":
                values[s.name] = _typed(opt, s.text)
    return values


def _startup_layer(res: _Res | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if res is not None:
        if res.stacked_timeouts:
            extra["stacked-timeouts"] = True
        if res.become_primary_on is not None:
            extra["become-primary-on"] = tuple(res.become_primary_on)
    return extra


def _frozen_settings(res: _Res | None) -> MappingProxyType:
    """Settings per section as dump prints them (startup gets 8.4's fake entries)."""
    out: dict[str, tuple[Setting, ...]] = {}
    for section in SECTIONS:
        items = list(res.settings[section]) if res else []
        if section == "startup" and res is not None:
            if res.stacked_timeouts:
                items.append(Setting("stacked-timeouts", None))
            if res.become_primary_on is not None:
                items.append(Setting("become-primary-on", " ".join(res.become_primary_on)))
        out[section] = tuple(items)
    return MappingProxyType(out)


def _proxy(d: dict[str, Any]) -> MappingProxyType:
    return MappingProxyType(dict(d))


class _Builder:
    def __init__(self, p: _Parser) -> None:
        self.p = p
        self.common = p.common
        self.common_settings = p.common.settings if p.common else {s: [] for s in SECTIONS}

    def section(self, res: _Res | None, section: str, *extra) -> dict[str, Any]:
        layers = [self.common_settings[section]]
        if res is not None:
            layers.append(res.settings[section])
        values = _effective(section, *layers, *extra)
        if section == "startup":
            values.update(_startup_layer(self.common))
            values.update(_startup_layer(res))
        return values

    def common_model(self) -> Common:
        c = self.common
        return Common(**{s: _proxy(self.section(None, s)) for s in SECTIONS},
                      settings=_frozen_settings(c), present=c is not None,
                      line=c.line if c else 0)

    def volume(self, res: _Res, vol: _Vol, res_disk: list[Setting]) -> Volume:
        minor = vol.minor
        index = vol.meta_index or "internal"
        meta_index = None if index in ("internal", "flexible") else strtoll(index, "1")
        return Volume(
            vnr=vol.vnr, device=vol.device or f"/dev/drbd{minor}", minor=minor,
            disk=None if vol.disk == "none" else vol.disk,
            meta_disk=vol.meta_disk or "internal", meta_index=meta_index,
            disk_options=_proxy(_effective("disk", self.common_settings["disk"], res_disk,
                                           vol.disk_settings)),
            implicit=vol.implicit, device_named=vol.device is not None,
            meta_index_text=index, disk_settings=tuple(vol.disk_settings))

    def resource(self, res: _Res) -> Resource:
        sections = {s: self.section(res, s) for s in SECTIONS}
        hosts = []
        for h in res.hosts:
            hosts.append(Host(
                names=() if h.floating else tuple(h.names),
                address=Address(h.address.af, h.address.host, h.address.port)
                if h.address else None,
                volumes=tuple(self.volume(res, v, res.settings["disk"]) for v in h.volumes),
                line=h.line, floating=h.floating,
                option_settings=tuple(h.option_settings)))
        return Resource(
            name=res.name, file=res.file, line=res.line,
            protocol=sections["net"]["protocol"],
            **{s: _proxy(v) for s, v in sections.items()},
            hosts=tuple(hosts), settings=_frozen_settings(res))


def _validate(p: _Parser, b: _Builder) -> None:
    """Checks drbdadm-84 makes after parsing (validate_resource), node-independent part."""
    names = {r.name for r in p.resources}
    for res in p.resources:
        where = f"{res.file}:{res.line}: in resource {res.name}:"
        host_names = [n for h in res.hosts for n in h.names]
        for s in res.settings["disk"]:
            if s.name == "resync-after" and (s.text or "").split("/")[0] not in names:
                p.error(f"{where}\n\tresource '{s.text}' mentioned in 'resync-after' option "
                        "is not known.")
        net = b.section(res, "net")
        bpo = res.become_primary_on or []
        if "both" in bpo and not net["allow-two-primaries"]:
            p.error(f"{where}\nbecome-primary-on is set to both, but allow-two-primaries "
                    "is not set.")
        for name in bpo:
            if name != "both" and name not in host_names:
                p.error(f"{where}\n\tbecome-primary-on contains '{name}', which is not named "
                        "with the 'on' sections.")
        sb0 = net["after-sb-0pri"]
        if sb0.startswith("discard-node-") and sb0[13:] not in host_names:
            p.error(f"{where}\n\tthe nodename in the 'after-sb-0pri' option is not known.\n"
                    f"\tvalid nodenames are: '{' '.join(host_names)}'.")


def _parse(display: str, text: str) -> Config:
    p = _Parser()
    abs_path = canonify(display)
    p.seen(abs_path)
    p.parse_file(display, abs_path, text)
    if not p.errors:
        b = _Builder(p)
        _validate(p, b)
    if p.errors:
        raise ConfigError("\n".join(p.errors), E_CONFIG_INVALID)
    resources = {r.name: b.resource(r) for r in p.resources}
    return Config(path=abs_path, global_options=MappingProxyType(dict(p.global_options)),
                  common=b.common_model(), resources=MappingProxyType(resources),
                  files=tuple(p.files), warnings=tuple(p.warnings),
                  global_explicit=frozenset(p.global_explicit))


def parse_text(text: str, filename: str = "drbd.conf") -> Config:
    """Parse TEXT as if it were the file FILENAME (includes resolve next to it)."""
    return _parse(filename, text)


def load_config(path: str) -> Config:
    """Read and validate the configuration in PATH (and everything it includes)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        raise ConfigError(f"Can not open '{path}'.", E_EXEC_ERROR) from None
    return _parse(path, text)
