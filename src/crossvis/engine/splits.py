"""Online evaluation of a trained module on one data split: results.json, submission.zip, metrics."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from crossvis.checkpoint.training_state import check_categories
from crossvis.data.datamodule import holdout_split
from crossvis.data.ytvis import VISDataset, load_vis
from crossvis.engine.inference import VideoInference
from crossvis.engine.lightning_module import CrossVISModule
from crossvis.engine.runtime import Runtime
from crossvis.errors import ConfigError
from crossvis.evaluation.frame_ap import FrameDetections, frame_ap
from crossvis.evaluation.metric import evaluate as evaluate_results
from crossvis.evaluation.results import write_results_json, write_submission_zip


def load_split(cfg_data: DictConfig) -> tuple[VISDataset, dict | None]:
    """The split to evaluate (``data.validate_on``) and its ground truth (None when hidden).

    Only that split's json is read (for ``validate_on=holdout``, the training json that holds it).
    """
    if cfg_data.validate_on == "holdout":  # the held-out videos live in data.train.json
        train = load_vis(cfg_data.train.json, cfg_data.train.images, require_annotations=True)
        _, held_out, _ = holdout_split(train, cfg_data.holdout_every)
        return held_out, held_out.raw
    val = cfg_data.get("val") or {}
    if not val.get("json"):
        raise ConfigError(
            "data.val.json: expected the annotation json of the split to evaluate "
            "(or data.validate_on=holdout to evaluate held-out training videos)"
        )
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
    inference_overrides: DictConfig | dict | None = None,
    per_frame: bool = False,
    runtime: Runtime | None = None,
) -> dict | None:
    """Online inference over every video of ``dataset`` (the module's ``inference`` config with
    ``inference_overrides``); returns the metrics when ground truth exists.

    ``per_frame`` adds COCO AP with every frame an image (``frame_AP_mask``, ...: see
    :mod:`crossvis.evaluation.frame_ap`), the detections scored before the tracker links them.
    ``runtime``: where the network runs (:class:`crossvis.engine.runtime.Runtime`, default PyTorch eager).

    The module's categories (ids and names) must be the split's, checked before any frame is
    read, so results and ``submission.zip`` can only hold the dataset's category ids.
    """
    check_categories(
        checkpoint,
        module.category_names,
        module.category_ids,
        dataset.json_path,
        [(c.id, c.name) for c in dataset.categories],
    )
    inference = VideoInference.from_config(
        module.cfg.inference, module.model, module.category_ids, inference_overrides, runtime
    )
    results: list[dict] = []
    frames = FrameDetections(ground_truth["videos"], module.category_ids) if per_frame and ground_truth else None
    for video in tqdm(dataset.videos, desc="videos", unit="video"):
        paths = [str(video.frame_path(i)) for i in range(video.length)]
        results.extend(inference.run_paths(video.id, paths, None if frames is None else frames.collector(video.id)))
    write_results_json(output_dir / "results.json", results)
    write_submission_zip(output_dir / "submission.zip", results)
    print(f"Wrote {output_dir / 'results.json'} and {output_dir / 'submission.zip'}")
    if ground_truth is None:
        print("This split has no ground truth: upload submission.zip to the evaluation server.")
        return None
    metrics = evaluate_results(ground_truth, results)
    return metrics if frames is None else {**metrics, **frame_ap(ground_truth, frames)}
