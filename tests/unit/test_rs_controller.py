"""Resync rate control (replicator.rs_controller), against DRBD 8.4's arithmetic."""
from replicator.rs_controller import DynamicRate, FixedRate, controller

DISK = {"c-plan-ahead": 20, "c-fill-target": 100, "c-delay-target": 10, "c-max-rate": 102400,
        "resync-rate": 250}


def test_fixed_rate_is_resync_rate_per_100ms():
    assert FixedRate(40960).step(0, 0) == 8192           # 40 MiB/s = 8192 sectors per step
    assert controller({**DISK, "c-plan-ahead": 0, "resync-rate": 102400}).step(5, 5) == 20480


def test_start_plans_resync_rate_over_the_plan_ahead_window():
    c = DynamicRate(20, 100, 10, 102400, 250)
    # want = 250 KiB/s * 2/10 * 20 steps = 1000 sectors, spread over 20 steps: 50 now
    assert c.step(0, 0) == 50


def test_fast_link_settles_and_a_big_fill_target_reaches_c_max_rate():
    c = controller(DISK)
    req = c.step(0, 0)
    seen = []
    for _ in range(400):                      # every request returns within the step
        req = c.step(req, 0)
        seen.append(req)
    # nothing stays in flight across a step, so the integral term keeps raising the rate
    assert seen[-1] > seen[-50] > seen[0] > 0
    assert all(r <= 102400 * 2 // 10 for r in seen)
    c = controller({**DISK, "c-fill-target": 1 << 20})
    req = c.step(0, 0)
    for _ in range(400):
        req = c.step(req, 0)
    assert req == 102400 * 2 // 10            # never above c-max-rate


def test_slow_link_keeps_the_fill_target_in_flight():
    c = DynamicRate(20, 100, 10, 102400, 250)
    in_flight, req = 0, c.step(0, 0)
    for _ in range(2000):                     # the peer returns 10 sectors per step
        in_flight += req
        back = min(10, in_flight)
        in_flight -= back
        req = c.step(back, in_flight)
    assert 80 <= in_flight <= 120             # about c-fill-target sectors outstanding
    assert req == 10


def test_delay_target_mode_follows_the_incoming_rate():
    c = DynamicRate(10, 0, 10, 102400, 250)
    in_flight, req = 0, c.step(0, 0)
    for _ in range(3000):
        in_flight += req
        back = min(40, in_flight)
        in_flight -= back
        req = c.step(back, in_flight)
    assert req == 40 and 380 <= in_flight <= 420    # sect_in * c-delay-target in flight
