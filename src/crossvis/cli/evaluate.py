"""Evaluate a checkpoint with online inference on a data split (Hydra entry point).

    python -m crossvis.cli.evaluate checkpoint=PATH data=synthetic data.root=DIR

Writes ``results.json`` and the CodaLab ``submission.zip`` into the run folder and prints the
YouTube-VIS metrics when the split has ground truth; ``analyze=true`` adds the error analysis of
``crossvis.cli.analyze`` (tables, ``analysis/analysis.json`` and plots). Checkpoint, data json and the checkpoint's
categories are checked before any frame is read.
"""

from __future__ import annotations

import json

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossvis.checkpoint.loading import load_checked_module
from crossvis.cli import configure_threads, require_writable_dir, user_errors
from crossvis.engine.runtime import Runtime
from crossvis.engine.splits import evaluate_dataset, load_split
from crossvis.evaluation.frame_ap import format_frame_table
from crossvis.evaluation.metric import format_table
from crossvis.evaluation.report import read_long_videos, run_analysis
from crossvis.files import read_json


@hydra.main(config_path="pkg://crossvis.conf", config_name="evaluate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    configure_threads(cfg.threads)
    runtime = Runtime(cfg.runtime, cfg.model_path)
    output_dir = require_writable_dir(HydraConfig.get().runtime.output_dir, "hydra.run.dir")
    dataset, ground_truth = load_split(cfg.data)
    module = load_checked_module(cfg.checkpoint, cfg.device, cfg.data, dataset.categories)
    metrics = evaluate_dataset(
        module, dataset, ground_truth, output_dir, cfg.checkpoint, cfg.inference, cfg.per_frame, runtime
    )
    if metrics is not None:
        print(format_table(metrics))
        if cfg.per_frame:
            print(format_frame_table(metrics))
        if cfg.analyze:  # breakdowns, error decomposition, oracles: analysis.json and plots in the run folder
            results = read_json(output_dir / "results.json", "results", list)
            long_videos = cfg.data.get("long_videos")  # data=ytvis22: its long-video split
            long_ids = read_long_videos(long_videos, ground_truth) if long_videos else None
            run_analysis(ground_truth, results, output_dir / "analysis", long_video_ids=long_ids)
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
