"""A yardstick for CrossVIS: torchvision Mask R-CNN (ResNet-18-FPN from scratch) + a mask-IoU tracker.

Trained on the same frame-pair data module as CrossVIS, each frame used as a single image, with the
same budget in frames (``steps`` x ``frames_per_step``), AdamW and the CPU recipe's schedule; the
valid split is then tracked online and scored with crossvis's YouTube-VIS metric, and with COCO
mask AP per frame (every frame an image, before tracking), as ``crossvis.cli.evaluate per_frame=true``.

    python -m crossvis.baselines.peer data.root=DIR [steps=700 frames_per_step=8 ...]   # or make peer ARGS=...
    python -m crossvis.baselines.peer data.root=DIR checkpoint=RUN/model.pt              # evaluate only
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from crossvis.data.datamodule import VISDataModule
from crossvis.engine.inference import VideoInference
from crossvis.engine.schedule import Schedule, WarmupMultiStepLR
from crossvis.evaluation.frame_ap import FrameDetections, format_frame_table, frame_ap
from crossvis.evaluation.metric import evaluate, format_table
from crossvis.evaluation.results import write_results_json
from crossvis.tracking import MaskIoUTracker


def build_model(num_classes: int, channels: int, size: tuple[int, int]) -> MaskRCNN:
    """Mask R-CNN R-18-FPN, random weights, trainable BatchNorm; FPN and mask head ``channels`` wide."""
    body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512], channels)
    short, long_side = size
    return MaskRCNN(
        backbone,
        min_size=short,
        max_size=long_side,
        mask_head=MaskRCNNHeads(channels, [channels] * 4, 1),
        box_predictor=FastRCNNPredictor(1024, num_classes + 1),  # + background; 1024 = the box head's width
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes + 1),
    )


def single_frames(batch: dict) -> tuple[list[torch.Tensor], list[dict]]:
    """A batch of pairs → its 2B frames as torchvision inputs (0..1 images cropped to their valid size)."""
    images, targets = [], []
    for b, pair in enumerate(batch["targets"]):
        for f, target in enumerate(pair):
            h, w = batch["image_sizes"][b, f].tolist()
            images.append(batch["images"][b, f, :, :h, :w] / 255.0)
            targets.append(
                {
                    "boxes": target["boxes"] + torch.tensor([0.0, 0.0, 1.0, 1.0]),  # last pixel → pixel edge
                    "labels": target["labels"] + 1,
                    "masks": target["masks"][:, :h, :w].to(torch.uint8),
                }
            )
    return images, targets


@torch.inference_mode()
def track_split(model: MaskRCNN, datamodule: VISDataModule, cfg: DictConfig) -> tuple[list[dict], FrameDetections]:
    """Online inference on every valid video through the project's online runner: Mask R-CNN detects
    each frame, the mask-IoU tracker links them.

    Returns the video results and the per-frame detections (for the per-frame AP).
    """
    t = cfg.data.transform
    category_ids = [datamodule.label_to_category_id(i) for i in range(datamodule.num_classes)]
    frames = FrameDetections(datamodule.val_ground_truth["videos"], category_ids)
    min_score = cfg.tracker.min_score

    def detect(image: torch.Tensor, frame_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The peer's frame model: detections above min_score, masks and boxes at the frame's size."""
        det = model([image / 255.0])[0]
        keep = det["scores"] >= min_score
        probs = F.interpolate(det["masks"][keep], size=frame_size, mode="bilinear", align_corners=False)
        (h, w), (in_h, in_w) = frame_size, image.shape[-2:]
        boxes = det["boxes"][keep] * torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h])
        return {
            "boxes": boxes,
            "masks": probs[:, 0] > 0.5,
            "labels": det["labels"][keep] - 1,
            "scores": det["scores"][keep],
        }

    runner = VideoInference(
        model,
        detect,
        t.short,
        t.max_size,
        {},
        category_ids,
        new_tracker=lambda: MaskIoUTracker(cfg.tracker.match_iou),
    )
    results = []
    for video in datamodule.val_dataset.videos:

        def collect(
            index: int, frame: np.ndarray, detections: dict, track_ids: np.ndarray, video_id: int = video.id
        ) -> None:
            frames.add(video_id, index, detections)

        results.extend(runner.run_paths(video.id, [video.frame_path(i) for i in range(video.length)], collect))
    return results, frames


def train(model: MaskRCNN, datamodule: VISDataModule, cfg: DictConfig) -> list[dict]:
    """``cfg.steps`` AdamW steps on the frame-pair loader; returns the logged losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = Schedule(
        lr=cfg.lr,
        total_steps=cfg.steps,
        milestones=tuple(round(f * cfg.steps) for f in cfg.decay_at),
        warmup_iters=cfg.warmup_iters,
        warmup_factor=cfg.warmup_factor,
        gamma=cfg.gamma,
        global_batch=cfg.frames_per_step,
    )
    scheduler = WarmupMultiStepLR(optimizer, schedule)
    step, epoch, log = 0, 0, []
    loader = datamodule.train_dataloader()
    model.train()
    while step < cfg.steps:
        loader.sampler.set_epoch(epoch)  # a new shuffle and new pairs every epoch, as under Lightning
        epoch += 1
        for batch in loader:
            losses = model(*single_frames(batch))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                log.append({"step": step, **{k: round(v.item(), 4) for k, v in losses.items()}})
                print(json.dumps(log[-1]), flush=True)
            if step == cfg.steps:
                break
    return log


@hydra.main(config_path="pkg://crossvis.conf", config_name="peer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    with open_dict(cfg):
        cfg.data.batch_size = int(cfg.frames_per_step) // 2
    datamodule = VISDataModule(cfg.data)
    datamodule.setup("fit")
    model = build_model(
        datamodule.num_classes, int(cfg.channels), (cfg.data.transform.short, cfg.data.transform.max_size)
    )
    if cfg.checkpoint:
        model.load_state_dict(torch.load(cfg.checkpoint, map_location="cpu"))
        summary = {"checkpoint": str(cfg.checkpoint)}
    else:
        start = time.perf_counter()
        log = train(model, datamodule, cfg)
        minutes = (time.perf_counter() - start) / 60
        torch.save(model.state_dict(), output_dir / "model.pt")
        (output_dir / "losses.json").write_text(json.dumps(log))
        summary = {"steps": int(cfg.steps), "frames_per_step": int(cfg.frames_per_step)}
        print(f"Peer Mask R-CNN R-18-FPN: {summary['steps']} steps x {cfg.frames_per_step} frames, {minutes:.1f} min")
    results, frames = track_split(model, datamodule, cfg)
    write_results_json(output_dir / "results.json", results)
    metrics = {**evaluate(datamodule.val_ground_truth, results), **frame_ap(datamodule.val_ground_truth, frames)}
    print(format_table(metrics))
    print(format_frame_table(metrics))
    print(json.dumps({**metrics, **summary}))


if __name__ == "__main__":
    main()
