"""LightningDataModule for YouTube-VIS / OVIS style data, built from the Hydra ``data`` config.

Training batch (``collate_pairs``; B pairs, frame index 0 = key frame t, 1 = reference t+δ):

- ``images``: float32 ``[B, 2, 3, Hp, Wp]`` RGB in 0..255 (the model normalises), zero padded
  at the bottom/right to the batch maximum rounded up to a multiple of 32.
- ``image_sizes``: long ``[B, 2, 2]`` valid ``(h, w)`` of each frame before padding.
- ``targets``: list (len B) of lists (len 2) of per-frame dicts:
  ``masks`` bool ``[N, Hp, Wp]``; ``boxes`` float32 ``[N, 4]`` xyxy pixels, the json ``bboxes``
  (x2 = x + w) transformed with the image, or the mask's box in that convention where the json has none;
  ``labels`` long ``[N]`` contiguous class (index into the id-sorted categories);
  ``identities`` long ``[N]`` in 0..M-1 (one per training annotation id).
  Only non-crowd instances with a non-empty mask in that frame; N may be 0 for the reference
  frame (and, rarely, for a key frame whose only mask vanished when resized).
- ``meta``: list (len B) of ``{"video_id": int, "frames": (key, ref)}`` (frame indices).

Validation dataloader: batch size 1, each item is one video as a plain dict
``{"video_id", "height", "width", "frame_paths": list[str]}``; the inference loop reads the
frames lazily (``transforms.load_frame_rgb`` + ``preprocess_for_inference``).

Validation split (``data.validate_on``): ``official`` is ``data.val`` (AP only where its json has
annotations; the official YouTube-VIS / OVIS valid jsons do not); ``holdout`` is the local split of
the training videos used by the paper-table sweeps: every ``data.holdout_every``-th training video
in id order (positions 0, k, 2k, ...; k = 10 holds out about 10 %), removed from training.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from crossvis.data.sampler import EpochSampler, FramePairDataset
from crossvis.data.transforms import PairTransform
from crossvis.data.ytvis import VISDataset, VISFormatError, load_vis, subset_raw, vis_from_dict
from crossvis.errors import config_node
from crossvis.files import read_json, write_json_atomic

VALIDATE_ON = ("official", "holdout")

PAD_DIVISOR = 32  # strides up to 32 (and timm's DLA-34) need inputs divisible by 32


def collate_pairs(items: list[dict]) -> dict:
    """Batch pair items, zero padding images and masks to the batch max rounded up to 32.

    Items of single images (``images`` [1, 3, h, w], the COCO stage) batch the same way with 1 frame.
    """
    sizes = torch.tensor([item["images"].shape[-2:] for item in items], dtype=torch.long)
    hp, wp = (math.ceil(int(s) / PAD_DIVISOR) * PAD_DIVISOR for s in sizes.max(dim=0).values)
    frames = items[0]["images"].shape[0]
    images = torch.zeros(len(items), frames, 3, hp, wp, dtype=torch.float32)
    targets = []
    for b, (item, (h, w)) in enumerate(zip(items, sizes.tolist())):
        images[b, :, :, :h, :w] = item["images"]
        targets.append([{**t, "masks": F.pad(t["masks"], (0, wp - w, 0, hp - h))} for t in item["targets"]])
    return {
        "images": images,
        "image_sizes": sizes[:, None, :].expand(-1, frames, -1).clone(),  # both frames share the size
        "targets": targets,
        "meta": [item["meta"] for item in items],
    }


class VideoListDataset(Dataset):
    """One validation video per item (frames are loaded by the inference loop)."""

    def __init__(self, vis: VISDataset) -> None:
        self.vis = vis

    def __len__(self) -> int:
        return len(self.vis.videos)

    def __getitem__(self, index: int) -> dict:
        video = self.vis.videos[index]
        return {
            "video_id": video.id,
            "height": video.height,
            "width": video.width,
            "frame_paths": [str(video.frame_path(i)) for i in range(video.length)],
        }


def _single(batch: list[dict]) -> dict:
    """Collate for batch size 1: the video dict itself, not a batched one."""
    return batch[0]


def holdout_video_ids(video_ids: list[int], every: int) -> list[int]:
    """The local validation split: every ``every``-th video id in sorted order (positions 0, k, 2k, ...)."""
    if every < 2:
        raise ValueError(f"data.holdout_every: expected an integer >= 2 for the held-out split, got {every}")
    held = sorted(video_ids)[::every]
    if len(held) == len(video_ids):
        raise ValueError(f"data.holdout_every={every}: would hold out all {len(video_ids)} training videos")
    return held


def holdout_split(train: VISDataset, every: int | None) -> tuple[list[int], VISDataset, VISDataset]:
    """The held-out split of ``train`` (``data.holdout_every``): its video ids, the held-out videos
    (with their annotations) and the remaining training videos."""
    ids = [v.id for v in train.videos]
    try:
        held_ids = holdout_video_ids(ids, int(every or 0))
    except ValueError as e:
        raise VISFormatError(f"{train.json_path}: {e}") from e
    held = set(held_ids)
    held_out = vis_from_dict(subset_raw(train.raw, held), train.json_path, train.image_root)
    rest = vis_from_dict(subset_raw(train.raw, set(ids) - held), train.json_path, train.image_root)
    return held_ids, held_out, rest


def official_split(cfg_data: DictConfig) -> DictConfig:
    """``cfg_data`` validating on the official ``data.val`` split (the CodaLab submission's split)."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg_data, resolve=True))
    cfg.validate_on = "official"
    return cfg


class VISDataModule(pl.LightningDataModule):
    """Training pairs and validation videos; exposes class/identity counts after ``setup()``.

    ``seed`` is the run's top-level seed: it fixes the frame pairs, their augmentation and the
    shuffling order (with the epoch), so two runs with one seed see the same data.
    """

    val_format = "vis"  # validation videos, tracked online (COCODataModule: still images)

    def __init__(self, cfg_data: DictConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg_data
        self.seed = int(seed)
        self.train_vis: VISDataset | None = None
        self.train_dataset: FramePairDataset | None = None
        self.val_dataset: VISDataset | None = None
        self.val_ground_truth: dict | None = None
        self.holdout_ids: list[int] = []  # held-out training videos (validate_on=holdout)
        self._num_identities = 0
        self._train_sampler: EpochSampler | None = None
        self._resume: dict | None = None  # position in the pair order of a resumed run (load_state_dict)

    @classmethod
    def from_run_config(cls, cfg: DictConfig) -> VISDataModule:
        """The data module of a run: ``cfg.data`` seeded by the run's top-level ``seed``."""
        return cls(cfg.data, seed=cfg.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_vis is not None:
            return
        cfg = self.cfg
        train = load_vis(cfg.train.json, cfg.train.images, require_annotations=True)
        self._num_identities = train.num_identities  # M of the whole training json, held-out videos included
        validate_on = cfg.validate_on
        if validate_on not in VALIDATE_ON:
            raise ValueError(f"data.validate_on: expected one of {VALIDATE_ON}, got {validate_on!r}")
        val_cfg = cfg.get("val") or {}
        if validate_on == "holdout":
            self.holdout_ids, self.val_dataset, train = holdout_split(train, cfg.get("holdout_every"))
            self.val_ground_truth = self.val_dataset.raw
        elif val_cfg.get("json"):
            self.val_dataset = load_vis(val_cfg.json, val_cfg.images)
            if [(c.id, c.name) for c in self.val_dataset.categories] != [(c.id, c.name) for c in train.categories]:
                raise VISFormatError(
                    f"{self.val_dataset.json_path}: field 'categories': expected the categories of {train.json_path}"
                )
            self.val_ground_truth = self.val_dataset.raw if self.val_dataset.has_annotations else None
        self.train_vis = train
        t = cfg.transform
        transform = PairTransform(
            short=t.short,
            max_size=t.max_size,
            flip_prob=t.flip_prob,
            multiscale=bool(t.multiscale),
            scales=t.scales,
        )
        with config_node("data.sampler"):
            self.train_dataset = FramePairDataset(train, cfg.sampler.T, transform, seed=self.seed)

    def write_split(self, path: str | Path) -> None:
        """Record the held-out split in ``path`` (json) once; a later run in the same folder must match it."""
        record = {
            "train_json": str(self.cfg.train.json),
            "holdout_every": int(self.cfg.holdout_every),
            "held_out_video_ids": self.holdout_ids,
            "train_video_ids": [v.id for v in self.train_vis.videos],
        }
        path = Path(path)
        if path.is_file():
            if read_json(path, "held-out split record") != record:
                raise ValueError(f"{path}: the held-out split recorded there differs from this run's")
            return
        write_json_atomic(path, record)

    @property
    def num_classes(self) -> int:
        return self.train_vis.num_classes

    @property
    def num_identities(self) -> int:
        """M of the full training json in every split mode (the public code's proxies, 3774 on YouTube-VIS 2019)."""
        return self._num_identities

    @property
    def category_names(self) -> list[str]:
        return self.train_vis.category_names

    def label_to_category_id(self, label: int) -> int:
        return self.train_vis.label_to_category_id(label)

    def _loader_kwargs(self) -> dict:
        workers = int(self.cfg.num_workers)
        return {"num_workers": workers, "persistent_workers": workers > 0}

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = EpochSampler(
            self.train_dataset,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            shuffle=True,
            seed=self.seed,
        )
        loader = DataLoader(
            self.train_dataset,
            batch_size=int(self.cfg.batch_size),
            sampler=sampler,
            collate_fn=collate_pairs,
            # Its own generator: creating an iterator must not draw from torch's global stream, which
            # the model's sampling uses (a resumed run creates its first iterator mid-epoch).
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_kwargs(),
        )
        if self._resume:
            epoch, batches = int(self._resume["epoch"]), int(self._resume["batches"])
            if batches >= len(loader):  # saved at the end of an epoch: the next one starts whole
                epoch, batches = epoch + 1, 0
            sampler.resume_at(epoch, batches * loader.batch_size)
            self._resume = None
        self._train_sampler = sampler
        return loader

    def state_dict(self) -> dict:
        """How far training got in its pair order: Lightning stores this in every checkpoint.

        A resumed run gets it back (:meth:`load_state_dict`, before its loader is made) and goes on
        with the pairs the interrupted run had not trained on; Lightning alone would restart the
        interrupted epoch's order from its first pair.
        """
        if self.trainer is None or self._train_sampler is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed  # batches trained this epoch
        return {"epoch": int(self._train_sampler.epoch), "batches": int(done)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = state_dict or None

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(VideoListDataset(self.val_dataset), batch_size=1, collate_fn=_single, **self._loader_kwargs())
