"""How much the SyncTarget may request per 100 ms step (DRBD 8.4's resync rate control).

``c-plan-ahead 0``: a fixed rate, ``resync-rate`` KiB/s. Otherwise the dynamic controller of
``drbd_rs_controller`` (drbd-reference.md §7.5): it keeps ``c-fill-target`` sectors in flight
(or, with a fill target of 0, ``c-delay-target`` worth of the incoming rate), spreading its
corrections over ``c-plan-ahead`` steps, never above ``c-max-rate``. Units are sectors.
Pure arithmetic; the resync loop feeds it what came back and what is in flight.
"""
from __future__ import annotations

from collections import deque

STEP_S = 0.1            # DRBD's SLEEP_TIME (HZ/10)


class FixedRate:
    def __init__(self, rate_kib: int):
        self.per_step = max(1, rate_kib * 2 // 10)          # KiB/s -> sectors per 100 ms

    def step(self, sect_in: int, in_flight: int) -> int:
        return self.per_step


class DynamicRate:
    def __init__(self, plan_ahead: int, fill_target: int, delay_target: int, max_rate_kib: int,
                 start_rate_kib: int):
        self.steps = max(1, plan_ahead)
        self.fill_target = fill_target
        self.delay_target = delay_target
        self.max_per_step = max(1, max_rate_kib * 2 // 10)
        self.start_rate = start_rate_kib
        self.plan: deque[int] = deque([0] * self.steps)
        self.plan_total = 0

    def step(self, sect_in: int, in_flight: int) -> int:
        """Sectors to request in this step, given what returned since the last one."""
        if in_flight + sect_in == 0:                           # (re)start of the resync
            want = self.start_rate * 2 // 10 * self.steps
        elif self.fill_target:
            want = self.fill_target
        else:
            want = sect_in * self.delay_target
        correction = want - in_flight - self.plan_total
        cps = int(correction / self.steps)                    # C division: toward zero
        for i in range(self.steps):
            self.plan[i] += cps
        self.plan_total += cps * self.steps
        curr = self.plan.popleft()
        self.plan.append(0)
        self.plan_total -= curr
        return min(max(0, sect_in + curr), self.max_per_step)


def controller(disk: dict) -> FixedRate | DynamicRate:
    """The controller a disk section asks for."""
    if disk["c-plan-ahead"] == 0:
        return FixedRate(disk["resync-rate"])
    return DynamicRate(disk["c-plan-ahead"], disk["c-fill-target"], disk["c-delay-target"],
                       disk["c-max-rate"], disk["resync-rate"])
