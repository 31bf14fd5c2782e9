"""The 1x schedule: linear warm-up, then x0.1 at 9/12 and 11/12 of training."""

import pytest

from crossvis.lightning_module import warmup_step_schedule


def test_warmup_then_step_decay():
    f = warmup_step_schedule(
        total_steps=1200, warmup_iters=100, warmup_factor=0.001, decay_at=[0.75, 11 / 12], gamma=0.1
    )
    assert f(0) == pytest.approx(0.001)
    assert f(50) == pytest.approx(0.001 * 0.5 + 0.5)
    assert f(100) == pytest.approx(1.0)
    assert f(899) == pytest.approx(1.0)
    assert f(900) == pytest.approx(0.1)  # epoch 9 of 12
    assert f(1099) == pytest.approx(0.1)
    assert f(1100) == pytest.approx(0.01)  # epoch 11 of 12
