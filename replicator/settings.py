"""Typed runtime options from drbdsetup's ``--name=value`` words.

drbdadm passes options as written in drbd.conf (``--resync-rate=100M``); the daemon turns
them into typed values in DRBD's default units, with 8.4's defaults for the rest, using the
same tables the config parser checks against.
"""
from __future__ import annotations

from typing import Any

from replicator.config.errors import ConfigError
from replicator.config.options import DISK, NET, OPTIONS, SHARED_SECRET_MAX, Opt, strtoll


class OptionError(ValueError):
    pass


def _value(opt: Opt, raw: Any) -> Any:
    if raw is True and opt.kind != "bool":
        raise OptionError(f"--{opt.name} needs a value (--{opt.name}=VALUE)")
    if opt.kind == "bool":
        return raw is True or str(raw) in ("yes", "true", "1")
    if opt.kind == "int":
        try:
            value = strtoll(str(raw), opt.scale)
        except ConfigError as e:
            raise OptionError(f"--{opt.name}: {e}") from None
        except ValueError:                     # (Python refuses > 4300 digits)
            raise OptionError(f"--{opt.name}: '{str(raw)[:20]}...' is not a number") from None
        if opt.lo is not None and not opt.lo <= value <= opt.hi:
            raise OptionError(f"--{opt.name}: {value} out of range [{opt.lo}..{opt.hi}]")
        return value
    if opt.kind == "enum":
        if str(raw) not in opt.values:
            raise OptionError(f"--{opt.name}: '{raw}' is not one of {', '.join(opt.values)}")
        return str(raw)
    if opt.name == "shared-secret" and len(str(raw)) > SHARED_SECRET_MAX:
        raise OptionError(f"--shared-secret: too long ({len(str(raw))} > {SHARED_SECRET_MAX} "
                          "characters)")
    return str(raw)


def typed(table: dict[str, Opt], given: dict[str, Any], ignore: tuple[str, ...] = ()) -> dict:
    """Defaults of ``table`` overlaid with ``given`` (unknown names raise OptionError)."""
    out = {name: opt.default for name, opt in table.items()}
    for name, raw in given.items():
        if name in ignore or name.startswith("_"):
            continue
        opt = table.get(name)
        if opt is None:
            raise OptionError(f"unknown option --{name}")
        out[name] = _value(opt, raw)
    return out


def net_options(given: dict[str, Any]) -> dict:
    return typed(NET, given, ignore=("discard-my-data", "tentative", "dry-run"))


# the resync controller's settings, which 8.4 sends to the peer (P_SYNC_PARAM)
SYNC_PARAMS = ("resync-rate", "c-plan-ahead", "c-delay-target", "c-fill-target",
               "c-max-rate")


def disk_options(given: dict[str, Any]) -> dict:
    return typed(DISK, given)


def resource_options(given: dict[str, Any]) -> dict:
    return typed(OPTIONS, given)
