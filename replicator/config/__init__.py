"""drbd.conf: DRBD 8.4's configuration language, parsed into an immutable model.

    from replicator.config import load_config, current_node, dump_config, ConfigError
    cfg = load_config("/etc/drbd.conf")
    res = cfg.resources["r0"]
    me = res.host_for(current_node())          # NotForThisHost if there is none
    peers = res.peers_of(current_node())
    res.disk["resync-rate"]                    # KiB/s, defaults and common filled in

Modules: ``lexer`` (tokens as drbd-utils' scanner), ``parser`` (grammar, checks, model
building), ``options`` (defaults, units, ranges), ``model`` (frozen dataclasses),
``loader`` (load_config, parse_text: parse, validate, build the model),
``dump`` (``drbdadm dump`` text), ``errors``.
"""
from .dump import dump_config, dump_config_xml, esc
from .errors import E_CONFIG_INVALID, E_EXEC_ERROR, E_USAGE, ConfigError, NotForThisHost
from .model import (Address, Common, Config, Host, Resource, Setting, Volume,
                    current_node)
from .loader import load_config, parse_text
from .options import SECTIONS, strtoll

__all__ = [
    "Address", "Common", "Config", "ConfigError", "E_CONFIG_INVALID", "E_EXEC_ERROR",
    "E_USAGE", "Host", "NotForThisHost", "Resource", "SECTIONS", "Setting", "Volume",
    "current_node", "dump_config", "dump_config_xml", "esc", "load_config", "parse_text", "strtoll",
]
