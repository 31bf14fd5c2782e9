"""Data modules of the COCO stage (``data=coco``) and of joint video + COCO training (``data=*_coco``).

``build_datamodule(cfg)`` picks the module from ``data.format`` (``vis``, ``coco``,
``joint``) and rejects model settings the data cannot train, before anything is built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from crossvis.data.coco import COCODataset, coco_from_dict, load_coco
from crossvis.data.datamodule import VISDataModule, _single
from crossvis.data.pseudo_pairs import StillImageDataset, StillTransform
from crossvis.data.sampler import FramePairDataset
from crossvis.data.ytvis import VISFormatError, _parse_categories, read_annotation_json
from crossvis.errors import ConfigError

FORMATS = ("vis", "coco", "joint")


class ImageListDataset(Dataset):
    """One validation image per item (the image is read by the validation step)."""

    def __init__(self, coco: COCODataset) -> None:
        self.coco = coco

    def __len__(self) -> int:
        return len(self.coco.images)

    def __getitem__(self, index: int) -> dict:
        image = self.coco.images[index]
        return {"image_id": image.id, "height": image.height, "width": image.width, "path": str(image.require_file())}


class COCODataModule(VISDataModule):
    """COCO still images: single images (CondInst stage) or pseudo-pairs; validation on COCO images.

    ``val_ground_truth`` is the val json dict (COCO format, crowd regions included: COCOeval
    ignores detections on them). ``val_format = "coco"`` tells the LightningModule to run
    per-image inference and COCOeval instead of video tracking.
    """

    val_format = "coco"

    def setup(self, stage: str | None = None) -> None:
        if self.train_vis is not None:
            return
        cfg = self.cfg
        train = load_coco(cfg.train.json, cfg.train.images, require_annotations=True)
        val_cfg = cfg.get("val") or {}
        if val_cfg.get("json"):
            self.val_dataset = load_coco(val_cfg.json, val_cfg.images, require_annotations=True)
            if [(c.id, c.name) for c in self.val_dataset.categories] != [(c.id, c.name) for c in train.categories]:
                raise VISFormatError(
                    f"{self.val_dataset.json_path}: field 'categories': expected the categories of {train.json_path}"
                )
            self.val_ground_truth = self.val_dataset.raw
        self.train_vis = train
        t, pairs = cfg.transform, cfg.pseudo_pairs
        transform = StillTransform(
            t.train_short,
            t.max_size,
            t.flip_prob,
            views=2 if pairs.enabled else 1,
            scale=pairs.scale,
            shift=pairs.shift,
        )
        self.train_dataset = StillImageDataset(train, transform, seed=self.seed)
        kind = "pseudo-pairs" if pairs.enabled else "single images"
        rank_zero_info(f"COCO training: {len(self.train_dataset)} images ({kind}) from {train.json_path}")

    @property
    def num_identities(self) -> int:
        return self.train_vis.num_annotations  # one identity per annotation (used by pseudo-pairs only)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(ImageListDataset(self.val_dataset), batch_size=1, collate_fn=_single, **self._loader_kwargs())


class MixedPairDataset(Dataset):
    """Every video pair of an epoch plus ``round(n·f/(1−f))`` COCO pseudo-pairs (fraction f of all pairs).

    The COCO images of an epoch are the first ones of a permutation drawn from (seed, epoch),
    cycling when more are needed than exist; indices arrive as (index, epoch) from ``EpochSampler``.
    """

    def __init__(self, video: FramePairDataset, coco: StillImageDataset, coco_fraction: float, seed: int = 0) -> None:
        if not 0 <= coco_fraction < 1:
            raise ConfigError(f"data.coco.fraction: expected a share of COCO pairs in [0, 1), got {coco_fraction}")
        if coco_fraction > 0 and len(coco) == 0:
            raise ConfigError(
                f"{coco.coco.json_path}: no image keeps an instance of a mapped category (data.coco.category_map)"
            )
        self.video, self.coco, self.seed = video, coco, int(seed)
        self.counts = {"video": len(video), "coco": round(len(video) * coco_fraction / (1 - coco_fraction))}
        self._order: tuple[int, np.ndarray] | None = None
        self.epoch = 0

    def __len__(self) -> int:
        return self.counts["video"] + self.counts["coco"]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def coco_index(self, j: int, epoch: int) -> int:
        """Image index of the epoch's ``j``-th COCO pair."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng((self.seed, epoch, 1)).permutation(len(self.coco)))
        order = self._order[1]
        return int(order[j % len(order)])

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        if index < self.counts["video"]:
            return self.video[(index, epoch)]
        return self.coco[(self.coco_index(index - self.counts["video"], epoch), epoch)]


def category_labels(mapping: dict, coco_categories: list, video: VISDataModule, coco_json: str) -> dict[int, int]:
    """``data.coco.category_map`` (COCO id → video category id) as COCO id → video label, checked."""
    coco_ids = {c.id for c in coco_categories}
    to_label = video.train_vis.category_id_to_label
    labels = {}
    for coco_id, video_id in mapping.items():
        if int(coco_id) not in coco_ids:
            raise ConfigError(f"data.coco.category_map: key {coco_id} is not a category id of {coco_json}")
        if int(video_id) not in to_label:
            raise ConfigError(
                f"data.coco.category_map: value {video_id} (for COCO {coco_id}) is not a category id of "
                f"{video.train_vis.json_path} (expected one of {sorted(to_label)})"
            )
        labels[int(coco_id)] = to_label[int(video_id)]
    return labels


class JointDataModule(VISDataModule):
    """Video pairs mixed with COCO pseudo-pairs whose categories are mapped onto the video dataset's.

    Validation, class and identity counts are the video dataset's; COCO pairs carry
    ``identity_loss: False`` so L_id is computed on the video pairs only.
    """

    def setup(self, stage: str | None = None) -> None:
        if self.train_vis is not None:
            return
        super().setup(stage)
        cfg = self.cfg.coco
        raw = read_annotation_json(cfg.json)
        labels = category_labels(cfg.category_map, _parse_categories(raw, Path(cfg.json)), self, cfg.json)
        coco = coco_from_dict(raw, cfg.json, cfg.images, require_annotations=True, label_of=labels)
        t = self.cfg.transform
        transform = StillTransform(
            [t.short], t.max_size, t.flip_prob, views=2, scale=cfg.pseudo_pairs.scale, shift=cfg.pseudo_pairs.shift
        )
        still = StillImageDataset(coco, transform, seed=self.seed, identity_loss=False)
        self.train_dataset = MixedPairDataset(self.train_dataset, still, float(cfg.fraction), seed=self.seed)
        counts = self.train_dataset.counts
        rank_zero_info(
            f"Joint training pairs per epoch: {counts['video']} video pairs + {counts['coco']} COCO pseudo-pairs "
            f"(from {len(still)} COCO images with a mapped category)"
        )


def check_config(cfg: DictConfig) -> str:
    """``data.format`` after checking the model settings it needs; raises :class:`ConfigError`."""
    fmt = cfg.data.format
    if fmt not in FORMATS:
        raise ConfigError(f"data.format: expected one of {FORMATS}, got {fmt!r}")
    if fmt != "coco":
        return fmt
    embedding = cfg.model.embedding
    if not cfg.data.pseudo_pairs.enabled:
        if cfg.model.crossover.enabled or embedding.enabled:
            raise ConfigError(
                "data=coco trains on single images: set model.crossover.enabled=false and "
                "model.embedding.enabled=false (experiment=coco_condinst does), or data.pseudo_pairs.enabled=true"
            )
    elif embedding.enabled and embedding.type == "global":
        raise ConfigError(
            "model.embedding.type=global does not apply to COCO pseudo-pairs: it learns one proxy per identity "
            "of a video dataset, and every COCO annotation would be its own identity (860k in train2017). "
            "Use model.embedding.type=pairwise, model.embedding.enabled=false, or joint training (data=ytvis19_coco)"
        )
    return fmt


def build_datamodule(cfg: DictConfig) -> VISDataModule:
    """The data module of ``cfg.data`` (video, COCO or joint), after :func:`check_config`."""
    fmt = check_config(cfg)
    return {"vis": VISDataModule, "coco": COCODataModule, "joint": JointDataModule}[fmt](cfg.data, seed=cfg.seed)
