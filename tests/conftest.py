"""Session-wide guards: integration tests need root, and nothing may be left behind.

At the end of the run the suite compares FUSE mounts, loop devices and the processes the
tests registered (``tests.leaks.track_pid``) with the state at the start; anything new fails
the run, so a leaking fixture is found in the run that introduced it.
"""
import os

import pytest

from tests import leaks

_before: leaks.Snapshot | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _before
    _before = leaks.snapshot()
    # the tools' state (meta.lkbd) goes to a directory of the run, never /var/lib/drbd
    state = session.config._tmp_path_factory.mktemp("udrbd-state")  # type: ignore[attr-defined]
    os.environ["UDRBD_STATE_DIR"] = str(state)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    if os.geteuid() != 0 and any("integration" in item.keywords for item in items):
        raise pytest.UsageError("integration tests need root (FUSE, loop devices, mounts); "
                                "run as root or select tests/unit")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _before is None:
        return
    leaked = leaks.leaked_since(_before)
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["LEAK CHECK FAILED: the tests left these behind:"] + [f"  {x}" for x in leaked]
        if reporter:
            reporter.write_line("\n".join(lines), red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
