"""drbdmon's screen (pure part): resources, progress, problems and message views at 80x24."""
from replicator.cli import drbdmon


def snap(**kw):
    base = dict(name="r0", minor=0, volume=0, role="Primary", peer="Secondary",
                conn="Connected", disk="UpToDate", pdsk="UpToDate", susp=False, net=True,
                peer_name="node2")
    base.update(kw)
    return base


def model(**snaps):
    m = drbdmon.Model()
    for name, s in snaps.items():
        m.update(name, s, now=0)
    return m


def text(lines):
    return [t for t, _ in lines]


def test_status_view_fits_80x24_and_shows_every_object():
    m = model(r0=snap(), r1=snap(name="r1", role="Secondary", peer="Primary"))
    lines, page = drbdmon.screen(m, "status", 0, 80, 24, drbdmon.ASCII)
    assert len(lines) == 24 and all(len(t) < 80 for t in text(lines))
    body = "\n".join(text(lines))
    assert "RES:r0" in body and "* Primary" in body
    assert "+ VOL:0 minor:0 disk:UpToDate" in body
    assert "+ CON:node2 Connected role:Secondary" in body
    assert "+ VOL:0 replication:Established peer-disk:UpToDate" in body
    assert text(lines)[-2].startswith("Resources: 2 ") and "degraded" not in text(lines)[-2]
    assert text(lines)[-1].startswith("q:Quit")


def test_sync_progress_bar_speed_and_eta():
    s = snap(conn="SyncSource", pdsk="Inconsistent", rs_total_kib=1000, rs_left_kib=500,
             rs_mark_left_kib=500 + 6000, rs_mark_age_ms=3000)
    lines, _ = drbdmon.screen(model(r0=s), "status", 0, 80, 24, drbdmon.ASCII)
    bar = [t for t in text(lines) if t.strip().startswith("[")][0]
    assert "50.00%" in bar and "2,000 K/s" in bar and "ETA 0:00:00" in bar
    inside = bar[bar.index("[") + 1:bar.index("]")]
    assert inside.count("X") == inside.count("-")
    assert "/ VOL:0 replication:SyncSource peer-disk:Inconsistent" in "\n".join(text(lines))
    assert "[degraded]" in text(lines)[2]
    assert text(lines)[-2].startswith("Resources: 1 (1 degraded)")


def test_problems_view_lists_only_degraded_resources():
    m = model(good=snap(name="good"), bad=snap(name="bad", conn="StandAlone", peer="Unknown",
                                               pdsk="DUnknown"))
    body = "\n".join(text(drbdmon.screen(m, "problems", 0, 80, 24, drbdmon.ASCII)[0]))
    assert "RES:bad" in body and "RES:good" not in body
    assert "/ CON:node2 StandAlone role:Unknown" in body
    ok = "\n".join(text(drbdmon.screen(model(good=snap()), "problems", 0, 80, 24,
                                       drbdmon.ASCII)[0]))
    assert "No problems detected." in ok


def test_message_log_records_state_changes_in_drbds_words():
    m = model(r0=snap(role="Secondary", peer="Secondary"))
    m.update("r0", snap(role="Primary", peer="Secondary", conn="SyncSource",
                        pdsk="Inconsistent"), now=0)
    m.gone("r0", now=0)
    body = text(drbdmon.screen(m, "messages", -1, 80, 24, drbdmon.ASCII)[0])
    msgs: list[str] = []
    for t in body:                        # a long message continues on indented lines
        if t[:2].isdigit():
            msgs.append(t[9:])
        elif t.startswith("         ") and t.strip():
            msgs[-1] += t[9:]
    assert msgs == ["r0: cs:Connected ro:Secondary/Secondary ds:UpToDate/UpToDate",
                    "r0: role( Secondary -> Primary ) conn( Connected -> SyncSource ) "
                    "pdsk( UpToDate -> Inconsistent )",
                    "r0: resource gone (down)"]
    assert all(len(t) < 80 for t in body)


def test_pages_split_long_lists():
    m = model(**{f"r{i:02d}": snap(name=f"r{i:02d}") for i in range(12)})
    lines, page = drbdmon.screen(m, "status", 0, 80, 24, drbdmon.ASCII)
    assert "Page: 1/3" in text(lines)[-2]
    lines, page = drbdmon.screen(m, "status", 9, 80, 24, drbdmon.ASCII)
    assert page == 2 and "Page: 3/3" in text(lines)[-2]
