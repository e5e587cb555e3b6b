"""``drbdadm adjust`` on a running resource: only what differs from drbd.conf is changed."""
from pathlib import Path

import pytest

from replicator.cli.drbdadm import Planner, adjust_steps
from replicator.config import load_config

CONF = """\
resource r0 {
  protocol C;
  disk { resync-rate 10M; }
  net { ping-timeout 10; }
  on node1 { device /dev/drbd0 minor 0; disk /dev/sdb1; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0 minor 0; disk /dev/sdb1; address 127.0.0.2:7788; meta-disk internal; }
}
"""

MATCHING = {
    "minor": 0,
    "disk": {"disk": "/dev/sdb1", "meta_disk": "/dev/sdb1", "meta_index": "internal",
             "given": {"resync-rate": "10240"}},          # the same rate, in KiB/s
    "net": {"local": "ipv4:127.0.0.1:7788", "peer": "ipv4:127.0.0.2:7788",
            "given": {"protocol": "C", "ping-timeout": "10"}},
}


def plan(tmp_path: Path, running: dict, conf: str = CONF) -> list[str]:
    path = tmp_path / "drbd.conf"
    path.write_text(conf)
    cfg = load_config(str(path))
    return [s.text() for s in adjust_steps(Planner(cfg, "node1", []), cfg.resource("r0"),
                                           running)]


def with_(**parts) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MATCHING.items()}
    for key, value in parts.items():
        section, _, field = key.partition("__")
        if field:
            out[section] = {**out[section], field: value}
        else:
            out[section] = value
    return out


def test_a_resource_that_matches_its_configuration_needs_nothing(tmp_path: Path):
    assert plan(tmp_path, MATCHING) == []


def test_a_changed_disk_option_is_set_live(tmp_path: Path):
    assert plan(tmp_path, with_(disk__given={"resync-rate": "100M"})) == [
        "drbdsetup disk-options 0 --set-defaults --resync-rate=10M"]


def test_a_missing_disk_is_attached_after_apply_al(tmp_path: Path):
    assert plan(tmp_path, with_(disk=None)) == [
        "drbdmeta 0 v08 /dev/sdb1 internal apply-al",
        "drbdsetup attach 0 /dev/sdb1 /dev/sdb1 internal --resync-rate=10M"]


def test_another_backing_disk_is_detached_and_the_configured_one_attached(tmp_path: Path):
    assert plan(tmp_path, with_(disk__disk="/dev/sdc1", disk__meta_disk="/dev/sdc1")) == [
        "drbdsetup detach 0",
        "drbdmeta 0 v08 /dev/sdb1 internal apply-al",
        "drbdsetup attach 0 /dev/sdb1 /dev/sdb1 internal --resync-rate=10M"]


def test_a_standalone_resource_is_connected(tmp_path: Path):
    assert plan(tmp_path, with_(net=None)) == [
        "drbdsetup connect r0 ipv4:127.0.0.1:7788 ipv4:127.0.0.2:7788 --protocol=C "
        "--ping-timeout=10 --_name=node2"]


@pytest.mark.parametrize("change", [
    {"net__given": {"protocol": "B", "ping-timeout": "10"}},
    {"net__given": {"protocol": "C"}},                         # ping-timeout back to default
])
def test_changed_net_options_are_set_on_the_connection(tmp_path: Path, change: dict):
    assert plan(tmp_path, with_(**change)) == [
        "drbdsetup net-options ipv4:127.0.0.1:7788 ipv4:127.0.0.2:7788 --set-defaults "
        "--protocol=C --ping-timeout=10"]


def test_another_peer_address_reconnects(tmp_path: Path):
    assert plan(tmp_path, with_(net__peer="ipv4:127.0.0.3:7788")) == [
        "drbdsetup disconnect r0",
        "drbdsetup connect r0 ipv4:127.0.0.1:7788 ipv4:127.0.0.2:7788 --protocol=C "
        "--ping-timeout=10 --_name=node2"]


def test_discard_my_data_given_at_connect_is_not_a_difference(tmp_path: Path):
    given = {"protocol": "C", "ping-timeout": "10", "discard-my-data": True}
    assert plan(tmp_path, with_(net__given=given)) == []


def test_sections_gone_from_the_configuration_are_taken_down(tmp_path: Path):
    conf = CONF.replace("disk /dev/sdb1; address 127.0.0.1:7788;",
                        "disk none; address 127.0.0.1:7788;")
    assert plan(tmp_path, MATCHING, conf) == ["drbdsetup detach 0"]


def test_a_changed_disk_size_is_a_resize_not_a_disk_option(tmp_path: Path):
    sized = CONF.replace("disk { resync-rate 10M; }", "disk { resync-rate 10M; size 300M; }")
    assert plan(tmp_path, MATCHING, sized) == ["drbdsetup resize 0 --size=300M"]
    running = with_(disk__given={"resync-rate": "10240", "size": f"{300 << 11}s"})
    assert plan(tmp_path, running, sized) == []             # the same size, in sectors
    assert plan(tmp_path, running) == ["drbdsetup resize 0"]  # taken out: the cap goes
    assert plan(tmp_path, with_(disk__given={"size": "100M"}), sized) == [
        "drbdsetup disk-options 0 --set-defaults --resync-rate=10M",
        "drbdsetup resize 0 --size=300M"]


def test_changed_resource_options_are_set_with_defaults_for_the_rest(tmp_path: Path):
    conf = CONF.replace("  protocol C;", "  protocol C;\n  options { on-no-data-accessible "
                        "suspend-io; }")
    assert plan(tmp_path, MATCHING, conf) == [
        "drbdsetup resource-options r0 --set-defaults --on-no-data-accessible=suspend-io"]
    assert plan(tmp_path, with_(options={"on-no-data-accessible": "suspend-io"}), conf) == []
    assert plan(tmp_path, with_(options={"cpu-mask": "3"})) == [
        "drbdsetup resource-options r0 --set-defaults"]
