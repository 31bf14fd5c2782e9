"""`make demo`: the whole pipeline on a fresh machine, on CPU, in a few minutes.

Writes a synthetic video dataset in the real YouTube-VIS layout, trains a small CrossVIS, evaluates
it online on the synthetic valid split, prints the metric table, and leaves in one folder the
checkpoint, ``results.json``, ``submission.zip`` and an overlay video (mp4 + GIF) of the tracks.

    python -m crossvis.cli.quickstart [hydra overrides, e.g. trainer.max_steps=100]
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossvis.checkpoint.loading import load_module
from crossvis.checkpoint.training_state import read_training_checkpoint
from crossvis.cli import configure_threads, require_writable_dir, user_errors
from crossvis.data.synthetic import write_synthetic
from crossvis.data.video_source import FrameSource
from crossvis.data.ytvis import load_vis
from crossvis.engine.splits import evaluate_split
from crossvis.engine.training import train
from crossvis.engine.video import run_on_video
from crossvis.evaluation.metric import format_table


@hydra.main(config_path="pkg://crossvis.conf", config_name="quickstart", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    output_dir = require_writable_dir(HydraConfig.get().runtime.output_dir, "output")
    configure_threads(cfg.threads, int(cfg.data.num_workers))
    data_root = Path(cfg.data.root)
    synthetic = cfg.synthetic
    print(f"[1/4] Writing a synthetic dataset to {data_root}")
    if data_root.exists():
        shutil.rmtree(data_root)
    write_synthetic(
        data_root,
        videos=synthetic.videos,
        frames=synthetic.frames,
        seed=synthetic.seed,
        height=synthetic.height,
        width=synthetic.width,
        val_videos=synthetic.val_videos,
    )

    print(f"[2/4] Training CrossVIS ({cfg.model.backbone.name}) on CPU")
    train_start = time.perf_counter()
    train(cfg)
    checkpoint = output_dir / "checkpoints" / "last.ckpt"
    # the step of the weights evaluated: with trainer.strategy=ddp_fork the fit ran in child processes,
    # so this process's trainer never counted any
    steps = int(read_training_checkpoint(checkpoint)["global_step"])
    train_minutes = (time.perf_counter() - train_start) / 60

    print("[3/4] Online inference and evaluation on the synthetic valid split")
    module = load_module(checkpoint)
    metrics = evaluate_split(module, cfg.data, output_dir, checkpoint)

    print("[4/4] Writing the overlay video of the tracked instances")
    valid = load_vis(cfg.data.val.json, cfg.data.val.images)
    video = valid.videos[0]
    frames_dir = video.frame_path(0).parent
    run_on_video(
        module,
        FrameSource(frames_dir, cfg.overlay_fps),
        output_dir / "tracks.mp4",
        output_dir / "tracks.json",
        gif=output_dir / "tracks.gif",
        min_score=cfg.overlay_min_score,
    )

    minutes = (time.perf_counter() - start) / 60
    print()
    print(format_table(metrics))
    print()
    print(f"Output folder: {output_dir}")
    for name in ("checkpoints/last.ckpt", "results.json", "submission.zip", "tracks.mp4", "tracks.gif"):
        print(f"  {output_dir / name}")
    seconds_per_step = 60 * train_minutes / max(steps, 1)
    print(f"Training steps: {steps}, training took {train_minutes:.1f} min ({seconds_per_step:.2f} s/step)")
    print(f"Synthetic valid AP: {metrics['AP']:.3f}   total time: {minutes:.1f} min")
    print(json.dumps({"AP": metrics["AP"], "minutes": round(minutes, 2)}))


if __name__ == "__main__":
    main()
