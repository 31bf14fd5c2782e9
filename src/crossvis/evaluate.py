"""Evaluate a checkpoint with online inference on a data split (Hydra entry point).

    python -m crossvis.evaluate checkpoint=PATH data=synthetic data.root=DIR

Writes ``results.json`` and the CodaLab ``submission.zip`` into the run folder and prints the
YouTube-VIS metrics when the split has ground truth. Checkpoint, data json and the checkpoint's
categories are checked before any frame is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from crossvis.checkpoints import CHECKPOINT_EXPECTED, check_categories
from crossvis.cli import configure_threads, require_file, require_writable_dir, user_errors
from crossvis.data.datamodule import VISDataModule
from crossvis.data.ytvis import VISDataset, load_vis
from crossvis.errors import ConfigError, InputFormatError, UserError
from crossvis.evaluation.metric import evaluate as evaluate_results
from crossvis.evaluation.metric import format_table
from crossvis.evaluation.results import write_results_json, write_submission_zip
from crossvis.lightning_module import CrossVISModule


def load_module(checkpoint: str | Path, device: str = "cpu", tracker: dict | None = None) -> CrossVISModule:
    """Rebuild a trained module from a Lightning checkpoint, optionally overriding tracker settings."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {path}")
    module = CrossVISModule.load_from_checkpoint(path, map_location=torch.device(device))
    if tracker:
        module.cfg.tracker = OmegaConf.merge(module.cfg.tracker, tracker)
    return module.eval()


def load_checked_module(checkpoint: str | Path, device: str = "cpu", tracker: dict | None = None) -> CrossVISModule:
    """:func:`load_module` under the user-error contract: a missing file, a folder or a file that is
    not a checkpoint is one clear message (never torch's advice to load it unsafely)."""
    path = require_file(checkpoint, "checkpoint", CHECKPOINT_EXPECTED)
    try:
        return load_module(path, device, tracker)
    except UserError:
        raise
    except Exception as error:  # torch/pickle/Lightning raise many types for a file that is not a checkpoint
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines and "weights_only" not in str(error) else "not a checkpoint torch can read safely"
        raise InputFormatError(
            f"checkpoint: cannot load {path} ({type(error).__name__}: {detail}); expected {CHECKPOINT_EXPECTED}"
        ) from error


def load_split(cfg_data: DictConfig) -> tuple[VISDataset, dict | None]:
    """The split to evaluate and its ground truth (None when hidden).

    Only that split's json is read, except for ``data.holdout_videos`` (held-out training videos).
    """
    if int(cfg_data.get("holdout_videos") or 0) > 0:
        datamodule = VISDataModule(cfg_data)
        datamodule.setup("validate")
        return datamodule.val_dataset, datamodule.val_ground_truth
    val = cfg_data.get("val") or {}
    if not val.get("json"):
        raise ConfigError("data.val.json: expected the annotation json of the split to evaluate "
                          "(or data.holdout_videos > 0 to evaluate held-out training videos)")
    dataset = load_vis(val.json, val.images)
    return dataset, dataset.raw if dataset.has_annotations else None


def evaluate_split(
    module: CrossVISModule, cfg_data: DictConfig, output_dir: Path, checkpoint: str | Path = "checkpoint"
) -> dict | None:
    """Online inference over every video of the split; returns the metrics when ground truth exists.

    The module's categories (ids and names) must be the split's, checked before any frame is
    read, so results and ``submission.zip`` can only hold the dataset's category ids.
    """
    dataset, ground_truth = load_split(cfg_data)
    check_categories(checkpoint, module.category_names, module.category_ids, dataset.json_path,
                     [(c.id, c.name) for c in dataset.categories])
    inference = module.video_inference()
    results: list[dict] = []
    for video in tqdm(dataset.videos, desc="videos", unit="video"):
        paths = [str(video.frame_path(i)) for i in range(video.length)]
        results.extend(inference.run_paths(video.id, paths))
    write_results_json(output_dir / "results.json", results)
    write_submission_zip(output_dir / "submission.zip", results)
    print(f"Wrote {output_dir / 'results.json'} and {output_dir / 'submission.zip'}")
    if ground_truth is None:
        print("This split has no ground truth: upload submission.zip to the evaluation server.")
        return None
    return evaluate_results(ground_truth, results)


@hydra.main(config_path="../../conf", config_name="evaluate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    configure_threads(cfg.threads)
    output_dir = require_writable_dir(HydraConfig.get().runtime.output_dir, "hydra.run.dir")
    module = load_checked_module(cfg.checkpoint, cfg.device, OmegaConf.to_container(cfg.tracker))
    metrics = evaluate_split(module, cfg.data, output_dir, cfg.checkpoint)
    if metrics is not None:
        print(format_table(metrics))
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
