"""Why a results file scores what it scores: breakdowns, error decomposition and oracle upper bounds.

Every number here is the official YouTube-VIS protocol of :mod:`crossvis.evaluation.metric`
run on a subset or on modified results, never a second AP implementation:

* breakdowns (per category, video length, instance duration, occlusion) restrict the protocol
  the way the official area ranges do: the attribute takes the place of a track's area;
* the error decomposition follows the definitions of the TIVE paper (Jia et al., "TIVE: A
  toolbox for identifying video instance segmentation errors", built on TIDE): at each IoU
  threshold, every false positive is one of classification, duplicate, spatial, temporal,
  both, background, and every unexplained unmatched ground truth is missed; the ΔAP of a type
  is the AP after an oracle fixes that type minus the AP;
* the oracle upper bounds feed ground-truth association or ground-truth classes to the metric.

Spatio-temporal IoUs are computed once per video (results and ground-truth copies against the
ground truth) and shared by all evaluations.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossvis.evaluation.metric import (
    AREA_RANGES,
    METRIC_KEYS,
    frame_overlaps,
    index_datasets,
    mean_valid,
    overlaps_to_iou,
    run_protocol,
    track_area,
)

IOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
BACKGROUND_IOU = 0.1  # TIVE: below this spatio-temporal IoU with every ground truth, a result is background
FRAME_IOU = 0.1  # TIVE's temporal overlap counts the frames whose per-frame IoU exceeds this ...
SPATIAL_OVERLAP = 0.7  # ... and calls a localisation error spatial when that fraction is at least this
ERROR_TYPES = ("classification", "duplicate", "spatial", "temporal", "both", "background", "missed")
OCCLUSION_BINS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0))  # slight, moderate, heavy mean box occlusion rate
OCCLUSION_NAMES = ("slight", "moderate", "heavy")
ORACLE_SCORE = 1e6  # a missed ground truth added by the oracle ranks first
ALL = [list(AREA_RANGES[0])]


@dataclass
class VideoOverlaps:
    """Per-frame overlaps of every track evaluated in one video with its ground truth (all classes)."""

    gt_ids: list[int]
    gt_tracks: list[list]
    rows: dict[Hashable, int] = field(default_factory=dict)
    inter: np.ndarray | None = None  # [F, R, G]
    area_r: np.ndarray | None = None  # [F, R]
    area_g: np.ndarray | None = None  # [F, G]
    st_iou: np.ndarray | None = None  # [R, G]

    def add(self, keys: Sequence[Hashable], tracks: Sequence[list]) -> None:
        """Compute the overlaps of tracks not seen yet (one ``frame_overlaps`` call for all of them)."""
        new = [(k, t) for k, t in zip(keys, tracks) if k not in self.rows]
        if not new or not self.gt_tracks:
            return
        inter, area_r, area_g = frame_overlaps([t for _, t in new], self.gt_tracks)
        start = 0 if self.inter is None else self.inter.shape[1]
        self.rows.update({k: start + i for i, (k, _) in enumerate(new)})
        if self.inter is None:
            self.inter, self.area_r, self.area_g = inter, area_r, area_g
        else:
            self.inter = np.concatenate([self.inter, inter], axis=1)
            self.area_r = np.concatenate([self.area_r, area_r], axis=1)
        self.st_iou = overlaps_to_iou(self.inter.sum(0), self.area_r.sum(0), self.area_g.sum(0))

    def temporal_overlap(self, key: Hashable, gt_index: int) -> float:
        """TIVE: among the frames where the track or the ground truth has a mask, the share with IoU > 0.1."""
        r = self.rows[key]
        inter, a_r, a_g = self.inter[:, r, gt_index], self.area_r[:, r], self.area_g[:, gt_index]
        present = (a_r > 0) | (a_g > 0)
        frame_iou = overlaps_to_iou(inter[:, None, None], a_r[:, None], a_g[:, None])[:, 0, 0]
        return float((frame_iou[present] > FRAME_IOU).mean()) if present.any() else 0.0


class Indexed:
    """Ground truth and results indexed once, with the IoU cache every evaluation of the analysis shares."""

    def __init__(self, ground_truth: Mapping[str, Any], results: list[dict]) -> None:
        self.gt, self.dt = index_datasets(ground_truth, results)
        self.raw_gt, self.raw_results = ground_truth, results
        self.videos = {v["id"]: v for v in self.gt["images"]}
        self.gt_by_id = {g["id"]: g for g in self.gt["annotations"]}
        self.overlaps = {vid: VideoOverlaps([], []) for vid in self.videos}
        for g in self.gt["annotations"]:
            self.overlaps[g["image_id"]].gt_ids.append(g["id"])
            self.overlaps[g["image_id"]].gt_tracks.append(g["segmentation"])
        for d in self.dt["annotations"]:
            d["key"] = ("d", d["id"])
        self.cache_tracks(self.dt["annotations"])
        gt_copies = [{**g, "key": ("g", g["id"])} for g in self.gt["annotations"]]
        self.cache_tracks(gt_copies)

    def cache_tracks(self, dts: Sequence[dict]) -> None:
        by_video: dict[int, list[dict]] = {}
        for d in dts:
            by_video.setdefault(d["image_id"], []).append(d)
        for vid, items in by_video.items():
            self.overlaps[vid].add([d["key"] for d in items], [d["segmentation"] for d in items])

    def iou(self, video_id: int, dts: list[dict], gts: list[dict]) -> np.ndarray:
        """The cached st-IoU rows of ``dts`` (by their ``key``) against ``gts``: the metric's ``iou_fn``."""
        video = self.overlaps[video_id]
        video.add([d["key"] for d in dts], [d["segmentation"] for d in dts])
        cols = [video.gt_ids.index(g["id"]) for g in gts]
        return video.st_iou[np.ix_([video.rows[d["key"]] for d in dts], cols)]

    def evaluate(self, dts: list[dict], **kwargs: Any) -> Any:
        """The official protocol on these results (``run_protocol`` keyword arguments)."""
        return run_protocol(self.gt, {**self.dt, "annotations": dts}, iou_fn=self.iou, **kwargs)


def summary(coco_eval: Any, range_index: int = 0) -> dict[str, float]:
    """AP, AP50, AP75, AR1, AR10 of one range of an evaluation (as COCOeval's summarize computes them)."""
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]
    thresholds = list(np.round(coco_eval.params.iouThrs, 2))
    out = {"AP": mean_valid(precision[:, :, :, range_index, -1])}
    for name, t in (("AP50", 0.5), ("AP75", 0.75)):
        out[name] = mean_valid(precision[thresholds.index(t), :, :, range_index, -1]) if t in thresholds else -1.0
    out["AR1"] = mean_valid(recall[:, :, range_index, 0])
    out["AR10"] = mean_valid(recall[:, :, range_index, 1])
    return out


def full_metrics(coco_eval: Any) -> dict[str, float]:
    """The eight metrics of ``metric.evaluate`` from an evaluation with the area ranges."""
    base = summary(coco_eval)
    areas = {
        k: mean_valid(coco_eval.eval["precision"][:, :, :, a, -1]) for a, k in enumerate(("", "APs", "APm", "APl"))
    }
    merged = {**base, **{k: v for k, v in areas.items() if k}}
    return {k: merged[k] for k in METRIC_KEYS}


# ---------------------------------------------------------------------------------------------
# Breakdowns: the protocol restricted to categories, videos or ranges of a track attribute.


def per_category(ctx: Indexed, coco_eval: Any, names: Mapping[int, str]) -> list[dict]:
    """AP and AR10 of each category with ground truth; their mean over categories is the overall AP."""
    counts: dict[int, int] = {}
    for g in ctx.gt["annotations"]:
        if not g["iscrowd"]:
            counts[g["category_id"]] = counts.get(g["category_id"], 0) + 1
    rows = []
    for k, cat in enumerate(coco_eval.params.catIds):
        ap = mean_valid(coco_eval.eval["precision"][:, :, k, 0, -1])
        if ap < 0:
            continue
        ar = mean_valid(coco_eval.eval["recall"][:, k, 0, 1])
        rows.append(
            {"id": int(cat), "name": names.get(cat, str(cat)), "num_gt": counts.get(cat, 0), "AP": ap, "AR10": ar}
        )
    return rows


def tercile_bins(values: Sequence[float]) -> list[float]:
    """Two integer thresholds splitting ``values`` into thirds (short ≤ a < medium ≤ b < long)."""
    if not values:
        return [0.0, 0.0]
    a, b = np.quantile(np.asarray(values, dtype=np.float64), [1 / 3, 2 / 3])
    return [float(np.floor(a)), float(np.floor(b))]


def _integer_ranges(thresholds: Sequence[float]) -> list[list[float]]:
    """Half-integer range edges so that ``value ≤ a``, ``a < value ≤ b``, ``value > b`` do not overlap."""
    a, b = thresholds
    return [[0.0, a + 0.5], [a + 0.5, b + 0.5], [b + 0.5, 1e10]]


def attribute_breakdown(
    ctx: Indexed,
    gt_value: Mapping[int, float],
    dt_value: Mapping[Hashable, float],
    ranges: Sequence[Sequence[float]],
    names: Sequence[str],
) -> list[dict]:
    """AP/AR per range of a track attribute, the way the official code restricts AP to an area range:
    ground truth outside the range is ignored, and so are unmatched results outside it
    (a result whose value is NaN is never ignored: it stays a false positive in every range)."""
    gt = {**ctx.gt, "annotations": [{**g, "area": gt_value[g["id"]]} for g in ctx.gt["annotations"]]}
    dts = [{**d, "area": dt_value.get(d["key"], float("nan"))} for d in ctx.dt["annotations"]]
    coco_eval = run_protocol(gt, {**ctx.dt, "annotations": dts}, ranges=[ALL[0], *ranges], iou_fn=ctx.iou)
    rows = []
    for i, (name, (lo, hi)) in enumerate(zip(names, ranges), start=1):
        inside = [g for g in gt["annotations"] if not g["iscrowd"] and lo <= g["area"] <= hi]
        rows.append({"name": name, "range": [lo, hi], "num_gt": len(inside), **summary(coco_eval, i)})
    return rows


def duration(track: Sequence[Any]) -> int:
    """Frames where the track has a mask."""
    return sum(rle is not None for rle in track)


def by_duration(ctx: Indexed, thresholds: Sequence[float] | None = None) -> dict:
    """AP by instance duration (frames with a mask; a result by its own duration, as the area ranges do)."""
    gt_value = {g["id"]: float(duration(g["segmentation"])) for g in ctx.gt["annotations"]}
    thresholds = list(thresholds) if thresholds is not None else tercile_bins(list(gt_value.values()))
    dt_value = {d["key"]: float(duration(d["segmentation"])) for d in ctx.dt["annotations"]}
    rows = attribute_breakdown(ctx, gt_value, dt_value, _integer_ranges(thresholds), ("short", "medium", "long"))
    return {"unit": "frames with a mask", "thresholds": thresholds, "bins": rows}


def by_video_length(ctx: Indexed, thresholds: Sequence[float] | None = None) -> dict:
    """AP on the videos of each length bin (the protocol on those videos only)."""
    lengths = {vid: float(v["length"]) for vid, v in ctx.videos.items()}
    thresholds = list(thresholds) if thresholds is not None else tercile_bins(list(lengths.values()))
    rows = []
    for name, (lo, hi) in zip(("short", "medium", "long"), _integer_ranges(thresholds)):
        ids = [vid for vid, n in lengths.items() if lo <= n < hi]
        num_gt = sum(1 for g in ctx.gt["annotations"] if g["image_id"] in ids and not g["iscrowd"])
        metrics = summary(ctx.evaluate(ctx.dt["annotations"], ranges=ALL, video_ids=ids)) if ids else None
        empty = dict.fromkeys(("AP", "AP50", "AP75", "AR1", "AR10"), -1.0)
        rows.append({"name": name, "range": [lo, hi], "num_videos": len(ids), "num_gt": num_gt, **(metrics or empty)})
    return {"unit": "frames", "thresholds": thresholds, "bins": rows}


def long_video_split(ctx: Indexed, long_video_ids: Sequence[int]) -> dict:
    """YouTube-VIS 2022: AP on the long videos and on the others (each the protocol on those videos,
    as the 2022 evaluation scores its long- and short-video ground truth files) and their mean, mAP."""
    unknown = sorted(set(long_video_ids) - set(ctx.videos))
    if unknown:
        raise ValueError(f"long videos: video ids {unknown[:5]} are not ground-truth videos")
    parts = {}
    for name, ids in (("short", [v for v in ctx.videos if v not in set(long_video_ids)]), ("long", long_video_ids)):
        empty = dict.fromkeys(("AP", "AP50", "AP75", "AR1", "AR10"), -1.0)
        metrics = summary(ctx.evaluate(ctx.dt["annotations"], ranges=ALL, video_ids=ids)) if ids else empty
        parts[name] = {"num_videos": len(ids), **metrics}
    return {**parts, "mAP": (parts["short"]["AP"] + parts["long"]["AP"]) / 2}


def mean_box_occlusion(ctx: Indexed) -> dict[int, float]:
    """Each ground-truth instance's mean bounding-box occlusion rate (OVIS): per frame where it is
    present, the share of its box (from its mask) covered by the boxes of the video's other instances."""
    from pycocotools import mask as mask_utils

    out: dict[int, float] = {}
    for vid, video in ctx.overlaps.items():
        h, w = ctx.videos[vid]["height"], ctx.videos[vid]["width"]
        rates: dict[int, list[float]] = {g: [] for g in video.gt_ids}
        for f in range(ctx.videos[vid]["length"]):
            present = [(g, t[f]) for g, t in zip(video.gt_ids, video.gt_tracks) if t[f] is not None]
            boxes = {g: mask_utils.frPyObjects(mask_utils.toBbox([rle]), h, w)[0] for g, rle in present}
            for g, _ in present:
                own = boxes[g]
                others = [b for k, b in boxes.items() if k != g]
                area = float(mask_utils.area(own))
                if not others or area == 0:
                    rates[g].append(0.0)
                    continue
                covered = mask_utils.merge([own, mask_utils.merge(others, intersect=False)], intersect=True)
                rates[g].append(float(mask_utils.area(covered)) / area)
        out.update({g: float(np.mean(r)) if r else 0.0 for g, r in rates.items()})
    return out


def by_occlusion(ctx: Indexed) -> dict:
    """AP by OVIS occlusion level; a result takes the level of the ground truth it overlaps most."""
    gt_value = mean_box_occlusion(ctx)
    dt_value = {}
    for d in ctx.dt["annotations"]:
        video = ctx.overlaps[d["image_id"]]
        if video.gt_ids:
            row = video.st_iou[video.rows[d["key"]]]
            if row.max() > 0:
                dt_value[d["key"]] = gt_value[video.gt_ids[int(row.argmax())]]
    ranges = [[lo, hi - 1e-9 if hi < 1.0 else 1.0] for lo, hi in OCCLUSION_BINS]
    rows = attribute_breakdown(ctx, gt_value, dt_value, ranges, OCCLUSION_NAMES)
    return {"unit": "mean bounding-box occlusion rate", "thresholds": [b[0] for b in OCCLUSION_BINS[1:]], "bins": rows}


# ---------------------------------------------------------------------------------------------
# Error decomposition (TIVE's definitions, our code).


@dataclass
class Errors:
    """The errors at one IoU threshold: each false positive's type and target ground truth, the missed ground truth."""

    false_positives: list[tuple[dict, str, int | None]]  # (result, type, target ground-truth id)
    missed: list[int]
    matched: set[int]


def _matches(coco_eval: Any, t: int) -> tuple[list[int], set[int], set[int]]:
    """Result ids that are false positives at threshold index ``t`` (range 'all', top 100), matched and
    unmatched non-ignored ground-truth ids."""
    fps, matched, unmatched = [], set(), set()
    for e in coco_eval.evalImgs:
        if e is None or list(e["aRng"]) != ALL[0]:
            continue
        for d_id, m, ignored in zip(e["dtIds"], e["dtMatches"][t], e["dtIgnore"][t]):
            if not m and not ignored:
                fps.append(d_id)
        for g_id, m, ignored in zip(e["gtIds"], e["gtMatches"][t], e["gtIgnore"]):
            if not ignored:
                (matched if m else unmatched).add(g_id)
    return fps, matched, unmatched


def classify_errors(ctx: Indexed, coco_eval: Any, t: int) -> Errors:
    """TIVE's assignment at ``coco_eval.params.iouThrs[t]``, false positives in descending score order."""
    threshold = float(coco_eval.params.iouThrs[t])
    fp_ids, matched, unmatched = _matches(coco_eval, t)
    by_id = {d["id"]: d for d in ctx.dt["annotations"]}
    fps = sorted((by_id[i] for i in fp_ids), key=lambda d: -d["score"])
    out, explained = [], set()
    for d in fps:
        video = ctx.overlaps[d["image_id"]]
        ious = video.st_iou[video.rows[d["key"]]] if video.gt_ids else np.zeros(0)
        crowd = np.array([ctx.gt_by_id[g]["iscrowd"] for g in video.gt_ids], dtype=bool)
        same = np.array([ctx.gt_by_id[g]["category_id"] == d["category_id"] for g in video.gt_ids], dtype=bool)
        other_iou = np.where(~same & ~crowd, ious, -1.0)
        same_iou = np.where(same & ~crowd, ious, -1.0)
        best_other = int(other_iou.argmax()) if len(ious) else -1
        best_same = int(same_iou.argmax()) if len(ious) else -1
        if best_other >= 0 and other_iou[best_other] >= threshold:
            kind, target = "classification", video.gt_ids[best_other]
        elif best_same >= 0 and same_iou[best_same] >= threshold:
            kind, target = "duplicate", video.gt_ids[best_same]
        elif best_same >= 0 and same_iou[best_same] >= BACKGROUND_IOU:
            spatial = video.temporal_overlap(d["key"], best_same) >= SPATIAL_OVERLAP
            kind, target = ("spatial" if spatial else "temporal"), video.gt_ids[best_same]
        elif best_other >= 0 and other_iou[best_other] >= BACKGROUND_IOU:
            kind, target = "both", None
        else:
            kind, target = "background", None
        if kind in ("classification", "spatial", "temporal"):
            explained.add(target)
        out.append((d, kind, target))
    missed = sorted(g for g in unmatched if g not in explained)
    return Errors(out, missed, matched)


def apply_oracle(ctx: Indexed, errors: Errors, types: Sequence[str]) -> list[dict]:
    """The results after an oracle fixes the errors of ``types`` (TIDE's fixes): a classification error
    takes its ground truth's class, a spatial or temporal error its ground truth's masks, when that
    ground truth is not matched or claimed by a higher-scored fix (otherwise, as the rest: dropped);
    a missed ground truth is added as a top-scored result."""
    fixes: dict[int, dict | None] = {}
    claimed = set(errors.matched)
    for d, kind, target in errors.false_positives:
        if kind not in types:
            continue
        if kind in ("classification", "spatial", "temporal") and target not in claimed:
            claimed.add(target)
            g = ctx.gt_by_id[target]
            if kind == "classification":
                fixes[d["id"]] = {**d, "category_id": g["category_id"]}
            else:
                fixes[d["id"]] = {**d, "segmentation": g["segmentation"], "key": ("g", target), "area": g["area"]}
        else:
            fixes[d["id"]] = None
    fixed = [fixes.get(d["id"], d) for d in ctx.dt["annotations"]]
    fixed = [d for d in fixed if d is not None]
    if "missed" in types:
        next_id = max((d["id"] for d in ctx.dt["annotations"]), default=0) + 1
        for i, g_id in enumerate(errors.missed):
            g = ctx.gt_by_id[g_id]
            fixed.append({**g, "id": next_id + i, "score": ORACLE_SCORE, "iscrowd": 0, "key": ("g", g_id)})
    return fixed


def error_decomposition(ctx: Indexed, coco_eval: Any) -> dict:
    """ΔAP of fixing each error type (and all), averaged over the IoU thresholds, and the error counts."""
    thresholds = list(coco_eval.params.iouThrs)
    base = [mean_valid(coco_eval.eval["precision"][t, :, :, 0, -1]) for t in range(len(thresholds))]
    fixed_ap = {name: [] for name in (*ERROR_TYPES, "all")}
    counts = {name: [] for name in ERROR_TYPES}
    for t, threshold in enumerate(thresholds):
        errors = classify_errors(ctx, coco_eval, t)
        for name in ERROR_TYPES:
            n = len(errors.missed) if name == "missed" else sum(k == name for _, k, _ in errors.false_positives)
            counts[name].append(n)
        for name in fixed_ap:
            types = ERROR_TYPES if name == "all" else (name,)
            fixed = ctx.evaluate(apply_oracle(ctx, errors, types), ranges=ALL, iou_thresholds=[threshold])
            fixed_ap[name].append(mean_valid(fixed.eval["precision"][0, :, :, 0, -1]))
    ap = float(np.mean(base))
    return {
        "AP": ap,
        "dAP": {name: float(np.mean(v)) - ap for name, v in fixed_ap.items() if name != "all"},
        "dAP_all": float(np.mean(fixed_ap["all"])) - ap,
        "counts": {name: float(np.mean(v)) for name, v in counts.items()},
        "counts_at_50": {name: int(v[0]) for name, v in counts.items()},
        "thresholds": {
            "foreground_iou": [round(t, 2) for t in thresholds],
            "background_iou": BACKGROUND_IOU,
            "temporal_overlap_frame_iou": FRAME_IOU,
            "spatial_if_temporal_overlap_at_least": SPATIAL_OVERLAP,
        },
    }


# ---------------------------------------------------------------------------------------------
# Oracle upper bounds and tracking diagnostics (per-frame matching of results to ground truth).

FRAME_MATCH_IOU = 0.5  # a result's mask in a frame "is" a ground-truth instance at this per-frame IoU


def _frame_iou(video: VideoOverlaps, f: int, rows: Sequence[int]) -> np.ndarray:
    """Per-frame mask IoU [len(rows), G] in frame ``f``."""
    return overlaps_to_iou(video.inter[f][rows], video.area_r[f][rows], video.area_g[f])


def _video_results(ctx: Indexed) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {vid: [] for vid in ctx.videos}
    for d in ctx.dt["annotations"]:
        out[d["image_id"]].append(d)
    return out


def ground_truth_association(ctx: Indexed) -> list[dict]:
    """Results re-linked by an oracle: in each frame a result's mask goes to the ground truth it
    overlaps most (per-frame IoU ≥ 0.5), the highest-scored one when several do (the others are
    per-frame duplicates: dropped); one track per ground truth (majority class, mean score of its
    pieces). A result that gives no piece to any ground truth stays as it is (a false positive);
    one that does is used up by the re-linking (its frames on background go with it)."""
    out = []
    for vid, dts in _video_results(ctx).items():
        video = ctx.overlaps[vid]
        if not video.gt_ids:
            out += dts
            continue
        length = ctx.videos[vid]["length"]
        linked = {g: [None] * length for g in range(len(video.gt_ids))}
        pieces: dict[int, list[tuple[float, int]]] = {g: [] for g in linked}
        taken = {d["id"]: set() for d in dts}
        for f in range(length):
            present = [d for d in sorted(dts, key=lambda d: -d["score"]) if d["segmentation"][f] is not None]
            if not present:
                continue
            ious = _frame_iou(video, f, [video.rows[d["key"]] for d in present])
            for d, row in zip(present, ious):
                g = int(row.argmax())
                if row[g] < FRAME_MATCH_IOU:
                    continue
                taken[d["id"]].add(f)  # a piece of ground truth g: re-linked, or a per-frame duplicate
                if linked[g][f] is None:
                    linked[g][f] = d["segmentation"][f]
                    pieces[g].append((d["score"], d["category_id"]))
        for g, track in linked.items():
            if pieces[g]:
                cats = [c for _, c in pieces[g]]
                category = max(dict.fromkeys(cats), key=cats.count)  # majority, first on ties
                score = float(np.mean([s for s, _ in pieces[g]]))
                key = ("association", vid, g)
                new = {"image_id": vid, "score": score, "iscrowd": 0, "category_id": category, "key": key}
                out.append({**new, "segmentation": track, "area": track_area(track)})
        out += [d for d in dts if not taken[d["id"]]]
    return [{**d, "id": i} for i, d in enumerate(out, start=1)]  # copies: ctx's results stay as they are


def oracle_classes(ctx: Indexed) -> list[dict]:
    """Each result that matches a ground truth (spatio-temporal IoU ≥ 0.5, the lowest threshold of
    the protocol) takes the class of the one it overlaps most; the others keep theirs (moving a
    background result into another class would only add a false positive there)."""
    out = []
    for d in ctx.dt["annotations"]:
        video = ctx.overlaps[d["image_id"]]
        row = video.st_iou[video.rows[d["key"]]] if video.gt_ids else np.zeros(0)
        best = int(row.argmax()) if row.size and row.max() >= IOU_THRESHOLDS[0] else None
        out.append(d if best is None else {**d, "category_id": ctx.gt_by_id[video.gt_ids[best]]["category_id"]})
    return out


def tracking_diagnostics(ctx: Indexed, score_threshold: float = 0.0) -> dict:
    """Identity switches, fragmentations, coverage and tracks per instance from a per-frame one-to-one
    matching (Hungarian, class-agnostic, mask IoU ≥ 0.5) of the results scored ≥ ``score_threshold``."""
    from scipy.optimize import linear_sum_assignment

    switches = fragments = 0
    coverage, tracks_per_gt = [], []
    results = [d for d in ctx.dt["annotations"] if d["score"] >= score_threshold]
    by_video = {vid: [d for d in results if d["image_id"] == vid] for vid in ctx.videos}
    for vid, dts in by_video.items():
        video = ctx.overlaps[vid]
        for g, track in enumerate(video.gt_tracks):
            if ctx.gt_by_id[video.gt_ids[g]]["iscrowd"]:
                continue
            matched = []
            for f in (f for f, m in enumerate(track) if m is not None):
                present = [d for d in dts if d["segmentation"][f] is not None]
                ious = _frame_iou(video, f, [video.rows[d["key"]] for d in present]) if present else np.zeros((0, 0))
                owner = None
                if present:
                    r, c = linear_sum_assignment(-ious)
                    hit = [i for i, j in zip(r, c) if j == g and ious[i, j] >= FRAME_MATCH_IOU]
                    owner = present[hit[0]]["id"] if hit else None
                matched.append(owner)
            ids = [m for m in matched if m is not None]
            switches += sum(a != b for a, b in zip(ids, ids[1:]))
            runs = [m is not None for m in matched]
            first, last = (runs.index(True), len(runs) - runs[::-1].index(True)) if ids else (0, 0)
            fragments += sum(a and not b for a, b in zip(runs[first:last], runs[first + 1 : last]))
            coverage.append(max((ids.count(i) for i in set(ids)), default=0) / max(len(matched), 1))
            if ids:
                tracks_per_gt.append(len(set(ids)))
    single = sum(duration(d["segmentation"]) == 1 for d in results)
    return {
        "score_threshold": score_threshold,
        "frame_match_iou": FRAME_MATCH_IOU,
        "identity_switches": int(switches),
        "fragmentations": int(fragments),
        "mean_track_coverage": float(np.mean(coverage)) if coverage else 0.0,
        "tracks_per_instance": float(np.mean(tracks_per_gt)) if tracks_per_gt else 0.0,
        "single_frame_tracks": int(single),
        "single_frame_share": single / len(results) if results else 0.0,
        "num_tracks": len(results),
    }


# ---------------------------------------------------------------------------------------------
# The whole analysis and its text tables.


def analyze(
    ground_truth: Mapping[str, Any] | Indexed,
    results: list[dict] | None = None,
    video_length_thresholds: Sequence[float] | None = None,
    duration_thresholds: Sequence[float] | None = None,
    track_score_threshold: float = 0.0,
    hota: bool = True,
    long_video_ids: Sequence[int] | None = None,
) -> dict:
    """Everything ``analysis.json`` holds (fractions, -1 where a subset has no ground truth).

    Bad input raises ValueError naming the field before any analysis starts.
    """
    ctx = ground_truth if isinstance(ground_truth, Indexed) else Indexed(ground_truth, results)
    ground_truth = ctx.raw_gt
    coco_eval = ctx.evaluate(ctx.dt["annotations"])
    names = {c["id"]: c.get("name", str(c["id"])) for c in ground_truth["categories"]}
    out = {
        "metrics": full_metrics(coco_eval),
        "per_category": per_category(ctx, coco_eval, names),
        "by_video_length": by_video_length(ctx, video_length_thresholds),
        "by_duration": by_duration(ctx, duration_thresholds),
        "by_occlusion": by_occlusion(ctx),
        "errors": error_decomposition(ctx, coco_eval),
        "oracles": {
            "ground_truth_association": full_metrics(ctx.evaluate(ground_truth_association(ctx))),
            "oracle_classes": full_metrics(ctx.evaluate(oracle_classes(ctx))),
        },
        "tracking": tracking_diagnostics(ctx, track_score_threshold),
    }
    if long_video_ids is not None:
        out["ytvis22"] = long_video_split(ctx, long_video_ids)
    if hota:
        from crossvis.evaluation.hota import hota_metrics

        out["tracking"]["hota"] = hota_metrics(ground_truth, ctx.raw_results, track_score_threshold)
    return out


def _pct(value: float) -> str:
    return "-" if value is None or value < 0 else f"{100 * value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(f"{str(x):>{w}}" for x, w in zip(line, widths)) for line in (header, *rows)]
    return "\n".join(lines)


def format_report(analysis: Mapping[str, Any]) -> str:
    """The analysis as text tables (AP in percent)."""
    m = analysis["metrics"]
    parts = ["Video AP/AR (official protocol)", _table(METRIC_KEYS, [[_pct(m[k]) for k in METRIC_KEYS]])]
    rows = [[c["name"], c["num_gt"], _pct(c["AP"]), _pct(c["AR10"])] for c in analysis["per_category"]]
    parts += ["", "Per category", _table(["category", "GT", "AP", "AR10"], rows)]
    for key, title in (("by_video_length", "video length"), ("by_duration", "instance duration")):
        b = analysis[key]
        a, c = b["thresholds"]
        head = f"By {title} ({b['unit']}): short <= {a:g} < medium <= {c:g} < long"
        rows = [[r["name"], r.get("num_videos", "-"), r["num_gt"], _pct(r["AP"]), _pct(r["AR10"])] for r in b["bins"]]
        parts += ["", head, _table(["bin", "videos", "GT", "AP", "AR10"], rows)]
    if "ytvis22" in analysis:
        y = analysis["ytvis22"]
        rows = [
            [n, y[n]["num_videos"], _pct(y[n]["AP"]), _pct(y[n]["AP50"]), _pct(y[n]["AR10"])] for n in ("short", "long")
        ]
        parts += ["", f"YouTube-VIS 2022 (mAP = mean of the two APs: {_pct(y['mAP'])})"]
        parts.append(_table(["videos", "count", "AP", "AP50", "AR10"], rows))
    b = analysis["by_occlusion"]
    head = f"By occlusion ({b['unit']}): slight < {b['thresholds'][0]:g} <= moderate < {b['thresholds'][1]:g} <= heavy"
    rows = [[r["name"], r["num_gt"], _pct(r["AP"]), _pct(r["AR10"])] for r in b["bins"]]
    parts += ["", head, _table(["level", "GT", "AP", "AR10"], rows)]
    e = analysis["errors"]
    th = e["thresholds"]
    parts += [
        "",
        f"Errors (TIVE definitions): foreground st-IoU {th['foreground_iou'][0]:g}:0.05:{th['foreground_iou'][-1]:g}, "
        f"background st-IoU {th['background_iou']:g}, spatial if temporal overlap >= {th['spatial_if_temporal_overlap_at_least']:g}",
        _table(
            ["type", "dAP", "count (mean)", "count @0.5"],
            [[t, f"{100 * e['dAP'][t]:.1f}", f"{e['counts'][t]:.1f}", e["counts_at_50"][t]] for t in ERROR_TYPES]
            + [["all", f"{100 * e['dAP_all']:.1f}", "", ""]],
        ),
    ]
    o = analysis["oracles"]
    rows = [["as is", *(_pct(m[k]) for k in ("AP", "AP50", "AP75"))]]
    rows += [[name.replace("_", " "), *(_pct(o[name][k]) for k in ("AP", "AP50", "AP75"))] for name in o]
    parts += ["", "Oracle upper bounds", _table(["", "AP", "AP50", "AP75"], rows)]
    t = analysis["tracking"]
    keys = ("identity_switches", "fragmentations", "mean_track_coverage", "tracks_per_instance", "single_frame_tracks")
    cells = [f"{t[k]:.2f}" if isinstance(t[k], float) else t[k] for k in keys]
    parts += [
        "",
        f"Tracking (results scored >= {t['score_threshold']:g})",
        _table(["ID sw", "frag", "coverage", "tracks/GT", "1-frame"], [cells]),
    ]
    if "hota" in t:
        parts.append(_table(["HOTA", "DetA", "AssA"], [[_pct(t["hota"][k]) for k in ("HOTA", "DetA", "AssA")]]))
    return "\n".join(parts)
