"""The LR schedule: detectron2's WarmupMultiStepLR at the public code's settings, scaled to the global batch."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossvis.engine.schedule import WarmupMultiStepLR, resolve_schedule

from helpers import MODEL_CONF

CONF = MODEL_CONF.parent


def optim_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("train", overrides=["logger=none", *overrides]).optim


def test_default_is_the_public_code_schedule_at_16_pairs():
    """configs/CrossVIS/R_50_1x.yaml: 23000 iterations, LR 0.005, x0.1 at 15000 and 21000, warm-up 1000 from 0.001."""
    s = resolve_schedule(optim_cfg(), global_batch=16)
    assert (s.lr, s.total_steps, s.milestones, s.warmup_iters, s.warmup_factor) == (
        0.005,
        23000,
        (15000, 21000),
        1000,
        0.001,
    )
    # hand-computed: step 500 is half-way through the warm-up: 0.001 * 0.5 + 0.5
    assert s.lr_at(0) == pytest.approx(0.005 * 0.001)
    assert s.lr_at(500) == pytest.approx(0.005 * 0.5005)
    assert [s.lr_at(i) for i in (1000, 14999, 15000, 20999, 21000, 22999)] == pytest.approx(
        [0.005, 0.005, 0.0005, 0.0005, 0.00005, 0.00005]
    )


@pytest.mark.parametrize(
    "batch, lr, length, steps, warmup",
    [
        (4, 0.00125, 92000, (60000, 84000), 4000),
        (32, 0.01, 11500, (7500, 10500), 500),
        (8, 0.0025, 46000, (30000, 42000), 2000),
    ],
)
def test_other_global_batches_scale_lr_and_iterations_linearly(batch, lr, length, steps, warmup):
    """detectron2's auto_scale_workers: LR x G/16, iterations (length, steps, warm-up) x 16/G."""
    s = resolve_schedule(optim_cfg(), global_batch=batch)
    assert s.lr == pytest.approx(lr) and (s.total_steps, s.milestones, s.warmup_iters) == (length, steps, warmup)


def test_paper_12_epochs_option():
    """optim=paper_12ep: x0.1 at epochs 9 and 11 of 12, whatever the steps per epoch."""
    cfg = optim_cfg("optim=paper_12ep")
    assert (cfg.unit, cfg.length, list(cfg.steps), cfg.base_lr, cfg.name) == ("epochs", 12, [9, 11], 0.005, "sgd")
    s = resolve_schedule(cfg, global_batch=16, total_steps=1200)  # 100 steps an epoch
    assert (s.total_steps, s.milestones) == (1200, (900, 1100))
    with pytest.raises(ValueError, match="optim.unit=epochs"):
        resolve_schedule(cfg, global_batch=16)


def test_trainer_length_keeps_the_steps_fractions():
    """trainer.max_steps=230 at 16 pairs: steps at 65.2 % and 91.3 % of 230."""
    s = resolve_schedule(optim_cfg(), global_batch=16, total_steps=230)
    assert (s.total_steps, s.milestones, s.warmup_iters) == (230, (150, 210), 1000)


def test_bad_schedules_name_the_field():
    with pytest.raises(ValueError, match="^optim.unit"):
        resolve_schedule(optim_cfg("optim.unit=steps"), 16)
    with pytest.raises(ValueError, match="^optim.steps"):
        resolve_schedule(optim_cfg("optim.steps=[21000,15000]"), 16)


def test_scheduler_sets_every_group_and_keeps_its_schedule_out_of_the_state():
    s = resolve_schedule(OmegaConf.create({**OmegaConf.to_container(optim_cfg()), "warmup_iters": 2}), 16)
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=s.lr)
    scheduler = WarmupMultiStepLR(optimizer, s)
    seen = []
    for _ in range(3):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen == [[s.lr * 0.001] * 2, [s.lr * (0.001 * 0.5 + 0.5)] * 2, [s.lr] * 2]
    assert "schedule" not in scheduler.state_dict() and scheduler.state_dict()["last_epoch"] == 3
