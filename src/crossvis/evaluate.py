"""Evaluate a checkpoint with online inference on a data split (Hydra entry point).

    python -m crossvis.evaluate checkpoint=PATH data=synthetic data.root=DIR

Writes ``results.json`` and the CodaLab ``submission.zip`` into the run folder and prints the
YouTube-VIS metrics when the split has ground truth. Checkpoint, data json and the checkpoint's
categories are checked before any frame is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from crossvis.checkpoints import CHECKPOINT_EXPECTED, check_categories
from crossvis.cli import configure_threads, require_file, require_writable_dir, user_errors
from crossvis.data.datamodule import VISDataModule
from crossvis.data.ytvis import Category, VISDataset, load_vis
from crossvis.errors import ConfigError, InputFormatError, UserError
from crossvis.evaluation.metric import evaluate as evaluate_results
from crossvis.evaluation.metric import format_table
from crossvis.evaluation.results import write_results_json, write_submission_zip
from crossvis.lightning_module import CrossVISModule
from crossvis.modeling.checkpoints import CheckpointError, read_checkpoint, released_model_config


def load_module(
    checkpoint: str | Path,
    device: str = "cpu",
    tracker: dict | None = None,
    data: DictConfig | None = None,
    categories: Sequence[Category] | None = None,
) -> CrossVISModule:
    """Rebuild a module from a Lightning checkpoint or a released CondInst/CrossVIS checkpoint.

    Lightning checkpoints carry their config. Released detectron2-format files (and their
    ``crossvis.convert`` output) do not: the model is the paper's default with the detectron2
    backbone of the file's depth and the test-time resize of ``data``, class and identity counts
    from the file, and category names/ids from ``categories`` (those of the split to evaluate;
    generic names without them). Every model tensor must load (re-initialised: only a CondInst
    file's embedding branch).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {path}")
    source = read_checkpoint(path)
    if source.hyper_parameters is not None:
        module = CrossVISModule.load_from_checkpoint(path, map_location=torch.device(device))
    else:
        cfg, num_classes, num_identities = released_model_config(source)
        names, ids = [f"class {i + 1}" for i in range(num_classes)], list(range(1, num_classes + 1))
        if data is not None:
            cfg.data = data
        if categories is not None:
            if len(categories) != num_classes:
                raise CheckpointError(
                    path,
                    f"has {num_classes} classes (cls_logits) but the data has {len(categories)} categories; "
                    "evaluate it on the dataset it was trained on",
                )
            names, ids = [c.name for c in categories], [c.id for c in categories]
        module = CrossVISModule(cfg, num_classes, num_identities, names, ids)
        reinitialised, unused = module.model.load_init(path, strict=True)  # unmatched keys raise
        print(
            f"Loaded {path} ({source.origin}): no model tensor unmatched, {len(reinitialised)} re-initialised; "
            f"file keys unused: {', '.join(unused) or 'none'}"
        )
        module.to(torch.device(device))
    if tracker:
        module.cfg.tracker = OmegaConf.merge(module.cfg.tracker, tracker)
    return module.eval()


def load_checked_module(checkpoint: str | Path, *args: Any, **kwargs: Any) -> CrossVISModule:
    """:func:`load_module` under the user-error contract: a missing file, a folder or a file that is
    not a checkpoint is one clear message (never torch's advice to load it unsafely)."""
    path = require_file(checkpoint, "checkpoint", CHECKPOINT_EXPECTED)
    try:
        return load_module(path, *args, **kwargs)
    except UserError:
        raise
    except Exception as error:  # torch/pickle/Lightning raise many types for a file that is not a checkpoint
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines and "weights_only" not in str(error) else "not a checkpoint torch can read safely"
        raise InputFormatError(
            f"checkpoint: cannot load {path} ({type(error).__name__}: {detail}); expected {CHECKPOINT_EXPECTED}"
        ) from error


def load_split(cfg_data: DictConfig) -> tuple[VISDataset, dict | None]:
    """The split to evaluate (``data.validate_on``) and its ground truth (None when hidden).

    Only that split's json is read, except for ``validate_on=holdout`` (held-out training videos).
    """
    if cfg_data.get("validate_on", "official") == "holdout":
        datamodule = VISDataModule(cfg_data)
        datamodule.setup("validate")
        return datamodule.val_dataset, datamodule.val_ground_truth
    val = cfg_data.get("val") or {}
    if not val.get("json"):
        raise ConfigError("data.val.json: expected the annotation json of the split to evaluate "
                          "(or data.validate_on=holdout to evaluate held-out training videos)")
    dataset = load_vis(val.json, val.images)
    return dataset, dataset.raw if dataset.has_annotations else None


def evaluate_split(
    module: CrossVISModule, cfg_data: DictConfig, output_dir: Path, checkpoint: str | Path = "checkpoint"
) -> dict | None:
    """:func:`evaluate_dataset` on the split that ``cfg_data`` names (only that split's json is read)."""
    dataset, ground_truth = load_split(cfg_data)
    return evaluate_dataset(module, dataset, ground_truth, output_dir, checkpoint)


def evaluate_dataset(
    module: CrossVISModule,
    dataset: VISDataset,
    ground_truth: dict | None,
    output_dir: Path,
    checkpoint: str | Path = "checkpoint",
) -> dict | None:
    """Online inference over every video of ``dataset``; returns the metrics when ground truth exists.

    The module's categories (ids and names) must be the split's, checked before any frame is
    read, so results and ``submission.zip`` can only hold the dataset's category ids.
    """
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
    dataset, ground_truth = load_split(cfg.data)
    tracker = OmegaConf.to_container(cfg.tracker)
    module = load_checked_module(cfg.checkpoint, cfg.device, tracker, cfg.data, dataset.categories)
    metrics = evaluate_dataset(module, dataset, ground_truth, output_dir, cfg.checkpoint)
    if metrics is not None:
        print(format_table(metrics))
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
