"""`python -m crossvis.cli.train` end to end on a tiny synthetic set (CPU)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from helpers import logged_losses, run_module, train_args


def test_short_run_halves_the_loss_and_reports_validation_metrics(trained_run):
    losses = [loss for _, loss in logged_losses(trained_run)]
    assert len(losses) == 80
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last <= 0.5 * first, f"loss went from {first:.3f} to {last:.3f}"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) == {"AP", "AP50", "AP75", "AR1", "AR10"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()


def test_checkpoint_resumes_at_the_step_it_stopped(synthetic_root, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_module(
        "crossvis.cli.train", *train_args(synthetic_root, first, "trainer.max_steps=3", "trainer.limit_val_batches=0")
    )
    checkpoint = first / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 3
    run_module(
        "crossvis.cli.train",
        *train_args(
            synthetic_root, second, "trainer.max_steps=5", "trainer.limit_val_batches=0", f"resume={checkpoint}"
        ),
    )
    assert [step for step, _ in logged_losses(second)] == [3, 4]
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5


def test_init_from_is_strict_unless_relaxed(synthetic_root, tmp_path, trained_run):
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    args = train_args(
        synthetic_root,
        tmp_path,
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        f"model.init_from={checkpoint}",
        "model.embedding.dim=8",
    )
    # A different embedding width: those tensors have no same-shape counterpart → a listed failure.
    failed = run_module("crossvis.cli.train", *args, check=False)
    assert failed.returncode != 0
    assert (
        "error: " in failed.stderr and "embedding.pred.weight (8, 32, 1, 1): file has (16, 32, 1, 1)" in failed.stderr
    )
    proc = run_module("crossvis.cli.train", *args, "model.init_strict=false")
    log = proc.stdout + proc.stderr
    assert f"Initialised from {checkpoint}" in log
    assert "missing keys" in log and "embedding" in log.split("missing keys", 1)[1]


@pytest.mark.parametrize(
    "switches",
    [
        ["model.crossover.enabled=false"],
        pytest.param(["model.crossover.weight=0.5", "data.sampler.T=inf"], marks=pytest.mark.slow),
        pytest.param(["model.embedding.type=global", "model.embedding.loss=ce"], marks=pytest.mark.slow),
        pytest.param(["model.embedding.type=pairwise", "model.embedding.loss=ce"], marks=pytest.mark.slow),
        ["model.embedding.type=pairwise", "model.embedding.loss=focal"],
        pytest.param(
            ["data.transform.multiscale=true", "data.transform.scales=[[224,128],[288,160]]"], marks=pytest.mark.slow
        ),
    ],
    ids=lambda s: ",".join(s),
)
def test_every_config_switch_trains(synthetic_root, tmp_path, switches):
    run_module(
        "crossvis.cli.train",
        *train_args(synthetic_root, tmp_path, "trainer.max_steps=2", "trainer.limit_val_batches=0", *switches),
    )
    losses = logged_losses(tmp_path)
    assert len(losses) == 2 and all(loss == loss and loss < 1e4 for _, loss in losses)


def test_resume_from_a_foreign_or_corrupt_checkpoint_fails_before_training(synthetic_root, tmp_path, trained_run):
    raw = json.loads((synthetic_root / "train.json").read_text())
    new_ids = dict(zip(sorted(c["id"] for c in raw["categories"]), (1, 2, 3, 4)))  # the set uses 2, 5, 8, 11
    for entry in raw["categories"]:
        entry["id"] = new_ids[entry["id"]]
    for entry in raw["annotations"]:
        entry["category_id"] = new_ids[entry["category_id"]]
    other = tmp_path / "train.json"
    other.write_text(json.dumps(raw))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])  # a cut-off download
    for checkpoint, overrides, expected in (
        (
            trained_run / "checkpoints" / "last.ckpt",
            [f"data.train.json={other}", "data.val.json=null"],
            "was trained on other categories than",
        ),
        (corrupt, [], f"checkpoint: cannot read {corrupt}"),
    ):
        run_dir = tmp_path / checkpoint.stem
        proc = run_module(
            "crossvis.cli.train",
            *train_args(synthetic_root, run_dir, "trainer.max_steps=100", f"resume={checkpoint}", *overrides),
            check=False,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and expected in proc.stderr
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()


def test_run_length_and_lr_follow_the_composed_optim_schedule(synthetic_root, tmp_path):
    """No trainer.max_steps: the optim schedule sets the length; at 2 pairs a step (data.batch_size=2, one
    process), a schedule stated at 1 pair runs half its iterations at twice its LR, and the run prints it."""
    schedule = ["optim.base_batch_size=1", "optim.base_lr=0.01", "optim.length=6", "optim.steps=[4]"]
    proc = run_module(
        "crossvis.cli.train",
        *train_args(synthetic_root, tmp_path, "trainer.limit_val_batches=0", *schedule, "optim.warmup_iters=2"),
    )
    assert "LR schedule: global batch 2 pairs, LR 0.02, 3 iterations, x0.1 at 2, linear warm-up over 1 iterations" in (
        proc.stdout + proc.stderr
    )
    with open(tmp_path / "csv" / "metrics.csv") as f:
        lrs = [float(row["train/lr"]) for row in csv.DictReader(f) if row.get("train/lr")]
    assert lrs == pytest.approx([0.02 * 0.001, 0.02, 0.002])
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
