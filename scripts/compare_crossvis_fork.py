"""Training parity with the authors' code: one training step of the authors' CrossVIS fork against ours, and its speed.

    python scripts/compare_crossvis_fork.py --reference-path D2:FORK:SITE
    python scripts/compare_crossvis_fork.py --time --reference-path D2:FORK:SITE [--rounds 5 --warmup 2 --threads 1]

``D2``: detectron2 at the fork's pinned commit 9eb4831; ``FORK``: the fork (hustvl/CrossVIS, package
``adet``); ``SITE``: their pure-python dependencies (docs/parity.md). Built on
``scripts/compare_adelaidet.py``: its reference process, seeded random weights, conversion with
``crossvis.cli.convert`` and the loss / gradient verdicts.

**Parity** (default). The reference process builds the fork's ``CrossVIS`` from
``configs/CrossVIS/R_50_1x.yaml`` with the seeded random weights (40 classes, its hard-coded
``nID = 3774`` identity proxies, so our model has M = 3774 too) in training mode, every BatchNorm2d
(mask branch, ``reid_pred_bn``) on batch statistics (``--running-bn``: on running ones), and runs its
``forward_train`` on :func:`synthetic_pair_batch` (two pairs, as its ``VideoDatasetMapperWithBasis``
gives them: BGR uint8 CHW images, ``Instances`` with boxes, classes, ``BitMasks``, the 1-based
annotation ``id`` and ``rel_ids``), in float32 and float64, saving the losses and the float64
gradients; and detectron2's own ``WarmupMultiStepLR`` built from the fork's config
(``build_lr_scheduler``), the LR of each of its ``MAX_ITER`` iterations (at 16 pairs; ``--lr-batch G``:
scaled to G pairs by detectron2's ``auto_scale_workers``). This process converts the
weights, builds our model with the paper defaults (:data:`FORK_OVERRIDES`), runs
``CrossVIS.forward_train`` on the same frames (RGB, zero-padded ``[2, 2, 3, H, W]``, identities
``id − 1``) and compares: every loss (:data:`FORK_LOSS_NAMES`) within a relative
:data:`FORK_LOSS_TOLERANCE` in float64 (:data:`FLOAT32_LOSS_TOLERANCE` in float32, where the
saturated random masks make the dice mostly rounding), every parameter gradient within
:data:`FORK_GRADIENT_TOLERANCE` (float64, under the fork's names via the converter's key table), and
the LR of our training's scheduler (``crossvis.engine.schedule``, stepped through the whole schedule of
``conf/train.yaml`` for the same global batch) against the fork's at every iteration: no difference
at all (exact float equality), and the same number of iterations. Neither side samples positives
(:func:`positives_per_position` stays below the fork's ``MAX_PROPOSALS`` = 500 per frame position),
so both see the same positives.

Pinned crossover partners: each crossover query takes the positive of its identity in the partner
frame at one random candidate's location; the fork draws it with Python's ``random.randint`` over its
candidates, ours with ``sample_per_group`` (a ``torch.randperm``). The harness patches both to take
the *first* candidate, which is the same location on both sides: the fork lists a frame's positives
level by level and row-major within a level (its ``L, N, H, W`` flattening), ours by flattened
location index, the same order within one frame (:func:`pinned_fork_partners`,
:func:`pinned_partners`). Only this script patches them; the library keeps its random choice.

**Timing** (``--time``): one process with both models (PYTHONPATH = the reference path and this
project's ``src``) on the same batch, the same thread count (``--threads``), ``--warmup`` untimed
steps of each, then ``--rounds`` training steps (forward, backward, SGD step) of each, alternating
which goes first; the report has the median step times and their ratio (ours / fork).

The last line printed is a JSON report; the exit code is 1 beyond tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np

from compare_adelaidet import (
    LOSS_NAMES,
    LOSS_TOLERANCE,
    batch_positives,
    build_ours,
    build_reference,
    compare_gradients,
    compare_losses,
    detectron2_frame,
    ours_training_steps,
    padded_inputs,
    paint_ellipses,
    reference_run,
    save_reference_steps,
    training_mode,
)

if TYPE_CHECKING:  # torch is imported where it is used, as in compare_adelaidet.py
    import torch

FORK_CONFIG = "configs/CrossVIS/R_50_1x.yaml"
FORK_IDENTITIES = 3774  # the fork's hard-coded nID
FORK_MAX_PROPOSALS = 500  # MODEL.CONDINST.MAX_PROPOSALS: the fork samples beyond this many per frame position
FORK_LOSS_TOLERANCE = 1e-6  # relative, float64
FLOAT32_LOSS_TOLERANCE = LOSS_TOLERANCE  # relative, float32 (as the AdelaiDet loss check)
FORK_GRADIENT_TOLERANCE = 1e-5  # float64 ||g_ours − g_fork|| / ||g_fork|| per parameter
# float64 gradient norms up to this are zero but for rounding (reid_pred's bias, in front of train-mode
# BatchNorm: ~2e-16, against 1e-6..1e3 for every other gradient): compared in absolute terms
ZERO_GRADIENT_NORM = 1e-12
# our loss name -> the fork's
FORK_LOSS_NAMES = {**LOSS_NAMES, "loss_cross": "loss_cross_over", "loss_id": "loss_reid"}
# Our settings that make the fork's training step (explicit, so a change of defaults cannot hide a difference).
# The network per frame position (its train-mode BatchNorm normalises B frames per call, as the fork's),
# the identity loss over this process's own positives (the fork does not all-reduce).
FORK_OVERRIDES = ["model.bn_batches=per_position", "model.embedding.normalizer=local"]
SRC = Path(__file__).resolve().parents[1] / "src"
# Per pair: (height, width), then the key frame's and the reference frame's ellipses
# (centre x, centre y, semi-axis x, semi-axis y, class, 1-based annotation id). Both frames of a pair
# have one size (as after the pair's shared augmentation), the reference frame lists its instances in
# another order (rel_ids is no identity map), and each pair has one identity in one frame only
# (3774, the last proxy, in pair 0's key frame; 2048 in pair 1's reference frame). Semi-axes from
# 9 to 200 px give positives on P3..P6, as :data:`compare_adelaidet.LOSS_BATCH_LAYOUT`.
PAIR_BATCH_LAYOUT = (
    (
        (300, 420),
        ((205, 150, 200, 140, 3, 7), (95, 85, 60, 45, 0, 12), (340, 235, 14, 10, 1, 3774)),
        ((101, 89, 58, 47, 0, 12), (210, 146, 196, 138, 3, 7)),
    ),
    (
        (260, 390),
        ((190, 130, 120, 90, 2, 501), (60, 200, 30, 22, 0, 1)),
        ((186, 134, 118, 92, 2, 501), (64, 196, 31, 21, 0, 1), (330, 50, 9, 12, 1, 2048)),
    ),
)


def synthetic_pair_batch(seed: int) -> list[list[dict[str, np.ndarray]]]:
    """:data:`PAIR_BATCH_LAYOUT` painted on seeded noise: per pair ``[key, reference]`` frame dicts
    (those of ``compare_adelaidet.paint_ellipses`` plus ``ids [N]`` int32, the 1-based annotation ids)."""
    rng = np.random.default_rng(seed)
    batch = []
    for size, *frames in PAIR_BATCH_LAYOUT:
        pair = []
        for ellipses in frames:
            frame = paint_ellipses(rng, size, ellipses)
            frame["ids"] = np.array([e[5] for e in ellipses], np.int32)
            pair.append(frame)
        batch.append(pair)
    return batch


def fork_rel_ids(ids: np.ndarray, partner_ids: np.ndarray) -> np.ndarray:
    """The fork's ``rel_ids`` (``VideoDatasetMapperWithBasis``): each instance's index among the partner
    frame's instances (same annotation id), −1 when absent there; int32 as the mapper makes it."""
    partner = [int(i) for i in partner_ids]
    return np.array([partner.index(int(i)) if int(i) in partner else -1 for i in ids], np.int32)


def fork_inputs(pairs: list[list[dict[str, np.ndarray]]], dtype: torch.dtype) -> list[list[dict]]:
    """``batched_inputs`` of the fork's ``forward_train``: per pair ``[key, reference]`` detectron2 frames
    whose ``Instances`` also carry ``id`` and ``rel_ids`` (fresh tensors: the fork offsets ``rel_ids`` in place)."""
    return [
        [
            detectron2_frame(frame, dtype, id=frame["ids"], rel_ids=fork_rel_ids(frame["ids"], pair[1 - i]["ids"]))
            for i, frame in enumerate(pair)
        ]
        for pair in pairs
    ]


def first_per_group(group: torch.Tensor, max_per_group: int) -> torch.Tensor:
    """``sample_per_group`` without the randomness: the first ``max_per_group`` entries of each run of equal
    values of ``group`` (``crossover_loss`` passes its query index, grouped and candidates in order)."""
    import torch

    _, counts = torch.unique_consecutive(group, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(group.numel(), device=group.device) - torch.repeat_interleave(starts, counts)
    return torch.nonzero(rank < max_per_group)[:, 0]


def pinned_partners() -> contextlib.AbstractContextManager:
    """Our crossover takes each query's first candidate (:func:`first_per_group`); this process only."""
    import crossvis.modeling.crossover as crossover

    return mock.patch.object(crossover, "sample_per_group", first_per_group)


def pinned_fork_partners() -> contextlib.AbstractContextManager:
    """The fork's crossover takes ``random.randint(a, b) = a``, its first candidate; the reference process only."""
    import types

    fork = sys.modules["adet.modeling.condinst.crossvis"]
    return mock.patch.object(fork, "random", types.SimpleNamespace(randint=lambda a, b: a))


def positives_per_position(
    images: torch.Tensor, targets: list[list[dict]], cfg_model, num_classes: int
) -> dict[str, int]:
    """FCOS positives (our assignment) of all key frames and of all reference frames: the fork samples
    (``MAX_PROPOSALS``) per frame position, we per frame; below 500 per position neither does."""
    fcos = cfg_model.fcos
    positives = batch_positives(images, targets, num_classes, list(fcos.sizes_of_interest), fcos.center_sampling_radius)
    position = positives.frame % 2
    return {"key": int((position == 0).sum()), "reference": int((position == 1).sum())}


def compare_lr(ref: np.ndarray, ours: np.ndarray, marks: list[int] = ()) -> dict:
    """Two per-iteration LR sequences: ``ok`` only when they have one length and not one value differs
    (exact float equality); ``first_difference`` is the first differing iteration (or None); ``lr_at``
    shows the reference's LR at the iterations ``marks`` (e.g. either side of each step)."""
    ref, ours = np.asarray(ref, np.float64), np.asarray(ours, np.float64)
    n = min(len(ref), len(ours))
    differ = np.nonzero(ref[:n] != ours[:n])[0]
    report = {
        "iterations": int(len(ref)),
        "our_iterations": int(len(ours)),
        "differences": int(len(differ)) + abs(len(ref) - len(ours)),
        "first_difference": int(differ[0]) if len(differ) else (n if len(ref) != len(ours) else None),
        "max_abs_diff": float(np.abs(ref[:n] - ours[:n]).max(initial=0.0)),
        "lr_at": {str(i): float(ref[i]) for i in sorted(set(marks)) if 0 <= i < n},
    }
    report["ok"] = report["differences"] == 0
    return report


def schedule_marks(solver: dict) -> list[int]:
    """Iterations where a detectron2 solver's LR changes its rule: the first, either side of the
    warm-up's end and of each step, the last."""
    steps = [m for s in solver["STEPS"] for m in (s - 1, s)]
    return [0, solver["WARMUP_ITERS"] - 1, solver["WARMUP_ITERS"], *steps, solver["MAX_ITER"] - 1]


def stepped_lrs(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, iterations: int
) -> np.ndarray:
    """The LR of each of ``iterations`` iterations, read from the optimiser before each step, as training
    runs (optimiser step, then scheduler step)."""
    lrs = []
    for _ in range(iterations):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(lrs, np.float64)


def our_lr_schedule(global_batch: int, overrides: list[str]) -> np.ndarray:
    """Our LR at every iteration of ``conf/train.yaml``'s schedule for ``global_batch`` pairs: the training's own
    ``crossvis.engine.schedule.WarmupMultiStepLR`` on ``resolve_schedule``'s schedule, stepped to its end."""
    import torch

    from crossvis.checkpoint.loading import compose_train_config
    from crossvis.engine.schedule import WarmupMultiStepLR, resolve_schedule

    schedule = resolve_schedule(compose_train_config(overrides).optim, global_batch)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=schedule.lr)
    return stepped_lrs(optimizer, WarmupMultiStepLR(optimizer, schedule), schedule.total_steps)


def lr_report(ref_lrs: dict[int, np.ndarray], solvers: dict[str, dict], overrides: list[str]) -> dict:
    """:func:`compare_lr` per global batch (``batch_G``: the fork's solver settings there, then the verdict)."""
    report = {}
    for batch, ref in ref_lrs.items():
        solver = solvers[str(batch)]
        report[f"batch_{batch}"] = {
            "fork_solver": solver,
            **compare_lr(ref, our_lr_schedule(batch, overrides), schedule_marks(solver)),
        }
    report["ok"] = all(part["ok"] for part in report.values())
    return report


def parity_verdict(report: dict) -> bool:
    """Every check of a parity report passed (losses in both precisions, gradients, LR, no sampling)."""
    checks = ("float32", "float64", "float64_gradients", "lr")
    return all(report[name]["ok"] for name in checks) and bool(report["no_sampling"])


# ---------------------------------------------------------------- reference process (the fork) ----


def detectron2_lr_schedule(cfg, global_batch: int) -> tuple[np.ndarray, dict]:
    """The LR of every iteration under detectron2's own scheduler for ``cfg`` (``build_lr_scheduler``:
    ``WarmupMultiStepLR``) at ``global_batch`` pairs, and the solver settings it ran with.

    Other batches than ``SOLVER.IMS_PER_BATCH`` go through detectron2's ``auto_scale_workers`` with
    ``REFERENCE_WORLD_SIZE`` = ``IMS_PER_BATCH`` (one pair per worker), the rule ours follows.
    """
    import torch
    from detectron2.engine import DefaultTrainer
    from detectron2.solver import build_lr_scheduler

    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.REFERENCE_WORLD_SIZE = cfg.SOLVER.IMS_PER_BATCH
    cfg = DefaultTrainer.auto_scale_workers(cfg, global_batch)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR, momentum=0.9)
    lrs = stepped_lrs(optimizer, build_lr_scheduler(cfg, optimizer), cfg.SOLVER.MAX_ITER)
    keys = ("BASE_LR", "IMS_PER_BATCH", "MAX_ITER", "STEPS", "GAMMA", "WARMUP_FACTOR", "WARMUP_ITERS", "WARMUP_METHOD")
    return lrs, {key: cfg.SOLVER[key] for key in keys}


def run_reference(args: argparse.Namespace) -> None:
    """The fork's training step on :func:`synthetic_pair_batch` (``reference_losses.json``,
    ``reference_grads.npz``) and its LR schedule per ``--lr-batch`` (``reference_lr_{G}.npy``,
    ``reference_solvers.json``)."""
    cfg, model = build_reference(args)
    workdir = Path(args.workdir)
    training_mode(model, not args.running_bn)
    pairs = synthetic_pair_batch(args.seed)
    with pinned_fork_partners():
        save_reference_steps(model, lambda dtype: (fork_inputs(pairs, dtype),), workdir)
    solvers = {}
    for batch in args.lr_batch:
        lrs, solvers[batch] = detectron2_lr_schedule(cfg, batch)
        np.save(workdir / f"reference_lr_{batch}.npy", lrs)
    (workdir / "reference_solvers.json").write_text(json.dumps(solvers))


# ---------------------------------------------------------------------- this project's side ----


def run_ours(workdir: Path, seed: int, overrides: list[str], batch_statistics: bool) -> dict:
    """Our training step as the reference ran it (:func:`compare_adelaidet.ours_training_steps`), with
    pinned crossover partners, plus the positives per frame position."""
    import torch

    torch.set_num_threads(1)
    cfg, model, num_classes = build_ours(workdir, [*FORK_OVERRIDES, *overrides])
    training_mode(model, batch_statistics)
    inputs = padded_inputs(synthetic_pair_batch(seed))
    with pinned_partners():
        result = ours_training_steps(model, inputs, workdir)
    result["positives_per_position"] = positives_per_position(inputs[0], inputs[2], cfg.model, num_classes)
    return result


def main_parity(args: argparse.Namespace, argv: list[str]) -> int:
    """Both training steps and both LR schedules; JSON report, exit 1 beyond tolerance."""
    with reference_run(args, argv, __file__) as workdir:
        ref = json.loads((workdir / "reference_losses.json").read_text())
        ours = run_ours(workdir, args.seed, args.override, not args.running_bn)
        ref_grads = dict(np.load(workdir / "reference_grads.npz"))
        ref_lrs = {batch: np.load(workdir / f"reference_lr_{batch}.npy") for batch in args.lr_batch}
        solvers = json.loads((workdir / "reference_solvers.json").read_text())
    report = {
        "float32": compare_losses(ref["float32"], ours["float32"], FLOAT32_LOSS_TOLERANCE, FORK_LOSS_NAMES),
        "float64": compare_losses(ref["float64"], ours["float64"], FORK_LOSS_TOLERANCE, FORK_LOSS_NAMES),
        "float64_gradients": compare_gradients(ref_grads, ours["grads"], FORK_GRADIENT_TOLERANCE, ZERO_GRADIENT_NORM),
        "lr": lr_report(ref_lrs, solvers, args.override),
        "positives_per_position": ours["positives_per_position"],
    }
    report["no_sampling"] = max(report["positives_per_position"].values()) <= FORK_MAX_PROPOSALS
    report.update(
        config=args.config,
        seed=args.seed,
        cls_bias=args.cls_bias,
        batch_norm="running" if args.running_bn else "batch",
        overrides=[*FORK_OVERRIDES, *args.override],
    )
    report["ok"] = parity_verdict(report)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


# ------------------------------------------------------------------------------------ timing ----


def interleaved_medians(
    steps: dict[str, Callable[[], object]], rounds: int, warmup: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median seconds per call of each of ``steps`` over ``rounds`` rounds after ``warmup`` untimed ones;
    the order alternates every round, so a change of machine load weighs on every step alike."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = clock()
            steps[name]()
            times[name].append(clock() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def sgd_step(forward: Callable[[], dict], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """One training step as detectron2's ``SimpleTrainer`` runs it: losses, their sum backward, SGD step."""

    def step() -> None:
        losses = forward()
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    return step


def run_timing(args: argparse.Namespace) -> None:
    """Both models' training steps, interleaved in this (reference) process → ``timing.json``."""
    import torch
    from detectron2.solver import build_optimizer

    from crossvis.checkpoint.loading import compose_train_config
    from crossvis.engine.lightning_module import param_groups

    cfg, fork = build_reference(args)
    workdir = Path(args.workdir)
    _, ours, _ = build_ours(workdir, [*FORK_OVERRIDES, *args.override])
    torch.set_num_threads(args.threads)
    for model in (fork, ours):
        training_mode(model, True)
    pairs = synthetic_pair_batch(args.seed)
    fork_batches = iter([fork_inputs(pairs, torch.float32) for _ in range(args.warmup + args.rounds)])
    images, sizes, targets = padded_inputs(pairs)
    optim = compose_train_config(args.override).optim
    our_optimizer = torch.optim.SGD(
        param_groups(ours, optim.weight_decay), lr=cfg.SOLVER.BASE_LR, momentum=optim.momentum
    )
    steps = {
        "fork": sgd_step(lambda: fork(next(fork_batches)), build_optimizer(cfg, fork)),
        "ours": sgd_step(lambda: ours.forward_train(images, sizes, targets), our_optimizer),
    }
    medians = interleaved_medians(steps, args.rounds, args.warmup)
    (workdir / "timing.json").write_text(json.dumps({"median_s": medians, "threads": torch.get_num_threads()}))


def main_timing(args: argparse.Namespace, argv: list[str]) -> int:
    """``--time``: the reference process runs both models (this project's ``src`` on its path too)."""
    timed = argparse.Namespace(**{**vars(args), "reference_path": f"{args.reference_path}{os.pathsep}{SRC}"})
    with reference_run(timed, argv, __file__, args.threads) as workdir:
        timing = json.loads((workdir / "timing.json").read_text())
    medians = timing["median_s"]
    report = {
        "median_step_s": medians,
        "ratio_ours_to_fork": medians["ours"] / medians["fork"],
        "threads": timing["threads"],
        "rounds": args.rounds,
        "warmup": args.warmup,
        "overrides": [*FORK_OVERRIDES, *args.override],
    }
    report["ok"] = report["ratio_ours_to_fork"] <= 1.0  # the goal: ours no slower than the fork's
    print(json.dumps(report))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference-path",
        default="",
        help="PYTHONPATH of the reference process: detectron2 9eb4831, the CrossVIS fork and their dependencies",
    )
    parser.add_argument("--config", default=FORK_CONFIG, help="the fork's config, relative to the fork")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for our side (repeatable)")
    parser.add_argument("--running-bn", action="store_true", help="BatchNorm2d on running statistics (default: batch)")
    parser.add_argument("--time", action="store_true", help="time both models' training steps instead (item 9)")
    parser.add_argument("--rounds", type=int, default=5, help="--time: timed steps of each model")
    parser.add_argument("--warmup", type=int, default=2, help="--time: untimed steps of each model first")
    parser.add_argument("--threads", type=int, default=1, help="--time: torch threads of both models")
    parser.add_argument(
        "--lr-batch",
        type=int,
        action="append",
        help="global batch (pairs) of the LR check, repeatable (default 16: the fork's 23000 iterations)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cls-bias", type=float, default=0.0, help="class-logit bias of the random weights")
    parser.add_argument("--workdir", help="where the checkpoints and results go (default: a temporary folder)")
    parser.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)  # the reference process
    parser.set_defaults(short=360, max_size=640)  # build_reference's test size (unused in training)
    args = parser.parse_args(argv)
    args.lr_batch = args.lr_batch or [16]
    if args.reference_only:
        (run_timing if args.time else run_reference)(args)
        return 0
    if not args.reference_path:
        parser.error("--reference-path is required")
    argv = argv if argv is not None else sys.argv[1:]
    return (main_timing if args.time else main_parity)(args, argv)


if __name__ == "__main__":
    sys.exit(main())
