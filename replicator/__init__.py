"""udrbd's replicator: the resource daemon, its peer protocol and the admin tools."""


def udrbd_version() -> str:
    """The installed package's version ("0" when run from a tree that is not installed)."""
    try:
        from importlib.metadata import version
        return version("udrbd")
    except Exception:  # noqa: BLE001 - any metadata problem: unknown version
        return "0"
