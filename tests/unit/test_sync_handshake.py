"""The 8.4 resync decision (replicator.sync_handshake): uuid_compare rules, post-processing,
after-split-brain policies, and the two-node consistency of the decisions."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import pytest

from replicator import uuids as U
from replicator.states import Conn, Disk, Role
from replicator.sync_handshake import (
    Compare, PeerInfo, convert_after_sb, discard_node_policy, effective_disk, sync_handshake,
    uuid_compare, uuid_dump,
)

P, S = Role.Primary, Role.Secondary
OFF = U.UUID_NEW_BM_OFFSET
FRESH = (4, 0, 0, 0)

# the real 8.4 log sample (drbd-reference.md §3.7)
SAMPLE_SELF = PeerInfo((0x7622BD9FADB3F245, 0xF41008BDA13DED73, 0x0001000000000000,
                        0x0001000000000000), bits=42, flags=0, role=P, disk=Disk.UpToDate)
SAMPLE_PEER = PeerInfo((0xF41008BDA13DED72, 0, 0x0001000000000000, 0x0001000000000000),
                       bits=0, flags=0, role=S, disk=Disk.Consistent)


def node(uuids, bits=0, flags=0, role=S, disk=Disk.UpToDate) -> PeerInfo:
    return PeerInfo(tuple(uuids), bits, flags, role, disk)


def cmp(a: PeerInfo, b: PeerInfo, rc: bool = False, **kw) -> tuple[int, int]:
    hg, rule = uuid_compare(a, b, resolve_conflicts=rc, **kw)
    return hg, rule


def both(a: PeerInfo, b: PeerInfo, a_rc: bool = True, **kw):
    """Run the handshake on both nodes with mirrored inputs (RESOLVE_CONFLICTS on one)."""
    kw_b = dict(kw)
    for key in ("after_sb_0pri",):
        if key in kw_b:
            kw_b[key] = convert_after_sb(kw_b[key])
    return (sync_handshake(a, b, resolve_conflicts=a_rc, **kw),
            sync_handshake(b, a, resolve_conflicts=not a_rc, **kw_b))


# --- uuid_compare: one test per rule, from the reference's scenarios -------------------------

def test_rule_10_both_just_created_no_sync():
    assert cmp(node(FRESH, disk=Disk.Inconsistent), node(FRESH, disk=Disk.Inconsistent)) == (0, 10)


def test_rules_20_30_primary_force_then_connect_full_sync_from_it():
    forced = node(U.new_current(list(FRESH), primary=True, rand=0xA100), role=P)
    fresh = node(FRESH, disk=Disk.Inconsistent)
    assert forced.uuids == (0xA101, 4, 0, 0)
    assert cmp(fresh, forced) == (-2, 20)
    assert cmp(forced, fresh) == (2, 30)
    # a zeroed current UUID counts like a just-created one
    assert cmp(node((0, 0, 0, 0)), forced) == (-2, 20)
    assert cmp(forced, node((0, 0, 0, 0))) == (2, 30)


def test_rules_20_30_full_handshake_logs_and_directions():
    forced = node((0xA101, 4, 0, 0), role=P)
    fresh = node(FRESH, disk=Disk.Inconsistent)
    src, tgt = both(forced, fresh)
    assert (src.action, src.full_sync, src.hg, src.conn) == ("sync_source", True, 2, Conn.WFBitMapS)
    assert (tgt.action, tgt.full_sync, tgt.hg, tgt.conn) == \
        ("sync_target", True, -2, Conn.WFBitMapT)
    assert src.log == [
        "drbd_sync_handshake:",
        "self 000000000000A101:0000000000000004:0000000000000000:0000000000000000 bits:0 flags:0",
        "peer 0000000000000004:0000000000000000:0000000000000000:0000000000000000 bits:0 flags:0",
        "uuid_compare()=2 by rule 30",
        "Becoming sync source due to disk states.",
        "Writing the whole bitmap, full sync required after drbd_sync_handshake.",
    ]
    assert tgt.log[3:] == [
        "uuid_compare()=-2 by rule 20",
        "Becoming sync target due to disk states.",
        "Writing the whole bitmap, full sync required after drbd_sync_handshake.",
    ]


def test_real_log_sample_rule_70_and_its_mirror_rule_50():
    d = sync_handshake(SAMPLE_SELF, SAMPLE_PEER, resolve_conflicts=False)
    assert d.log == [
        "drbd_sync_handshake:",
        "self 7622BD9FADB3F245:F41008BDA13DED73:0001000000000000:0001000000000000 bits:42 flags:0",
        "peer F41008BDA13DED72:0000000000000000:0001000000000000:0001000000000000 bits:0 flags:0",
        "uuid_compare()=1 by rule 70",
    ]
    assert (d.action, d.full_sync, d.conn, d.uuids) == ("sync_source", False, Conn.WFBitMapS, None)
    peer = sync_handshake(SAMPLE_PEER, SAMPLE_SELF, resolve_conflicts=True)
    assert peer.log[3] == "uuid_compare()=-1 by rule 50"
    assert (peer.action, peer.full_sync) == ("sync_target", False)


def test_self_dump_flags_are_always_zero_peer_flags_in_hex():
    me = replace(SAMPLE_SELF, flags=2)
    peer = replace(SAMPLE_PEER, flags=0xC)
    d = sync_handshake(me, peer, resolve_conflicts=False)
    assert d.log[1].endswith("bits:42 flags:0")
    assert d.log[2].endswith("bits:0 flags:C")
    assert uuid_dump("peer", FRESH, 7, 255) == (
        "peer 0000000000000004:0000000000000000:0000000000000000:0000000000000000 bits:7 flags:FF")


# A SyncSource that started a resync: the real sample after "updated sync UUID".
SRC_STARTED = U.gen_sync_uuid(list(SAMPLE_SELF.uuids))[0]
TGT_BEFORE = list(SAMPLE_PEER.uuids)


def test_rule_34_35_sync_source_missed_resync_finished():
    target = U.resync_finished_target(
        U.receive_sync_uuid(TGT_BEFORE, SRC_STARTED[1], False), list(SAMPLE_SELF.uuids), False)
    src, tgt = node(SRC_STARTED, bits=0, role=P), node(target)
    a = uuid_compare(src, tgt, resolve_conflicts=False)
    assert (a.hg, a.rule) == (1, 34)
    assert a.fix_self == (0x7622BD9FADB3F245, 0, 0xF41108BDA13DED73, 0xF41008BDA13DED73)
    assert a.fix_peer is None
    assert a.events == (
        ("info", "was SyncSource, missed the resync finished event, corrected myself:"),
        ("info", "self 7622BD9FADB3F245:0000000000000000:F41108BDA13DED73:F41008BDA13DED73 "
                 "bits:0 flags:0"))
    b = uuid_compare(tgt, src, resolve_conflicts=True)
    assert (b.hg, b.rule) == (-1, 35)
    assert b.fix_peer == a.fix_self and b.fix_self is None
    assert b.events[0] == ("info", "was SyncTarget, peer missed the resync finished event, "
                                   "corrected peer:")
    d = sync_handshake(src, tgt, resolve_conflicts=False)
    assert d.uuids == a.fix_self and d.action == "sync_source"
    assert d.log[3:5] == ["was SyncSource, missed the resync finished event, corrected myself:",
                          "self 7622BD9FADB3F245:0000000000000000:F41108BDA13DED73:"
                          "F41008BDA13DED73 bits:0 flags:0"]
    assert d.log[5] == "uuid_compare()=1 by rule 34"
    assert sync_handshake(tgt, src, resolve_conflicts=True).peer_uuids == a.fix_self


def test_rule_36_37_equal_current_bitmap_uuid_on_one_side_only():
    a, b = node((0xC0, 0xB0, 0x10, 0x20)), node((0xC0, 0, 0x30, 0x40))
    r = uuid_compare(a, b, resolve_conflicts=False)
    assert (r.hg, r.rule, r.fix_self, r.fix_peer) == (1, 36, None, None)
    assert r.events == (("info", "was SyncSource (peer failed to write sync_uuid)"),)
    r = uuid_compare(b, a, resolve_conflicts=True)
    assert (r.hg, r.rule) == (-1, 37)
    assert r.events == (("info", "was SyncTarget (failed to write sync_uuid)"),)


def test_rules_34_to_37_need_protocol_91():
    a, b = node((0xC0, 0xB0, 0x10, 0x20)), node((0xC0, 0, 0x30, 0x40))
    assert cmp(a, b, peer_proto=90) == (-1091, 30)
    assert cmp(b, a, peer_proto=90) == (-1091, 30)
    d = sync_handshake(a, b, resolve_conflicts=False, peer_proto=90)
    assert d.action == "disconnect"
    assert d.log[-2:] == ["uuid_compare()=-1091 by rule 30",
                          "To resolve this both sides have to support at least protocol 91"]


def test_rule_40_crashed_primary_arbitration():
    same = (0xC0, 0, 0x10, 0x20)
    plain, crashed = node(same), node(same, flags=2)
    assert cmp(plain, plain) == (0, 40)
    assert cmp(crashed, plain) == (1, 40)
    assert cmp(plain, crashed) == (-1, 40)
    assert cmp(crashed, crashed, rc=True) == (-1, 40)    # both crashed: RESOLVE_CONFLICTS yields
    assert cmp(crashed, crashed, rc=False) == (1, 40)
    # both bitmap UUIDs set counts as "no bitmap UUID to tell" too
    assert cmp(node((0xC0, 0xB0, 0, 0), flags=2), node((0xC0, 0xB2, 0, 0))) == (1, 40)


def test_rule_40_bit0_of_current_is_masked():
    assert cmp(node((0xC1, 0, 0x10, 0)), node((0xC0, 0, 0x10, 0))) == (0, 40)


def test_rule_41_current_primary_wins_equal_unrotated_uuids():
    same = (0xC1, 0, 0x10, 0x20)
    pri, sec = node(same, role=P), node(same, flags=2)
    assert cmp(pri, sec) == (1, 41)
    assert cmp(sec, pri) == (-1, 41)
    both_pri = uuid_compare(pri, replace(sec, role=P), resolve_conflicts=False)
    assert (both_pri.hg, both_pri.rule) == (-100, 41)
    assert both_pri.events == (("err", "Equivalent unrotated UUIDs, but both are primary. "
                                       "Can not resolve this."),)
    assert cmp(node(same, role=P), node(same)) == (0, 40)    # no crash flag: plain hickup


def test_rule_41_needs_write_same_feature():
    same = (0xC1, 0, 0x10, 0x20)
    d = sync_handshake(node(same, role=P), node(same, flags=2), resolve_conflicts=False,
                       peer_features=0x3)
    assert (d.action, d.compare.hg, d.rule) == ("disconnect", -66661, 41)
    assert d.log[3:] == ["Equivalent unrotated UUIDs, but current primary present.",
                         "uuid_compare()=-66661 by rule 41",
                         "To resolve this both sides have to support at least protocol 101 "
                         "and feature flags 0x4"]


def test_rule_50_70_node_coming_back_after_the_other_wrote():
    base = (0xC0, 0, 0x10, 0x20)
    writer = node(U.new_current(list(base), primary=True, rand=0xD000), bits=5, role=P)
    assert writer.uuids == (0xD001, 0xC0, 0x10, 0x20)
    back = node(base)
    assert cmp(back, writer) == (-1, 50)
    assert cmp(writer, back) == (1, 70)
    src, tgt = both(writer, back)
    assert (src.action, src.full_sync, tgt.action, tgt.full_sync) == \
        ("sync_source", False, "sync_target", False)


def test_rule_51_71_lost_sync_uuid_packet_is_undone():
    src, tgt = node(SRC_STARTED, role=P), node(TGT_BEFORE)
    t = uuid_compare(tgt, src, resolve_conflicts=True)
    assert (t.hg, t.rule) == (-1, 51)
    assert t.fix_peer == SAMPLE_SELF.uuids                # back to before the resync start
    assert t.events[0] == ("info", "Lost last syncUUID packet, corrected:")
    assert t.events[1][1].startswith("peer 7622BD9FADB3F245:F41008BDA13DED73:0001")
    s = uuid_compare(src, tgt, resolve_conflicts=False)
    assert (s.hg, s.rule) == (1, 71)
    assert s.fix_self == SAMPLE_SELF.uuids
    assert s.events[0] == ("info", "Last syncUUID did not get through, corrected:")
    d = sync_handshake(src, tgt, resolve_conflicts=False)
    assert d.uuids == SAMPLE_SELF.uuids and d.action == "sync_source"


def test_rule_51_71_before_protocol_96_compare_history_instead():
    src, tgt = node((0xC0, 0xB4, 0xB0, 0x20)), node((0xB0, 0, 0x20, 0))
    assert cmp(tgt, src, peer_proto=95) == (-1, 51)       # tgt.H1 == src.H2
    assert cmp(src, tgt, peer_proto=95) == (1, 71)
    assert cmp(tgt, src, peer_proto=101) == (-2, 60)      # no +OFFSET relation
    assert cmp(src, tgt, peer_proto=101) == (2, 80)
    assert cmp(tgt, src, peer_proto=90) == (-1091, 51)
    assert cmp(src, tgt, peer_proto=90) == (-1091, 71)


def test_rule_60_80_peer_is_more_than_one_generation_ahead():
    # A disconnected primary, then `new-current-uuid`: the old base is now history
    a = U.new_current([0xC0, 0, 0x10, 0], primary=True, rand=0xD000)       # [D1, C0, 10, 0]
    a = U.new_current(U.rotate_bitmap_into_history(a), primary=True, rand=0xE000)
    assert a == [0xE001, 0xD001, 0xC0, 0x10]
    ahead, behind = node(a, role=P), node((0xC0, 0, 0x10, 0))
    assert cmp(behind, ahead) == (-2, 60)
    assert cmp(ahead, behind) == (2, 80)
    src, tgt = both(ahead, behind)
    assert src.full_sync and tgt.full_sync and tgt.action == "sync_target"


def test_rule_90_both_diverged_from_the_same_base_is_split_brain():
    base = [0xC0, 0, 0x10, 0]
    a = node(U.new_current(base, True, 0xA000), bits=3, role=P)
    b = node(U.new_current(base, True, 0xB000), bits=1, role=P)
    assert cmp(a, b) == (100, 90) and cmp(b, a) == (100, 90)


def test_rule_100_common_history_only():
    assert cmp(node((0xA0, 0, 0x10, 0x20)), node((0xB0, 0, 0x30, 0x10))) == (-100, 100)


def test_unrelated_data_aborts():
    a, b = node((0xA0, 0, 0x10, 0x20)), node((0xB0, 0xB2, 0x30, 0x40))
    assert cmp(a, b) == (-1000, 100)
    d = sync_handshake(a, b, resolve_conflicts=False)
    assert d.action == "disconnect" and d.conn is None
    assert d.log[-2:] == ["uuid_compare()=-1000 by rule 100", "Unrelated data, aborting!"]
    assert d.events[-1] == ("alert", "Unrelated data, aborting!")


def test_compare_unpacks_as_hg_rule():
    r = uuid_compare(SAMPLE_SELF, SAMPLE_PEER, resolve_conflicts=False)
    assert isinstance(r, Compare)
    assert tuple(r) == (1, 70)


# --- post-processing ----------------------------------------------------------------------

def test_disk_state_override():
    # equal UUIDs but the peer is Inconsistent (e.g. invalidate-remote): force the direction
    same = (0xC0, 0, 0x10, 0)
    up, inc = node(same), node(same, disk=Disk.Inconsistent)
    src, tgt = both(up, inc)
    assert src.log[4] == "Becoming sync source due to disk states."
    assert tgt.log[4] == "Becoming sync target due to disk states."
    assert (src.hg, src.full_sync, tgt.hg, tgt.full_sync) == (1, False, -1, False)
    # full sync only when hg was +-2 or -100; here rule 50 would have been a bitmap resync,
    # but the disk states turn the direction around
    d = sync_handshake(node((0xC0, 0, 0x10, 0), disk=Disk.Inconsistent),
                       node((0xD1, 0xC0, 0x10, 0)), resolve_conflicts=False)
    assert (d.compare.hg, d.hg, d.action) == (-1, -1, "sync_target")
    d = sync_handshake(node((0xA0, 0, 0x10, 0)), node((0xB0, 0, 0x10, 0), disk=Disk.Inconsistent),
                       resolve_conflicts=False)
    assert (d.compare.hg, d.hg, d.full_sync, d.action) == (-100, 2, True, "sync_source")
    assert not d.split_brain and not d.initial_split_brain


def test_negotiating_disk_is_resolved_by_the_inconsistent_flag():
    same = (0xC0, 0, 0x10, 0)
    attaching = node(same, flags=4, disk=Disk.Negotiating)
    assert effective_disk(attaching) == Disk.Inconsistent
    assert effective_disk(node(same, disk=Disk.Negotiating)) == Disk.Consistent
    d = sync_handshake(node(same), attaching, resolve_conflicts=False)
    assert d.action == "sync_source" and "Becoming sync source due to disk states." in d.log


def test_inconsistent_node_refuses_to_be_source():
    d = sync_handshake(node((0xD1, 0xC0, 0, 0), disk=Disk.Inconsistent),
                       node((0xC0, 0, 0, 0), disk=Disk.Inconsistent), resolve_conflicts=False)
    assert d.action == "disconnect"
    assert d.log[-1] == "I shall become SyncSource, but I am inconsistent!"


@pytest.mark.parametrize("policy, action, extra, handlers", [
    ("disconnect", "disconnect", ["I shall become SyncTarget, but I am primary!"], []),
    ("call-pri-lost", "disconnect", ["I shall become SyncTarget, but I am primary!"], ["pri-lost"]),
    ("violently", "sync_target",
     ["Becoming SyncTarget, violating the stable-data assumption"], []),
])
def test_rr_conflict(policy, action, extra, handlers):
    back = node((0xC1, 0, 0x10, 0), role=P)              # Primary, but the peer is newer
    d = sync_handshake(back, node((0xD0, 0xC0, 0x10, 0)), resolve_conflicts=False,
                       rr_conflict=policy)
    assert d.action == action and d.handlers == handlers
    assert d.log[4:5] == extra
    # a Secondary has no conflict
    d = sync_handshake(replace(back, role=S), node((0xD0, 0xC0, 0x10, 0)),
                       resolve_conflicts=False, rr_conflict=policy)
    assert d.action == "sync_target"


def test_no_resync_but_bits_in_bitmap():
    d = sync_handshake(node((0xC0, 0, 0, 0), bits=7), node((0xC0, 0, 0, 0)),
                       resolve_conflicts=False)
    assert (d.action, d.conn, d.full_sync) == ("connected", Conn.Connected, False)
    assert d.log[-1] == "No resync, but 7 bits in bitmap!"
    d = sync_handshake(node((0xC0, 0, 0, 0)), node((0xC0, 0, 0, 0), bits=7),
                       resolve_conflicts=False)
    assert d.log[-1] == "uuid_compare()=0 by rule 40"


def test_fresh_fresh_connects_without_sync():
    a = node(FRESH, disk=Disk.Inconsistent)
    d = sync_handshake(a, a, resolve_conflicts=True)
    assert (d.action, d.hg, d.rule, d.full_sync) == ("connected", 0, 10, False)
    assert d.log[-1] == "uuid_compare()=0 by rule 10"


def test_dry_run_logs_and_disconnects():
    d = sync_handshake(SAMPLE_SELF, SAMPLE_PEER, resolve_conflicts=False, dry_run=True)
    assert d.action == "disconnect"
    assert d.log[-1] == "dry-run connect: Would become SyncSource, doing a bit-map based resync."
    d = sync_handshake(node(FRESH), node(FRESH), resolve_conflicts=False, dry_run=True)
    assert d.log[-1] == "dry-run connect: No resync, would become Connected immediately."


def test_unknown_policies_are_rejected():
    with pytest.raises(ValueError):
        sync_handshake(SAMPLE_SELF, SAMPLE_PEER, resolve_conflicts=False, after_sb_0pri="yolo")
    with pytest.raises(ValueError):
        sync_handshake(SAMPLE_SELF, SAMPLE_PEER, resolve_conflicts=False, rr_conflict="consensus")
    with pytest.raises(ValueError):
        PeerInfo((1, 2, 3), 0, 0, S, Disk.UpToDate)


def test_role_overrides():
    same = (0xC1, 0, 0x10, 0x20)
    d = sync_handshake(node(same), node(same, flags=2), resolve_conflicts=False, i_am_primary=True)
    assert (d.rule, d.action) == (41, "sync_source")
    d = sync_handshake(node(same, role=P), node(same, flags=2), resolve_conflicts=False,
                       i_am_primary=False, peer_is_primary=True)
    assert (d.rule, d.action) == (41, "sync_target")


# --- split brain: after-sb policies -------------------------------------------------------

BASE = [0xC0, 0, 0x10, 0]


def split(a_bits=0, b_bits=0, a_role=S, b_role=S, a_older=False, b_older=False):
    """Both diverged from BASE (rule 90). `*_older`: was already Primary when the split
    happened (bit 0 of its Bitmap UUID)."""
    def side(rand, bits, role, older):
        start = U.with_role_bit(BASE[0], older)
        return node([rand | (role == P), start, 0x10, 0], bits=bits, role=role)
    return side(0xA000, a_bits, a_role, a_older), side(0xB000, b_bits, b_role, b_older)


def sb(a, b, a_rc=True, **kw):
    da, db = both(a, b, a_rc=a_rc, **kw)
    assert da.rule == db.rule == 90
    return da, db


def assert_solved(da, db, pcount, a_is_source, full=False):
    src, tgt = (da, db) if a_is_source else (db, da)
    assert (src.action, tgt.action) == ("sync_source", "sync_target")
    assert src.full_sync == tgt.full_sync == full
    assert f"Split-Brain detected, {pcount} primaries, automatically solved. " \
           "Sync from this node" in src.log
    assert f"Split-Brain detected, {pcount} primaries, automatically solved. " \
           "Sync from peer node" in tgt.log
    for d in (da, db):
        assert d.initial_split_brain and not d.split_brain


def assert_unresolved(*ds):
    for d in ds:
        assert d.action == "disconnect" and d.split_brain
        assert d.handlers[0] == "initial-split-brain" and d.handlers[-1] == "split-brain"
        assert d.log[-1] == "Split-Brain detected but unresolved, dropping connection!"


def test_default_disconnect_leaves_split_brain_unresolved():
    assert_unresolved(*sb(*split(2, 3)))


def test_discard_younger_primary():
    a, b = split(2, 5, a_older=True)                         # a was Primary first
    assert_solved(*sb(a, b, after_sb_0pri="discard-younger-primary"), 0, a_is_source=True)
    a, b = split(9, 5, b_older=True)
    assert_solved(*sb(a, b, after_sb_0pri="discard-younger-primary"), 0, a_is_source=False)


def test_discard_older_primary():
    a, b = split(2, 5, a_older=True)
    assert_solved(*sb(a, b, after_sb_0pri="discard-older-primary"), 0, a_is_source=False)


@pytest.mark.parametrize("policy", ["discard-younger-primary", "discard-older-primary"])
def test_younger_older_fall_back_to_least_changes(policy):
    da, db = sb(*split(2, 5), after_sb_0pri=policy)
    assert_solved(da, db, 0, a_is_source=False)
    i = da.log.index("Discard younger/older primary did not find a decision")
    assert da.log[i + 1] == "Using discard-least-changes instead"
    assert ("warn", "Discard younger/older primary did not find a decision\n"
                    "Using discard-least-changes instead") in da.events


def test_discard_zero_changes():
    assert_solved(*sb(*split(0, 4), after_sb_0pri="discard-zero-changes"), 0, a_is_source=False)
    assert_solved(*sb(*split(4, 0), after_sb_0pri="discard-zero-changes"), 0, a_is_source=True)
    # neither changed: the node with RESOLVE_CONFLICTS discards
    assert_solved(*sb(*split(0, 0), a_rc=True, after_sb_0pri="discard-zero-changes"), 0,
                  a_is_source=False)
    assert_solved(*sb(*split(0, 0), a_rc=False, after_sb_0pri="discard-zero-changes"), 0,
                  a_is_source=True)
    assert_unresolved(*sb(*split(1, 4), after_sb_0pri="discard-zero-changes"))


def test_discard_least_changes():
    assert_solved(*sb(*split(3, 4), after_sb_0pri="discard-least-changes"), 0, a_is_source=False)
    assert_solved(*sb(*split(5, 4), after_sb_0pri="discard-least-changes"), 0, a_is_source=True)
    assert_solved(*sb(*split(4, 4), a_rc=True, after_sb_0pri="discard-least-changes"), 0,
                  a_is_source=False)


def test_discard_local_remote_and_discard_node():
    # a's config says discard-local; the peer's (converted) says discard-remote
    assert_solved(*sb(*split(9, 0), after_sb_0pri="discard-local"), 0, a_is_source=False)
    assert_solved(*sb(*split(0, 9), after_sb_0pri="discard-remote"), 0, a_is_source=True)
    assert convert_after_sb("discard-local") == "discard-remote"
    assert convert_after_sb("consensus") == "consensus"
    assert discard_node_policy("discard-node-alice", "alice") == "discard-local"
    assert discard_node_policy("discard-node-alice", "bob") == "discard-remote"
    assert discard_node_policy("disconnect", "bob") == "disconnect"


@pytest.mark.parametrize("policy", ["consensus", "discard-secondary", "call-pri-lost-after-sb",
                                    "violently-as0p"])
def test_0pri_configuration_error(policy):
    da, db = sb(*split(1, 2), after_sb_0pri=policy)
    assert_unresolved(da, db)
    assert "Configuration error." in da.log


def test_1pri_discard_secondary():
    a, b = split(1, 9, a_role=P)
    assert_solved(*sb(a, b, after_sb_1pri="discard-secondary"), 1, a_is_source=True)


def test_1pri_consensus():
    a, b = split(1, 9, a_role=P)                 # least-changes would discard the Primary
    assert_unresolved(*sb(a, b, after_sb_0pri="discard-least-changes", after_sb_1pri="consensus"))
    a, b = split(9, 1, a_role=P)                 # ... here it discards the Secondary: agreed
    assert_solved(*sb(a, b, after_sb_0pri="discard-least-changes", after_sb_1pri="consensus"), 1,
                  a_is_source=True)


def test_1pri_violently_as0p_even_if_primary_loses():
    a, b = split(1, 9, a_role=P)
    da, db = sb(a, b, after_sb_0pri="discard-least-changes", after_sb_1pri="violently-as0p",
                rr_conflict="violently")
    assert_solved(da, db, 1, a_is_source=False)
    assert "Becoming SyncTarget, violating the stable-data assumption" in da.log
    # with the default rr-conflict the losing Primary drops the connection instead
    da, db = sb(a, b, after_sb_0pri="discard-least-changes", after_sb_1pri="violently-as0p")
    assert da.action == "disconnect"
    assert da.log[-1] == "I shall become SyncTarget, but I am primary!"


def test_1pri_call_pri_lost_after_sb_demotes_the_loser():
    a, b = split(1, 9, a_role=P)
    da, db = sb(a, b, after_sb_0pri="discard-least-changes", after_sb_1pri="call-pri-lost-after-sb")
    assert_solved(da, db, 1, a_is_source=False)
    assert da.demote and not db.demote
    kinds = [k for k, _ in da.events]
    i = kinds.index("demote")
    assert da.events[i + 1] == ("warn", "Successfully gave up primary role.")
    assert not any("I am primary" in line for line in da.log)   # rr-conflict sees a Secondary


def test_1pri_call_pri_lost_after_sb_runs_handler_when_demotion_fails():
    a, b = split(1, 9, a_role=P)
    da = sync_handshake(a, b, resolve_conflicts=True, after_sb_0pri="discard-least-changes",
                        after_sb_1pri="call-pri-lost-after-sb", can_demote=False)
    assert da.pri_lost_after_sb and not da.demote
    assert da.handlers == ["initial-split-brain", "pri-lost-after-sb", "split-brain"]
    assert da.action == "disconnect"
    # the winner is not affected
    a, b = split(9, 1, a_role=P)
    da = sync_handshake(a, b, resolve_conflicts=True, after_sb_0pri="discard-least-changes",
                        after_sb_1pri="call-pri-lost-after-sb", can_demote=False)
    assert da.action == "sync_source" and not da.pri_lost_after_sb


@pytest.mark.parametrize("policy", ["discard-younger-primary", "discard-zero-changes",
                                    "discard-least-changes", "discard-local"])
def test_1pri_configuration_error(policy):
    a, b = split(1, 2, a_role=P)
    da = sync_handshake(a, b, resolve_conflicts=True, after_sb_1pri=policy)
    assert "Configuration error." in da.log and da.split_brain


def test_2pri_policies():
    a, b = split(1, 9, a_role=P, b_role=P)
    assert_unresolved(*sb(a, b, after_sb_2pri="disconnect"))
    da, db = sb(a, b, after_sb_0pri="discard-least-changes", after_sb_2pri="violently-as0p",
                rr_conflict="violently")
    assert_solved(da, db, 2, a_is_source=False)
    da, db = sb(a, b, after_sb_0pri="discard-least-changes", after_sb_2pri="call-pri-lost-after-sb")
    assert_solved(da, db, 2, a_is_source=False)
    assert da.demote and not db.demote
    da = sync_handshake(a, b, resolve_conflicts=True, after_sb_2pri="consensus")
    assert "Configuration error." in da.log and da.split_brain


def test_always_asbp_applies_policies_to_rule_100_with_full_sync():
    a, b = node((0xA0, 0, 0x10, 0x20), bits=1), node((0xB0, 0, 0x30, 0x10), bits=5)
    da, db = both(a, b, after_sb_0pri="discard-least-changes")
    assert_unresolved(da, db)
    da, db = both(a, b, after_sb_0pri="discard-least-changes", always_asbp=True)
    assert (da.compare.hg, da.rule) == (-100, 100)
    assert (da.action, da.hg, da.full_sync) == ("sync_target", -2, True)
    assert (db.action, db.hg, db.full_sync) == ("sync_source", 2, True)
    assert da.log[-3:] == [
        "Split-Brain detected, 0 primaries, automatically solved. Sync from peer node",
        "Doing a full sync, since UUIDs where ambiguous.",
        "Writing the whole bitmap, full sync required after drbd_sync_handshake."]


def test_discard_my_data_resolves_split_brain_in_both_directions():
    a, b = split(3, 3, a_role=P)
    # the victim (b) connects with --discard-my-data; its P_UUIDS carries flag 1
    victim = replace(b, flags=1)
    db = sync_handshake(victim, a, resolve_conflicts=False, discard_my_data=True)
    da = sync_handshake(a, victim, resolve_conflicts=True)
    assert (da.action, db.action) == ("sync_source", "sync_target")
    assert da.log[-1] == "Split-Brain detected, manually solved. Sync from this node"
    assert db.log[-1] == "Split-Brain detected, manually solved. Sync from peer node"
    assert not da.full_sync and da.initial_split_brain and not da.split_brain
    # other way round: the primary discards (as a Primary, rr-conflict then drops it)
    pri_victim = replace(a, flags=1)
    da = sync_handshake(pri_victim, b, resolve_conflicts=True, rr_conflict="violently")
    db = sync_handshake(b, pri_victim, resolve_conflicts=False)
    assert (da.action, db.action) == ("sync_target", "sync_source")
    assert sync_handshake(pri_victim, b, resolve_conflicts=True).action == "disconnect"
    # the flag on self is taken from PeerInfo.flags unless given
    assert sync_handshake(victim, a, resolve_conflicts=False).action == "sync_target"
    assert sync_handshake(victim, a, resolve_conflicts=False,
                          discard_my_data=False).split_brain             # explicit False wins
    # ...and both sides with the flag cannot decide
    assert sync_handshake(victim, replace(a, flags=1), resolve_conflicts=False).split_brain


# --- two nodes, mirrored inputs: the decisions must agree --------------------------------

MIRROR_RULE = {10: 10, 20: 30, 30: 20, 34: 35, 35: 34, 36: 37, 37: 36, 40: 40, 41: 41,
               50: 70, 70: 50, 51: 71, 71: 51, 60: 80, 80: 60, 90: 90, 100: 100}
SYMMETRIC_HG = {100, -100, -1000}


@dataclass(frozen=True)
class Node:
    """What the simulation tracks of one node."""
    uuids: tuple
    bits: int = 0
    crashed: bool = False
    role: Role = S
    disk: Disk = Disk.Inconsistent

    def info(self) -> PeerInfo:
        return PeerInfo(self.uuids, self.bits, 2 if self.crashed else 0, self.role, self.disk)


def _fresh_id(a: Node, b: Node) -> int:
    """Next generation UUID: deterministic, far from +OFFSET values, bit 0 clear."""
    ids = [(u & (OFF - 1)) >> 8 for u in a.uuids + b.uuids]
    return (max(ids) + 1) << 8


def _new_current(n: Node, rand: int, primary: bool) -> Node:
    return replace(n, uuids=tuple(U.new_current(list(n.uuids), primary, rand)))


def _local_events(a: Node, b: Node):
    """Events on one node while disconnected (yields the node's new state)."""
    rand = _fresh_id(a, b)
    if a.role == S and a.disk == Disk.UpToDate:
        n = replace(a, role=P)
        yield _new_current(n, rand, True) if n.uuids[1] == 0 else n
    if a.disk == Disk.Inconsistent:                         # primary --force
        yield _new_current(replace(a, role=P, disk=Disk.UpToDate), rand, True)
    if a.role == P:
        yield replace(a, bits=min(a.bits + 1, 2))           # write
        yield replace(a, role=S)                            # secondary
        yield replace(a, role=S, crashed=True)              # crash + reboot + attach
    if a.disk == Disk.UpToDate:                             # new-current-uuid
        u = U.new_current(U.rotate_bitmap_into_history(list(a.uuids)), a.role == P, rand)
        yield replace(a, uuids=tuple(u))


def _after_link_loss(n: Node, rand: int) -> Node:
    """A Primary losing its peer with an empty bitmap UUID starts a new generation."""
    if n.role == P and n.uuids[1] == 0 and n.disk == Disk.UpToDate:
        return _new_current(n, rand, True)
    return n


def _resync(src: Node, tgt: Node, rand: int, variant: str) -> tuple[Node, Node]:
    """Play a resync between two nodes. Variants: ok, lost (P_SYNC_UUID lost, link breaks),
    half (target finished, the source missed the finish)."""
    at_handshake = list(src.uuids)                  # what the target got in P_UUIDS
    s_uuids, sync_uuid = U.gen_sync_uuid(at_handshake, rand=rand)
    src = replace(src, uuids=tuple(s_uuids))
    if variant == "lost":
        return src, tgt
    t = U.receive_sync_uuid(list(tgt.uuids), sync_uuid, tgt.role == P)
    t = U.resync_finished_target(t, at_handshake, tgt.role == P)
    tgt = replace(tgt, uuids=tuple(t), disk=Disk.UpToDate, bits=0, crashed=False)
    if variant == "half":
        return src, tgt
    src = replace(src, uuids=tuple(U.resync_finished_source(list(src.uuids))), bits=0,
                  crashed=False)
    assert [u & ~1 for u in src.uuids] == [u & ~1 for u in tgt.uuids]
    return src, tgt


def _configs(da_probe, a: Node, b: Node):
    """The configurations worth trying for this pair: all policies only at split brain."""
    if abs(da_probe.hg) != 100:
        for rr in ("disconnect", "violently"):
            yield dict(rr_conflict=rr)
        return
    pcount = (a.role == P) + (b.role == P)
    p0 = ["disconnect", "discard-younger-primary", "discard-older-primary",
          "discard-zero-changes", "discard-least-changes", "discard-local", "discard-remote"]
    p1 = ["disconnect", "consensus", "discard-secondary", "call-pri-lost-after-sb",
          "violently-as0p"] if pcount == 1 else ["disconnect"]
    p2 = ["disconnect", "violently-as0p", "call-pri-lost-after-sb"] if pcount == 2 \
        else ["disconnect"]
    for s0, s1, s2, asbp, rr in itertools.product(p0, p1, p2, (False, True),
                                                  ("disconnect", "violently")):
        yield dict(after_sb_0pri=s0, after_sb_1pri=s1, after_sb_2pri=s2, always_asbp=asbp,
                   rr_conflict=rr)


def _check_compare(a: PeerInfo, b: PeerInfo, a_rc: bool) -> Compare:
    ra = uuid_compare(a, b, resolve_conflicts=a_rc)
    rb = uuid_compare(b, a, resolve_conflicts=not a_rc)
    where = f"{U.fmt(list(a.uuids))} vs {U.fmt(list(b.uuids))}"
    assert rb.rule == MIRROR_RULE[ra.rule], where
    assert rb.hg == (ra.hg if ra.hg in SYMMETRIC_HG else -ra.hg), where
    assert (ra.fix_self, ra.fix_peer) == (rb.fix_peer, rb.fix_self), where
    return ra


def _check_decisions(a: Node, b: Node, seen: set) -> list[tuple]:
    """Both handshakes, every relevant configuration; returns the agreed outcomes."""
    ia, ib = a.info(), b.info()
    outcomes = []
    for a_rc in (True, False):
        probe = _check_compare(ia, ib, a_rc)
        seen.add(probe.rule)
        for cfg in _configs(probe, a, b):
            for can_demote in (True, False):
                da, db = both(ia, ib, a_rc=a_rc, can_demote=can_demote, **cfg)
                assert da.initial_split_brain == db.initial_split_brain
                if "disconnect" in (da.action, db.action):
                    continue
                pair = {da.action, db.action}
                assert pair in ({"connected"}, {"sync_source", "sync_target"}), (da.log, db.log)
                assert da.full_sync == db.full_sync, (da.log, db.log)
                assert da.hg == -db.hg
                outcomes.append((da, db))
    return outcomes


def _connect(a: Node, b: Node, seen: set):
    """Connect, let the handshake decide (any agreed outcome), then lose the link again."""
    results = set()
    for da, db in _check_decisions(a, b, seen):
        na, nb = a, b
        if da.uuids is not None:
            na = replace(na, uuids=da.uuids)
        if db.uuids is not None:
            nb = replace(nb, uuids=db.uuids)
        if da.demote:
            na = replace(na, role=S)
        if db.demote:
            nb = replace(nb, role=S)
        if da.action == "connected":
            results.add((replace(na, crashed=False), replace(nb, crashed=False), "ok"))
            continue
        for variant in ("ok", "lost", "half"):
            if da.action == "sync_source":
                s, t = _resync(na, nb, _fresh_id(na, nb), variant)
                results.add((s, t, variant))
            else:
                s, t = _resync(nb, na, _fresh_id(na, nb), variant)
                results.add((t, s, variant))
    for na, nb, variant in results:
        rand = _fresh_id(na, nb)
        yield _after_link_loss(na, rand), _after_link_loss(nb, rand + 0x100)
        if variant == "ok":                                   # power failure while connected
            yield (replace(na, role=S, crashed=na.crashed or na.role == P),
                   replace(nb, role=S, crashed=nb.crashed or nb.role == P))


def test_mirrored_handshakes_agree_over_simulated_histories():
    """Walk two-node histories (promote, --force, writes, crashes, new-current-uuid,
    connect with complete / interrupted resyncs) and check at every connect that both
    nodes' uuid_compare results mirror each other and their decisions agree."""
    start = (Node(FRESH), Node(FRESH))
    frontier, visited, seen = {start}, {start}, set()
    for _ in range(5):
        nxt = set()
        for a, b in frontier:
            succ = [(x, b) for x in _local_events(a, b)] + [(a, y) for y in _local_events(b, a)]
            succ += list(_connect(a, b, seen))
            for s in succ:
                if s not in visited:
                    visited.add(s)
                    nxt.add(s)
        frontier = nxt
    assert len(visited) > 1000
    assert {10, 20, 30, 34, 35, 36, 37, 40, 50, 51, 60, 70, 71, 80, 90, 100} <= seen, sorted(seen)


def test_mirrored_compare_over_hand_built_pairs():
    """Every rule-table example above, both ways round and with both tie-breaks."""
    pairs = [
        (node(FRESH), node(FRESH)), (node((0xA101, 4, 0, 0), role=P), node(FRESH)),
        (SAMPLE_SELF, SAMPLE_PEER), (node(SRC_STARTED), node(TGT_BEFORE)),
        (node((0xC0, 0xB0, 0x10, 0x20)), node((0xC0, 0, 0x30, 0x40))),
        (node((0xC0, 0, 0x10, 0x20), flags=2), node((0xC0, 0, 0x10, 0x20), flags=2)),
        (node((0xC1, 0, 0x10, 0x20), role=P), node((0xC0, 0, 0x10, 0x20), flags=2)),
        (node((0xC0, 0xB4, 0xB0, 0x20)), node((0xB0, 0, 0x20, 0))),
        split(1, 2), (node((0xA0, 0, 0x10, 0x20)), node((0xB0, 0, 0x30, 0x10))),
        (node((0xA0, 0, 0x10, 0x20)), node((0xB0, 0xB2, 0x30, 0x40))),
    ]
    for a, b in pairs:
        for a_rc in (True, False):
            _check_compare(a, b, a_rc)
            _check_compare(b, a, a_rc)
