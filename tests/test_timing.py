"""StageTimer: exclusive nested stages, markers that are free when no timer is active, module hooks."""

from __future__ import annotations

import torch
from torch import nn

import crossvis.timing as timing
from crossvis.timing import StageTimer, stage


class FakeClock:
    """perf_counter that advances only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nested_stages_are_exclusive(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    timer = StageTimer()
    with timer.active():
        with stage("model"):
            clock.now += 1.0
            with stage("paste"):
                clock.now += 2.0
            clock.now += 0.5
            with stage("paste"):
                clock.now += 0.25
        with stage("rle"):
            clock.now += 4.0
    assert dict(timer.seconds) == {"model": 1.5, "paste": 2.25, "rle": 4.0}


def test_markers_do_nothing_without_an_active_timer(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    timer = StageTimer()
    with stage("paste"):
        clock.now += 1.0
    with timer.active():
        pass
    with stage("paste"):
        clock.now += 1.0
    assert dict(timer.seconds) == {}


def test_module_hooks_time_forward_calls_while_active_until_removed(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)

    class Slow(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            clock.now += 3.0
            return x

    module, timer = Slow(), StageTimer()
    handles = timer.time_module(module, "backbone+fpn")
    with timer.active(), timer.stage("heads"):
        clock.now += 1.0
        module(torch.zeros(1))
    module(torch.zeros(1))  # timer not active: not recorded
    for handle in handles:
        handle.remove()
    with timer.active():
        module(torch.zeros(1))  # hooks removed
    assert dict(timer.seconds) == {"heads": 1.0, "backbone+fpn": 3.0}
