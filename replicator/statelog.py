"""The resource log: DRBD's kernel-style lines to ``$RUN_DIR/<res>.log`` and to syslog.

Lines are ``<ISO timestamp> <message>`` in the file; the message is what the DRBD 8.4 kernel
would print, e.g. ``block drbd0: disk( Diskless -> Attaching )`` or
``drbd r0: conn( StandAlone -> Unconnected )``.
"""
from __future__ import annotations

import datetime
import os
import syslog
from typing import Callable


class ResourceLog:
    def __init__(self, path: str, resource: str, use_syslog: bool | None = None):
        self.resource = resource
        self.minor: int | None = None
        self._file = open(path, "a", buffering=1, encoding="utf-8")
        self._syslog = os.path.exists("/dev/log") if use_syslog is None else use_syslog
        if self._syslog:
            syslog.openlog("udrbd", syslog.LOG_PID, syslog.LOG_DAEMON)
        self.listeners: list[Callable[[str], None]] = []

    def _emit(self, message: str, level: int = syslog.LOG_INFO) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
        self._file.write(f"{stamp} {message}\n")
        if self._syslog:
            syslog.syslog(level, message)
        for listener in self.listeners:
            listener(message)

    def device(self, text: str, level: int = syslog.LOG_INFO) -> None:
        """A device-level line: ``block drbdN: text``."""
        self._emit(f"block drbd{self.minor if self.minor is not None else '?'}: {text}", level)

    def resource_line(self, text: str, level: int = syslog.LOG_INFO) -> None:
        """A connection/resource-level line: ``drbd RES: text``."""
        self._emit(f"drbd {self.resource}: {text}", level)

    def warning(self, text: str) -> None:
        self.resource_line(text, syslog.LOG_WARNING)

    def close(self) -> None:
        self._file.close()
