"""scripts/compare_crossvis_fork.py: the pair batch and the fork's inputs, the pinned crossover partners, the LR
and report verdicts, the interleaved timing; and (slow) the whole comparison against a snapshot of the fork.

The slow test needs the reference path (detectron2 9eb4831, the fork, their pure-python dependencies) in
``CROSSVIS_FORK_REFERENCE_PATH`` (docs/parity.md).
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
from compare_crossvis_fork import (  # noqa: E402
    FORK_IDENTITIES,
    FORK_MAX_PROPOSALS,
    PAIR_BATCH_LAYOUT,
    compare_lr,
    first_per_group,
    fork_rel_ids,
    interleaved_medians,
    our_lr_schedule,
    parity_verdict,
    pinned_partners,
    positives_per_position,
    schedule_marks,
    synthetic_pair_batch,
)

from compare_adelaidet import padded_inputs  # noqa: E402

REFERENCE_PATH = os.environ.get("CROSSVIS_FORK_REFERENCE_PATH", "")


def test_synthetic_pair_batch_is_seeded_pairs_of_one_size() -> None:
    batch = synthetic_pair_batch(0)
    assert len(batch) == 2 and all(len(pair) == 2 for pair in batch)
    for pair, (size, *layouts) in zip(batch, PAIR_BATCH_LAYOUT):
        for frame, ellipses in zip(pair, layouts):
            assert frame["image"].shape == (*size, 3) and frame["image"].dtype == np.uint8
            assert frame["masks"].shape == (len(ellipses), *size)
            assert frame["ids"].dtype == np.int32 and frame["ids"].tolist() == [e[5] for e in ellipses]
            np.testing.assert_array_equal(frame["classes"], [e[4] for e in ellipses])
        key, ref = (set(frame["ids"].tolist()) for frame in pair)
        assert len(key & ref) == 2 and len(key ^ ref) == 1  # two shared identities, one in one frame only
    ids = np.concatenate([frame["ids"] for pair in batch for frame in pair])
    assert ids.min() >= 1 and ids.max() == FORK_IDENTITIES  # 1-based; the last proxy is used
    again = synthetic_pair_batch(0)
    assert all((a["image"] == b["image"]).all() for pa, pb in zip(batch, again) for a, b in zip(pa, pb))
    assert not (synthetic_pair_batch(1)[0][0]["image"] == batch[0][0]["image"]).all()


def test_fork_rel_ids_index_the_partner_frame() -> None:
    # As VideoDatasetMapperWithBasis: index of the same annotation id among the partner's instances, else -1.
    key, ref = np.array([7, 12, 3774], np.int32), np.array([12, 7], np.int32)
    assert fork_rel_ids(key, ref).tolist() == [1, 0, -1]
    assert fork_rel_ids(ref, key).tolist() == [1, 0]
    assert fork_rel_ids(key, ref).dtype == np.int32


def test_padded_pair_inputs_keep_pairs_and_zero_based_identities() -> None:
    batch = synthetic_pair_batch(0)
    images, sizes, targets = padded_inputs(batch)
    assert tuple(images.shape) == (2, 2, 3, 320, 448)  # max (300, 420) rounded up to 32
    assert sizes.tolist() == [[[300, 420], [300, 420]], [[260, 390], [260, 390]]]
    for b, pair in enumerate(batch):
        for i, frame in enumerate(pair):
            h, w = frame["image"].shape[:2]
            np.testing.assert_array_equal(images[b, i, :, :h, :w].numpy(), frame["image"].transpose(2, 0, 1))
            target = targets[b][i]
            assert target["identities"].dtype == torch.int64
            assert target["identities"].tolist() == (frame["ids"] - 1).tolist()
            assert tuple(target["masks"].shape[-2:]) == (320, 448)


def test_pair_batch_has_too_few_positives_for_either_side_to_sample() -> None:
    images, _, targets = padded_inputs(synthetic_pair_batch(0))
    fcos = OmegaConf.create({"fcos": {"sizes_of_interest": [64, 128, 256, 512], "center_sampling_radius": 1.5}})
    counts = positives_per_position(images, targets, fcos, 40)
    assert set(counts) == {"key", "reference"}
    assert 0 < min(counts.values()) and max(counts.values()) < FORK_MAX_PROPOSALS


def test_first_per_group_takes_the_first_entries_of_each_run() -> None:
    group = torch.tensor([0, 0, 0, 1, 2, 2])
    assert first_per_group(group, 1).tolist() == [0, 3, 4]
    assert first_per_group(group, 2).tolist() == [0, 1, 3, 4, 5]
    assert first_per_group(torch.zeros(0, dtype=torch.long), 1).tolist() == []


def test_pinned_partners_patch_only_the_crossover_and_only_inside() -> None:
    import crossvis.modeling.condinst as condinst
    import crossvis.modeling.crossover as crossover

    original = crossover.sample_per_group
    with pinned_partners():
        assert crossover.sample_per_group is first_per_group
        assert condinst.sample_per_group is original  # the per-frame proposal sampling keeps its randomness
    assert crossover.sample_per_group is original


def _detectron2_lr(i: int, batch: int = 16) -> float:
    """detectron2 9eb4831's WarmupMultiStepLR for R_50_1x.yaml (steps 15000, 21000, gamma 0.1, warm-up 1000
    linear from 0.001, LR 0.005 at 16 pairs), after auto_scale_workers to ``batch`` pairs."""
    scale = batch / 16
    warmup_iters, steps = int(round(1000 / scale)), [int(round(s / scale)) for s in (15000, 21000)]
    warmup = 1.0
    if i < warmup_iters:
        alpha = i / warmup_iters
        warmup = 0.001 * (1 - alpha) + alpha
    return 0.005 * scale * warmup * 0.1 ** bisect.bisect_right(steps, i)


def test_compare_lr_counts_every_difference() -> None:
    ref = np.array([_detectron2_lr(i) for i in range(23000)])
    report = compare_lr(ref, ref.copy(), [0, 15000, 15000, 99999])
    assert report["ok"] and report["differences"] == 0 and report["first_difference"] is None
    assert report["lr_at"] == {"0": 5e-06, "15000": 0.0005}  # marks beyond the schedule are left out
    assert json.loads(json.dumps(report)) == report
    ours = ref.copy()
    ours[15000] = np.nextafter(ours[15000], 1.0)  # one ulp at one iteration: a difference
    report = compare_lr(ref, ours)
    assert not report["ok"] and report["differences"] == 1 and report["first_difference"] == 15000
    assert 0 < report["max_abs_diff"] < 1e-18
    report = compare_lr(ref, ref[:-1])
    assert not report["ok"] and report["differences"] == 1 and report["first_difference"] == 22999


def test_schedule_marks_bracket_every_change() -> None:
    solver = {"WARMUP_ITERS": 1000, "STEPS": [15000, 21000], "MAX_ITER": 23000}
    assert schedule_marks(solver) == [0, 999, 1000, 14999, 15000, 20999, 21000, 22999]


@pytest.mark.parametrize("batch", [16, 6])
def test_our_lr_schedule_is_detectron2s_to_the_bit(batch: int) -> None:
    ours = our_lr_schedule(batch, [])
    expected = {16: 23000, 6: 61333}[batch]  # 23000 / (6 / 16) rounded, as auto_scale_workers
    assert compare_lr(np.array([_detectron2_lr(i, batch) for i in range(expected)]), ours)["ok"]


def _report(**failed: bool) -> dict:
    report = {name: {"ok": not failed.get(name, False)} for name in ("float32", "float64", "float64_gradients", "lr")}
    report["no_sampling"] = not failed.get("no_sampling", False)
    return report


def test_parity_verdict_needs_every_check() -> None:
    assert parity_verdict(_report())
    for name in ("float32", "float64", "float64_gradients", "lr", "no_sampling"):
        assert not parity_verdict(_report(**{name: True})), name


def test_interleaved_medians_alternate_the_order_and_skip_the_warmup() -> None:
    calls: list[str] = []
    now = [0.0]
    costs = {"fork": [50.0, 3.0, 3.5, 4.0], "ours": [40.0, 2.0, 2.5, 3.0]}  # a slow warm-up step first

    def step(name: str):
        def run() -> None:
            calls.append(name)
            now[0] += costs[name].pop(0)

        return run

    medians = interleaved_medians({"fork": step("fork"), "ours": step("ours")}, 3, 1, clock=lambda: now[0])
    assert calls == ["fork", "ours", "fork", "ours", "ours", "fork", "fork", "ours"]
    assert medians == {"fork": 3.5, "ours": 2.5}


@pytest.mark.slow
@pytest.mark.skipif(
    not REFERENCE_PATH, reason="CROSSVIS_FORK_REFERENCE_PATH (detectron2 9eb4831:CrossVIS fork:site) is not set"
)
def test_training_step_matches_the_fork(tmp_path: Path) -> None:
    """The whole comparison (~3 min on one CPU thread): losses, float64 gradients, the LR of every iteration."""
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS.parent / "src")}
    command = [sys.executable, str(SCRIPTS / "compare_crossvis_fork.py"), "--reference-path", REFERENCE_PATH]
    result = subprocess.run(
        [*command, "--workdir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=1800
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and report["ok"], report
    lr = report["lr"]["batch_16"]
    assert lr["iterations"] == lr["our_iterations"] == 23000 and lr["differences"] == 0
    assert report["float64_gradients"]["compared"] > 100
