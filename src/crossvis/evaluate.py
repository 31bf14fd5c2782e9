"""Evaluate a checkpoint with online inference on a data split (Hydra entry point).

    python -m crossvis.evaluate checkpoint=PATH data=synthetic data.root=DIR

Writes ``results.json`` and the CodaLab ``submission.zip`` into the run folder and prints the
YouTube-VIS metrics when the split has ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from crossvis.data.datamodule import VISDataModule
from crossvis.evaluation.metric import evaluate as evaluate_results
from crossvis.evaluation.metric import format_table
from crossvis.evaluation.results import write_results_json, write_submission_zip
from crossvis.lightning_module import CrossVISModule
from crossvis.modeling.checkpoints import CheckpointError, read_checkpoint, released_model_config


def load_module(
    checkpoint: str | Path, device: str = "cpu", tracker: dict | None = None, data: DictConfig | None = None
) -> CrossVISModule:
    """Rebuild a module from a Lightning checkpoint or a released CondInst/CrossVIS checkpoint.

    Lightning checkpoints carry their config. Released detectron2-format files (and their
    ``crossvis.convert`` output) do not: the model is the paper's default with the detectron2
    backbone of the file's depth, class and identity counts from the file, and category names/ids
    from ``data`` (the split's training json; generic names without it). Every model tensor must
    load (re-initialised: only a CondInst file's embedding branch).
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
            datamodule = VISDataModule(data)
            datamodule.setup("validate")
            if datamodule.num_classes != num_classes:
                raise CheckpointError(
                    path,
                    f"has {num_classes} classes (cls_logits) but data {data.get('name')} ({data.train.json}) has "
                    f"{datamodule.num_classes} categories; evaluate it on the dataset it was trained on",
                )
            names = datamodule.category_names
            ids = [datamodule.label_to_category_id(i) for i in range(num_classes)]
        module = CrossVISModule(cfg, num_classes, num_identities, names, ids)
        module.model.load_init(path, strict=True)
        module.to(torch.device(device))
    if tracker:
        module.cfg.tracker = OmegaConf.merge(module.cfg.tracker, tracker)
    return module.eval()


def evaluate_split(module: CrossVISModule, cfg_data: DictConfig, output_dir: Path) -> dict | None:
    """Online inference over every video of the split; returns the metrics when ground truth exists."""
    datamodule = VISDataModule(cfg_data)
    datamodule.setup("validate")
    dataset = datamodule.val_dataset
    inference = module.video_inference()
    results: list[dict] = []
    for video in tqdm(dataset.videos, desc="videos", unit="video"):
        paths = [str(video.frame_path(i)) for i in range(video.length)]
        results.extend(inference.run_paths(video.id, paths))
    write_results_json(output_dir / "results.json", results)
    write_submission_zip(output_dir / "submission.zip", results)
    print(f"Wrote {output_dir / 'results.json'} and {output_dir / 'submission.zip'}")
    if datamodule.val_ground_truth is None:
        print("This split has no ground truth: upload submission.zip to the evaluation server.")
        return None
    return evaluate_results(datamodule.val_ground_truth, results)


@hydra.main(config_path="../../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    module = load_module(cfg.checkpoint, cfg.device, OmegaConf.to_container(cfg.tracker), cfg.data)
    metrics = evaluate_split(module, cfg.data, output_dir)
    if metrics is not None:
        print(format_table(metrics))
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
