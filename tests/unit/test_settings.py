"""Typed runtime options (drbdsetup's --name=value words) and their refusals."""
from __future__ import annotations

import pytest

from replicator.settings import OptionError, disk_options, net_options


def test_values_come_typed_in_drbds_units_with_defaults():
    d = disk_options({"resync-rate": "2M", "c-plan-ahead": "0"})
    assert d["resync-rate"] == 2048 and d["c-plan-ahead"] == 0
    assert d["al-extents"] == 1237                              # 8.4's default
    n = net_options({"protocol": "B", "allow-two-primaries": True, "discard-my-data": True})
    assert n["protocol"] == "B" and n["allow-two-primaries"] is True


@pytest.mark.parametrize("table, given, message", [
    (disk_options, {"resync-rate": True}, "--resync-rate needs a value (--resync-rate=VALUE)"),
    (disk_options, {"resync-rate": "abc"}, "--resync-rate:"),
    (disk_options, {"frobnicate": "1"}, "unknown option --frobnicate"),
    (net_options, {"protocol": "D"}, "--protocol: 'D' is not one of"),
    (net_options, {"shared-secret": "x" * 65}, "--shared-secret: too long (65 > 64 characters)"),
    (disk_options, {"resync-rate": "9" * 5000}, "--resync-rate:"),
])
def test_bad_values_are_refused_with_the_option_named(table, given, message):
    with pytest.raises(OptionError) as e:
        table(given)
    assert str(e.value).startswith(message)


def test_a_64_character_secret_is_fine():
    assert net_options({"shared-secret": "x" * 64})["shared-secret"] == "x" * 64
