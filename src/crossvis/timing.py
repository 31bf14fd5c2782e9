"""Per-stage wall-clock timing for the benchmark: one mechanism, used as a context or as module hooks.

Code on the online path marks its stages with :func:`stage`, and the benchmark times whole
modules with :meth:`StageTimer.time_module`; both record only while a timer is active
(:meth:`StageTimer.active`), so the same model call can also run untimed. Stages
nest and are accounted *exclusively*: while an inner stage runs, the enclosing one's clock is
paused, so the stage times add up to the wall time they cover. On CUDA every boundary is
synchronised, so a stage owns the kernels it launched.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import nn

_ACTIVE: ContextVar[StageTimer | None] = ContextVar("crossvis_stage_timer", default=None)


class StageTimer:
    """Accumulates exclusive seconds per stage name."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[tuple[str, float]] = []  # (name, time its clock last (re)started)

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self, name: str) -> None:
        now = self._now()
        if self._stack:  # pause the enclosing stage
            outer, since = self._stack[-1]
            self.seconds[outer] += now - since
        self._stack.append((name, now))

    def stop(self) -> None:
        now = self._now()
        name, since = self._stack.pop()
        self.seconds[name] += now - since
        if self._stack:  # resume the enclosing stage
            self._stack[-1] = (self._stack[-1][0], now)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()

    @contextlib.contextmanager
    def active(self) -> Iterator[StageTimer]:
        """Make :func:`stage` markers in the called code report to this timer."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def time_module(self, module: nn.Module, name: str) -> list:
        """Time the forwards of ``module`` that run while this timer is active, as stage ``name``.

        Returns the hook handles (``.remove()``).
        """

        def pre_hook(*_: object) -> None:
            if _ACTIVE.get() is self:
                self.start(name)

        def hook(*_: object) -> None:
            if _ACTIVE.get() is self:
                self.stop()

        return [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]


@contextlib.contextmanager
def set_apart(name: str) -> Iterator[None]:
    """Time the enclosed code as stage ``name`` of the active timer with the markers inside it silent:
    a measurement taken in the middle of the timed path (the benchmark's model-only call) that the
    enclosing stages must not count."""
    timer = _ACTIVE.get()
    if timer is None:
        yield
        return
    with timer.stage(name):
        token = _ACTIVE.set(None)
        try:
            yield
        finally:
            _ACTIVE.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark a stage of the online path for the active :class:`StageTimer` (free when none is active)."""
    timer = _ACTIVE.get()
    if timer is None:
        yield
        return
    with timer.stage(name):
        yield
