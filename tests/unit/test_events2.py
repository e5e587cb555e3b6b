"""drbdsetup events2 lines: the drbd-utils v9.22 test vectors of drbd-reference.md §4.3."""
import re

from replicator import events


def snap(**kw):
    base = dict(name="some-resource", minor=1000, volume=0, role="Secondary", peer="Unknown",
                conn="StandAlone", disk="Diskless", pdsk="DUnknown", susp=False, net=True,
                peer_name="some-peer", peer_node_id=1, local_addr="1.2.3.4:7789",
                peer_addr="5.6.7.8:7790", backing_dev=None)
    base.update(kw)
    return base


def step(old, **kw):
    new = events.objects(snap(**kw))
    return new, events.changes(old, new)


def test_create_lines_are_the_test_vectors():
    objs = events.objects(snap())
    lines = events.changes(None, objs, "create")
    assert lines == [
        "create resource name:some-resource role:Secondary suspended:no force-io-failures:no "
        "may_promote:no promotion_score:0",
        "create connection name:some-resource peer-node-id:1 conn-name:some-peer "
        "connection:StandAlone role:Unknown",
        "create device name:some-resource volume:0 minor:1000 backing_dev:none disk:Diskless "
        "client:no quorum:yes",
        "create peer-device name:some-resource peer-node-id:1 conn-name:some-peer volume:0 "
        "replication:Off peer-disk:DUnknown peer-client:no resync-suspended:no",
        "create path name:some-resource peer-node-id:1 conn-name:some-peer "
        "local:ipv4:1.2.3.4:7789 peer:ipv4:5.6.7.8:7790 established:no",
    ]


def test_change_lines_carry_only_what_changed_as_in_the_test_vectors():
    objs = events.objects(snap())
    objs, lines = step(objs, disk="UpToDate", backing_dev="/dev/sda")
    assert lines == [
        "change resource name:some-resource may_promote:yes promotion_score:10101",
        "change device name:some-resource volume:0 minor:1000 backing_dev:/dev/sda "
        "disk:UpToDate client:no quorum:yes"]
    objs, lines = step(objs, disk="UpToDate", backing_dev="/dev/sda", conn="Connected",
                       peer="Secondary", pdsk="Inconsistent")
    assert "change connection name:some-resource peer-node-id:1 conn-name:some-peer " \
           "connection:Connected role:Secondary" in lines
    assert "change path name:some-resource peer-node-id:1 conn-name:some-peer " \
           "local:ipv4:1.2.3.4:7789 peer:ipv4:5.6.7.8:7790 established:yes" in lines
    objs, lines = step(objs, disk="UpToDate", backing_dev="/dev/sda", conn="SyncSource",
                       peer="Secondary", pdsk="Inconsistent", rs_total_kib=800,
                       rs_left_kib=500)
    assert lines == ["change peer-device name:some-resource peer-node-id:1 "
                     "conn-name:some-peer volume:0 replication:SyncSource done:37.50"]
    objs, lines = step(objs, disk="UpToDate", backing_dev="/dev/sda", conn="SyncSource",
                       peer="Secondary", pdsk="Inconsistent", rs_total_kib=800,
                       rs_left_kib=400)
    assert lines == ["change peer-device name:some-resource peer-node-id:1 "
                     "conn-name:some-peer volume:0 done:50.00"]
    objs, lines = step(objs, disk="UpToDate", backing_dev="/dev/sda", conn="Connected",
                       peer="Secondary", pdsk="UpToDate")
    assert lines == ["change resource name:some-resource may_promote:yes promotion_score:10102",
                     "change peer-device name:some-resource peer-node-id:1 conn-name:some-peer "
                     "volume:0 replication:Established peer-disk:UpToDate peer-client:no"]
    objs, lines = step(objs, disk="UpToDate", backing_dev="/dev/sda", conn="Connected",
                       peer="Secondary", pdsk="UpToDate", role="Primary")
    assert lines == ["change resource name:some-resource role:Primary may_promote:no "
                     "promotion_score:10102"]
    assert events.changes(objs, events.objects(snap(
        disk="UpToDate", backing_dev="/dev/sda", conn="Connected", peer="Secondary",
        pdsk="UpToDate", role="Primary"))) == []


def test_the_same_peer_device_in_an_initial_exists_carries_done():
    objs = events.objects(snap(disk="UpToDate", conn="SyncSource", peer="Secondary",
                               pdsk="Inconsistent", rs_total_kib=800, rs_left_kib=500))
    lines = events.changes(None, objs, "exists")
    assert ("exists peer-device name:some-resource peer-node-id:1 conn-name:some-peer volume:0 "
            "replication:SyncSource peer-disk:Inconsistent peer-client:no resync-suspended:no "
            "done:37.50") in lines


def test_statistics_fields_are_the_test_vectors():
    s = snap(write_ordering="none", size_kib=5, read_kib=10, written_kib=15, al_writes=40,
             bm_writes=50, upper_pending=60, lower_pending=70, ap_in_flight_kib=10,
             rs_in_flight_kib=20, nr_kib=5, ns_kib=10, oos_kib=0, pending=30, unacked=40)
    lines = events.changes(None, events.objects(s, statistics=True), "exists")
    assert lines[0].endswith(" force-io-failures:no write-ordering:none may_promote:no "
                             "promotion_score:0")
    assert lines[1].endswith(" role:Unknown congested:no ap-in-flight:10 rs-in-flight:20")
    assert lines[2].endswith(" quorum:yes size:5 read:10 written:15 al-writes:40 bm-writes:50 "
                             "upper-pending:60 lower-pending:70 al-suspended:no blocked:no")
    assert lines[3].endswith(" resync-suspended:no received:5 sent:10 out-of-sync:0 pending:30 "
                             "unacked:40")


def test_statistics_while_syncing_add_dbdt1_and_eta():
    s = snap(disk="UpToDate", conn="SyncSource", peer="Secondary", pdsk="Inconsistent",
             rs_total_kib=800, rs_left_kib=500, rs_mark_left_kib=500 + 737, rs_mark_age_ms=3000)
    pd = [x for x in events.changes(None, events.objects(s, statistics=True), "exists")
          if " peer-device " in x][0]
    assert pd.endswith(" done:37.50 received:0 sent:0 out-of-sync:0 pending:0 unacked:0 "
                       "dbdt1:0.24 eta:2")


def test_destroy_lines_when_the_connection_goes_and_when_the_resource_goes():
    connected = events.objects(snap(disk="UpToDate", conn="Connected", peer="Secondary",
                                    pdsk="UpToDate"))
    alone = events.objects(snap(disk="UpToDate", net=False))
    assert events.changes(connected, alone) == [
        "change resource name:some-resource may_promote:yes promotion_score:10101",
        "destroy path name:some-resource peer-node-id:1 conn-name:some-peer "
        "local:ipv4:1.2.3.4:7789 peer:ipv4:5.6.7.8:7790",
        "destroy peer-device name:some-resource peer-node-id:1 conn-name:some-peer volume:0",
        "destroy connection name:some-resource peer-node-id:1 conn-name:some-peer"]
    assert events.changes(alone, None) == ["destroy device name:some-resource volume:0",
                                           "destroy resource name:some-resource"]


def test_full_prints_every_field_of_a_changed_object():
    a = events.objects(snap(disk="UpToDate"))
    b = events.objects(snap(disk="UpToDate", role="Primary"))
    assert events.changes(a, b, full=True)[0] == (
        "change resource name:some-resource role:Primary suspended:no force-io-failures:no "
        "may_promote:no promotion_score:10101")


def test_addresses_and_timestamp_prefix():
    assert events.address("10.0.0.1:7788") == "ipv4:10.0.0.1:7788"
    assert events.address("ipv4:10.0.0.1:7788") == "ipv4:10.0.0.1:7788"
    assert events.address("[fe80::1]:7788") == "ipv6:[fe80::1]:7788"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d ",
                        events.timestamp())
