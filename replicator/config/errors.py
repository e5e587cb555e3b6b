"""Exceptions raised while reading drbd.conf.

``str(error)`` is exactly what drbdadm prints on stderr (several lines when the real
tool reports several problems before giving up); ``error.exit_code`` is its exit status.
"""

E_USAGE = 1            # drbdadm: usage errors, "not defined in your config (for this host)"
E_CONFIG_INVALID = 10  # drbdadm: the configuration is invalid
E_EXEC_ERROR = 20      # drbdadm: "... is not a valid number", "Can not open ..."


class ConfigError(Exception):
    """An invalid configuration; the message names FILE:LINE in DRBD's own words."""

    def __init__(self, message: str, exit_code: int = E_CONFIG_INVALID) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotForThisHost(ConfigError):
    """The resource exists nowhere in the config, or has no section for this node."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"'{resource}' not defined in your config (for this host).", E_USAGE)
        self.resource = resource
