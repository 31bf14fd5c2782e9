"""Inference parity: our inference vs AdelaiDet's own CondInst inference, same weights, same frame.

    python scripts/compare_adelaidet.py --frame FRAME --reference-path D2:ADET:SITE [--short 360 --max-size 640]

1. A reference process (``PYTHONPATH`` = the reference path: detectron2, AdelaiDet and their
   pure-python dependencies) builds AdelaiDet's CondInst from ``configs/CondInst/MS_R_50_1x.yaml``
   (``--config``, e.g. ``MS_R_101_1x.yaml``; or, with the authors' CrossVIS fork on the reference
   path instead of AdelaiDet, ``configs/CrossVIS/R_50_1x.yaml``, whose per-detection embeddings are
   compared too) on the CPU with seeded random weights (normalisation statistics, GroupNorm affines and FPN
   scales drawn too, the class-logit bias raised so that more than 100 detections pass the
   thresholds), saves them in AdelaiDet's checkpoint format (``{"model": state_dict}``) and runs
   its own ``DefaultPredictor`` (BGR frame, ``ResizeShortestEdge``, its padding) on the frame.
   It saves the resized frame and the detections (boxes, scores, classes, masks at frame size).
2. This process converts the checkpoint with ``crossvis.cli.convert``, loads it the way
   ``crossvis.cli.evaluate`` loads released weights, runs ``CrossVIS.forward_infer`` on the same resized
   frame and pairs the two detection sets (:func:`compare_detections`); then once more from the
   original frame through this project's own resize (``end_to_end``).

The last line printed is a JSON report; the exit code is 1 when the issue's tolerances fail (boxes
within 0.01 px, scores within 1e-4, every mask IoU >= 0.999, nothing unpaired; embeddings within
1e-4) for either run.

    python scripts/compare_adelaidet.py --losses --reference-path D2:ADET:SITE

Training-loss parity: the same seeded random weights, and a batch of two images of
different sizes with ground truth (:func:`synthetic_loss_batch`: ellipses on noise, sizes that give
positives on four FPN levels, few enough that neither side samples positives). The reference
process runs AdelaiDet's CondInst in training mode on it (detectron2-style inputs: BGR uint8 images,
``Instances`` with boxes, classes and ``BitMasks``; CondInst normalises, pads to 32 and makes the
stride-4 ``gt_bitmasks`` itself) and saves its loss dict. This process converts the weights, builds
our CondInst stage for released weights (:data:`LOSS_OVERRIDES`) and runs ``forward_train`` on the
same images (RGB, zero-padded to the same size) and targets. Both models are in training mode
except their BatchNorm2d layers (the mask branch's; the R-50 uses frozen BN anyway), which use
their running statistics, so both sides normalise identically (``--train-bn``: on batch
statistics, as in real training). The losses must agree within a relative 1e-4
(:func:`compare_losses`). Then both models and inputs are cast to float64, run again and
back-propagate the summed losses, and every parameter's gradient is compared
(:func:`compare_gradients`: relative norm of the difference; the same parameters must receive
gradients), again within a relative 1e-4. Why float64: the random weights saturate most mask
pixels, and the mask loss's small gradient is then mostly float32 rounding (the two sides' float32
gradients differ by up to 100% through the mask branch, their float64 ones by 1e-8). Some float32
remains in float64 mode: fvcore's focal loss casts to float32 and both sides compute targets and
normalisers in float32, so the float64 figures agree to about 1e-7..1e-5, not 1e-15.
``--override KEY=VALUE`` adds Hydra overrides to our model (sanity checks of the comparison, e.g.
``model.feature_grad_scale=0.1``).
Reference imports: ``adet._C`` (BezierAlign / DefROIAlign, text spotting only) and ``skimage``
(BoxInst's training colour similarity) are stubbed, and so is ``detectron2._C`` when detectron2 is an
unbuilt source tree that imports it (:func:`_stub_unused_extensions`); CondInst uses none of them.
``scripts/compare_crossvis_fork.py`` reuses these pieces for the CrossVIS fork's training.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BOX_TOLERANCE = 0.01  # px; float32 reordering alone moves boxes by ~2e-3 px
SCORE_TOLERANCE = 1e-4
EMBEDDING_TOLERANCE = 1e-4  # CrossVIS fork: max |difference| of a paired detection's embedding (values ~0.1-1)
MIN_MASK_IOU = 0.999
PAIR_GATE = 4.0  # px: candidates farther apart (L-inf over the 4 coordinates) are not paired at all
ADELAIDET_CONFIG = "configs/CondInst/MS_R_50_1x.yaml"
LOSS_TOLERANCE = 1e-4  # relative, per loss
GRADIENT_TOLERANCE = 1e-4  # float64 ||g_ours − g_ref|| / ||g_ref|| per parameter
# our loss name -> AdelaiDet CondInst's
LOSS_NAMES = {
    "loss_cls": "loss_fcos_cls",
    "loss_box": "loss_fcos_loc",
    "loss_ctr": "loss_fcos_ctr",
    "loss_mask": "loss_mask",
}
# Our CondInst stage for released weights (single images, no crossover, no embedding branch), with
# the backbone+FPN gradient unscaled: the 0.1x of model/default.yaml is the CrossVIS fork's rule,
# AdelaiDet's CondInst has none.
LOSS_OVERRIDES = ["model.embedding.enabled=false", "model.crossover.enabled=false", "model.feature_grad_scale=1.0"]
# Per image: (height, width) and ellipses (centre x, centre y, semi-axis x, semi-axis y, class).
# Semi-axes from 9 to 200 px put positives on P3..P6 (FCOS sizes of interest 64/128/256/512).
LOSS_BATCH_LAYOUT = (
    ((300, 420), ((205, 150, 200, 140, 3), (95, 85, 60, 45, 0), (340, 235, 14, 10, 1))),
    ((260, 390), ((190, 130, 120, 90, 2), (60, 200, 30, 22, 0), (330, 50, 9, 12, 1))),
)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty (they agree)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_detections(
    ref: dict[str, np.ndarray],
    ours: dict[str, np.ndarray],
    box_tolerance: float = BOX_TOLERANCE,
    score_tolerance: float = SCORE_TOLERANCE,
    min_mask_iou: float = MIN_MASK_IOU,
    pair_gate: float = PAIR_GATE,
    embedding_tolerance: float = EMBEDDING_TOLERANCE,
) -> dict:
    """Pair two detection sets by class and box and say whether they agree within the tolerances.

    Each set: ``boxes [K, 4]`` xyxy, ``scores [K]``, ``classes [K]``, ``masks [K, H, W]`` bool.
    Pairs are formed greedily over same-class candidates in order of increasing box distance
    (max absolute coordinate difference), each detection used once, none farther than
    ``pair_gate`` px. The verdict ``ok`` needs every detection paired and every pair within the
    box, score and mask-IoU tolerances. When both sets carry ``embeddings [K, D]`` (the CrossVIS
    fork), paired embeddings must agree within ``embedding_tolerance`` too.
    """
    rb, ob = np.asarray(ref["boxes"], np.float64), np.asarray(ours["boxes"], np.float64)
    distance = (
        np.abs(rb[:, None, :] - ob[None, :, :]).max(axis=2) if len(rb) and len(ob) else np.zeros((len(rb), len(ob)))
    )
    same_class = np.asarray(ref["classes"])[:, None] == np.asarray(ours["classes"])[None, :]
    candidates = [(distance[i, j], i, j) for i, j in zip(*np.nonzero(same_class & (distance <= pair_gate)))]
    pairs, used_ref, used_ours = [], set(), set()
    for _, i, j in sorted(candidates):
        if i not in used_ref and j not in used_ours:
            pairs.append((int(i), int(j)))
            used_ref.add(i)
            used_ours.add(j)
    box_diffs = [float(distance[i, j]) for i, j in pairs]
    score_diffs = [abs(float(ref["scores"][i]) - float(ours["scores"][j])) for i, j in pairs]
    ious = [mask_iou(ref["masks"][i], ours["masks"][j]) for i, j in pairs]
    report = {
        "reference_detections": len(rb),
        "our_detections": len(ob),
        "paired": len(pairs),
        "unpaired_reference": len(rb) - len(pairs),
        "unpaired_ours": len(ob) - len(pairs),
        "max_box_diff_px": max(box_diffs, default=0.0),
        "max_score_diff": max(score_diffs, default=0.0),
        "min_mask_iou": min(ious, default=1.0),
        "masks_below_iou": sum(iou < min_mask_iou for iou in ious),
        # how telling the mask check was: paired reference masks neither empty nor covering the frame
        "partial_masks": sum(bool(0 < ref["masks"][i].sum() < ref["masks"][i].size) for i, _ in pairs),
    }
    if "embeddings" in ref and "embeddings" in ours:  # CrossVIS: the embedding head's output per detection
        report["max_embedding_diff"] = max(
            (float(np.abs(ref["embeddings"][i] - ours["embeddings"][j]).max()) for i, j in pairs), default=0.0
        )
    report["ok"] = bool(
        report["unpaired_reference"] == 0
        and report["unpaired_ours"] == 0
        and report["max_box_diff_px"] <= box_tolerance
        and report["max_score_diff"] <= score_tolerance
        and report["min_mask_iou"] >= min_mask_iou
        and report.get("max_embedding_diff", 0.0) <= embedding_tolerance
    )
    return report


def synthetic_loss_batch(seed: int) -> list[dict[str, np.ndarray]]:
    """The loss check's images with ground truth, from :data:`LOSS_BATCH_LAYOUT` on seeded noise.

    Each image: ``image [H, W, 3]`` RGB uint8 (noise, each ellipse painted in its own colour, later
    ones on top), ``masks [N, H, W]`` bool (each full ellipse: ground-truth masks may overlap, as
    COCO's do), ``boxes [N, 4]`` xyxy float32, the tight box of the mask in detectron2's convention
    (``BitMasks.get_bounding_boxes``: last pixel + 1), ``classes [N]`` int64 (0-based).
    """
    rng = np.random.default_rng(seed)
    return [paint_ellipses(rng, size, ellipses) for size, ellipses in LOSS_BATCH_LAYOUT]


def paint_ellipses(rng: np.random.Generator, size: tuple[int, int], ellipses) -> dict[str, np.ndarray]:
    """One image of :func:`synthetic_loss_batch`: noise, then each ellipse ``(cx, cy, ax, ay, class, ...)``
    in its own colour; entries after the class (a pair batch's identity) are the caller's."""
    h, w = size
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    masks, boxes = [], []
    for cx, cy, ax, ay, *_ in ellipses:
        mask = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0
        image[mask] = rng.integers(0, 256, size=3, dtype=np.uint8)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        masks.append(mask)
    return {
        "image": image,
        "masks": np.stack(masks),
        "boxes": np.array(boxes, np.float32),
        "classes": np.array([e[4] for e in ellipses], np.int64),
    }


def compare_losses(
    ref: dict[str, float], ours: dict[str, float], tolerance: float = LOSS_TOLERANCE, names: dict[str, str] = LOSS_NAMES
) -> dict:
    """Each of our losses next to the reference's (``names``: ours -> theirs) with |ours − ref| / |ref|.

    ``ok`` needs every relative difference within ``tolerance``; a loss missing on either side is an error.
    """
    missing = [f"ours:{o}" for o in names if o not in ours]
    missing += [f"ref:{r}" for r in names.values() if r not in ref]
    if missing:
        raise KeyError(f"loss dicts lack {', '.join(missing)}")
    losses = {}
    for name, ref_name in names.items():
        r, o = float(ref[ref_name]), float(ours[name])
        losses[name] = {"ours": o, "reference": r, "rel_diff": abs(o - r) / abs(r) if r else abs(o - r)}
    worst = max(v["rel_diff"] for v in losses.values())
    return {"losses": losses, "max_rel_diff": worst, "ok": bool(worst <= tolerance)}


def compare_gradients(
    ref: dict[str, np.ndarray],
    ours: dict[str, np.ndarray],
    tolerance: float = GRADIENT_TOLERANCE,
    zero_norm: float = 0.0,
) -> dict:
    """Per-parameter gradients (same key names on both sides): relative norm of the difference.

    ``rel_diff = ||ours − ref|| / ||ref||``; the absolute norm when ``||ref|| <= zero_norm`` (listed
    in ``absolute``): an all-zero reference, or with ``zero_norm`` > 0 one that is zero up to
    rounding (a conv bias in front of train-mode BatchNorm, whose batch mean removes any constant
    shift), where a ratio of two rounding errors would mean nothing. ``ok`` needs the same set of
    parameters with gradients on both sides, equal shapes, and every ``rel_diff`` within
    ``tolerance``; ``worst`` names the parameter with the largest one.
    """
    only_ref, only_ours = sorted(set(ref) - set(ours)), sorted(set(ours) - set(ref))
    shared = sorted(set(ref) & set(ours))
    misshapen = [k for k in shared if np.shape(ref[k]) != np.shape(ours[k])]
    diffs, absolute = {}, []
    for key in shared:
        if key in misshapen:
            continue
        r, o = np.asarray(ref[key], np.float64), np.asarray(ours[key], np.float64)
        norm, diff = np.linalg.norm(r), np.linalg.norm(o - r)
        if norm <= zero_norm:
            absolute.append(key)
        diffs[key] = float(diff if norm <= zero_norm else diff / norm)
    worst = max(diffs, key=diffs.get, default=None)
    report = {
        "compared": len(diffs),
        "only_reference": only_ref,
        "only_ours": only_ours,
        "misshapen": misshapen,
        "absolute": absolute,
        "max_rel_diff": diffs[worst] if worst else 0.0,
        "worst": worst,
    }
    report["ok"] = bool(not (only_ref or only_ours or misshapen) and report["max_rel_diff"] <= tolerance)
    return report


# ---------------------------------------------------------------- reference process (AdelaiDet) ----


def _stub_unused_extensions() -> None:
    """Stand-ins for imports CondInst / CrossVIS never call (no C++ build, no scikit-image).

    ``detectron2._C`` is stubbed only when missing (an unbuilt detectron2 whose ``layers`` import it
    at module level, e.g. the CrossVIS fork's pinned 9eb4831: deformable convs, rotated boxes);
    ``PIL.Image.LINEAR`` (removed in Pillow 10) aliases ``BILINEAR`` for that detectron2's
    transform defaults, which the model never applies.
    """
    import importlib.util
    import types

    import PIL.Image

    sys.modules["adet._C"] = types.ModuleType("adet._C")  # BezierAlign, DefROIAlign (ABCNet) only
    skimage = types.ModuleType("skimage")
    skimage.color = types.ModuleType("skimage.color")  # BoxInst's training-time rgb2lab only
    sys.modules.update({"skimage": skimage, "skimage.color": skimage.color})
    if importlib.util.find_spec("detectron2") and not importlib.util.find_spec("detectron2._C"):
        sys.modules["detectron2._C"] = types.ModuleType("detectron2._C")
    if not hasattr(PIL.Image, "LINEAR"):
        PIL.Image.LINEAR = PIL.Image.BILINEAR


def randomise_weights(model, seed: int, cls_bias: float) -> None:
    """Seeded values for everything the default init leaves constant, so every tensor matters.

    Norm layers (frozen BN, mask-branch BN, GroupNorm): weight U(0.5, 1.5), bias N(0, 0.1), running
    mean N(0, 0.1), running var U(0.5, 1.5); FCOS scales U(0.5, 1.5); controller N(0, 0.05) (masks
    away from the 0.5 threshold); box-regression bias 1 (boxes of about a stride per side);
    class-logit bias ``cls_bias`` (enough detections to fill the top 100).
    """
    import torch
    from detectron2.layers import FrozenBatchNorm2d
    from torch import nn

    gen = torch.Generator().manual_seed(seed)

    def uniform(t):
        t.copy_(torch.empty(t.shape).uniform_(0.5, 1.5, generator=gen))

    def normal(t):
        t.copy_(torch.randn(t.shape, generator=gen) * 0.1)

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d, nn.GroupNorm)):
                uniform(module.weight)
                normal(module.bias)
            if isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                normal(module.running_mean)
                uniform(module.running_var)
            if name.startswith("proposal_generator.fcos_head.scales."):
                uniform(module.scale)
        model.controller.weight.copy_(torch.randn(model.controller.weight.shape, generator=gen) * 0.05)
        model.proposal_generator.fcos_head.bbox_pred.bias.fill_(1.0)
        model.proposal_generator.fcos_head.cls_logits.bias.fill_(cls_bias)


def build_reference(args: argparse.Namespace):
    """AdelaiDet's CondInst with seeded random weights, saved as ``condinst_random.pth`` in AdelaiDet's format.

    Call with the reference on ``PYTHONPATH``. Returns the detectron2 config and the model.
    """
    import torch

    torch.set_num_threads(1)
    _stub_unused_extensions()
    from adet.config import get_cfg
    from detectron2.modeling import build_model

    adelaidet = Path(sys.modules["adet"].__file__).resolve().parents[1]
    cfg = get_cfg()
    cfg.merge_from_file(str(adelaidet / args.config))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", args.short, "INPUT.MAX_SIZE_TEST", args.max_size]
    )
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    randomise_weights(model, args.seed, args.cls_bias)
    cfg.MODEL.WEIGHTS = str(Path(args.workdir) / "condinst_random.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    return cfg, model


def run_reference(args: argparse.Namespace) -> None:
    """Build, save and run AdelaiDet's CondInst inference (call with the reference on ``PYTHONPATH``)."""
    import torch

    cfg, model = build_reference(args)
    from detectron2.engine import DefaultPredictor

    out, checkpoint = Path(args.workdir), cfg.MODEL.WEIGHTS
    predictor = DefaultPredictor(cfg)  # builds anew and loads the file: AdelaiDet's own loading path
    loaded = predictor.model.state_dict()
    for key, value in model.state_dict().items():
        if not torch.equal(loaded[key], value):
            raise RuntimeError(f"reference: {key} differs after DetectionCheckpointer loaded {checkpoint}")
    frame = read_frame_bgr(args.frame, args.frame_index)
    with torch.no_grad():
        instances = predictor(frame)["instances"]
    resized = predictor.aug.get_transform(frame).apply_image(frame)  # what the model saw
    np.savez_compressed(
        out / "reference.npz",
        frame_bgr=frame,
        resized_bgr=resized,
        test_size=np.array([args.short, args.max_size]),
        boxes=instances.pred_boxes.tensor.numpy(),
        scores=instances.scores.numpy(),
        classes=instances.pred_classes.numpy(),
        masks=instances.pred_masks.numpy().astype(bool),
        **({"embeddings": instances.reid_feat.numpy()} if instances.has("reid_feat") else {}),  # CrossVIS fork
    )


def training_mode(model, batch_statistics: bool) -> None:
    """Training mode; unless ``batch_statistics``, ``nn.BatchNorm2d`` layers stay on their running statistics.

    Both sides call it with the same flag (``--train-bn``), so BatchNorm behaves identically.
    """
    from torch import nn

    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and not batch_statistics:
            module.eval()


def training_step(model, step, inputs, dtype) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Losses of ``step(*inputs(dtype))`` with ``model`` cast to ``dtype`` and, for float64, the
    gradients of their sum by parameter name (none for float32: there they are mostly rounding)."""
    import torch

    model.to(dtype).zero_grad()
    losses = step(*inputs(dtype))
    grads = {}
    if dtype == torch.float64:
        sum(losses.values()).backward()
        grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
    return {name: value.item() for name, value in losses.items()}, grads


def run_reference_losses(args: argparse.Namespace) -> None:
    """AdelaiDet CondInst's losses on :func:`synthetic_loss_batch` in float32 and float64, and the float64 gradients.

    Saved as ``reference_losses.json`` and ``reference_grads.npz`` (AdelaiDet's parameter names).
    """
    _, model = build_reference(args)
    training_mode(model, args.train_bn)
    batch = synthetic_loss_batch(args.seed)
    save_reference_steps(model, lambda dtype: ([detectron2_frame(item, dtype) for item in batch],), Path(args.workdir))


def detectron2_frame(item: dict[str, np.ndarray], dtype, **fields: np.ndarray) -> dict:
    """One synthetic image as detectron2's ``DatasetMapper`` gives it, plus ``fields`` on its ``Instances``.

    ``image``: BGR CHW, uint8 for float32 runs (the mapper's type), else ``dtype``; ``instances``:
    boxes, classes, ``BitMasks`` and ``fields`` as tensors. Every tensor is a fresh copy, because the
    CrossVIS fork changes ``rel_ids`` in place and each run needs the original inputs.
    """
    import torch
    from detectron2.structures import BitMasks, Boxes, Instances

    h, w = item["image"].shape[:2]
    instances = Instances(
        (h, w),
        gt_boxes=Boxes(torch.tensor(item["boxes"])),
        gt_classes=torch.tensor(item["classes"]),
        gt_masks=BitMasks(torch.tensor(item["masks"])),
        **{name: torch.tensor(value) for name, value in fields.items()},
    )
    bgr = torch.tensor(np.ascontiguousarray(item["image"][..., ::-1].transpose(2, 0, 1)))  # BGR CHW
    image = bgr if dtype == torch.float32 else bgr.to(dtype)
    return {"image": image, "instances": instances, "height": h, "width": w}


def save_reference_steps(model, inputs, workdir: Path) -> None:
    """The reference model's losses in float32 and float64 (``reference_losses.json``) and its float64
    gradients by parameter name (``reference_grads.npz``); ``inputs(dtype)``: the model's arguments."""
    import torch

    losses32, _ = training_step(model, model, inputs, torch.float32)
    losses64, grads = training_step(model, model, inputs, torch.float64)
    np.savez(workdir / "reference_grads.npz", **grads)
    (workdir / "reference_losses.json").write_text(json.dumps({"float32": losses32, "float64": losses64}))


def read_frame_bgr(path: str, index: int) -> np.ndarray:
    """Frame ``index`` of a video, or an image file, as BGR uint8 (what DefaultPredictor expects)."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR) if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg") else None
    if image is None:
        capture = cv2.VideoCapture(path)
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
        capture.release()
        if not ok:
            raise SystemExit(f"--frame {path}: cannot read frame {index} (expected an image or a video file)")
    return image


# ---------------------------------------------------------------------- this project's side ----


def run_ours(workdir: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Convert the reference checkpoint, load it as ``crossvis.cli.evaluate`` does, run the frame twice.

    ``same_input``: on the frame AdelaiDet resized (the issue's criterion); ``end_to_end``: from the
    original frame through this project's own resize (``preprocess_for_inference``), as
    ``crossvis.cli.evaluate`` / ``crossvis.cli.demo`` run.
    """
    import torch

    from crossvis.checkpoint.loading import convert, load_module
    from crossvis.data.transforms import preprocess_for_inference
    from crossvis.engine.inference import frame_settings
    from crossvis.engine.runtime import Runtime

    torch.set_num_threads(1)
    converted = workdir / "condinst_converted.pth"
    report = convert(str(workdir / "condinst_random.pth"), str(converted), None, None, [])
    ref = np.load(workdir / "reference.npz")
    module = load_module(converted)
    frame_model = Runtime().frame_model(module.model, frame_settings(module.cfg.inference))
    frame_rgb = np.ascontiguousarray(ref["frame_bgr"][..., ::-1])
    resized_rgb = np.ascontiguousarray(ref["resized_bgr"][..., ::-1])
    short, max_size = (int(v) for v in ref["test_size"])
    inputs = {
        "same_input": torch.from_numpy(np.ascontiguousarray(resized_rgb.transpose(2, 0, 1))).float(),
        "end_to_end": preprocess_for_inference(frame_rgb, short, max_size),
    }
    outputs = {}
    for name, image in inputs.items():
        det = frame_model(image, frame_rgb.shape[:2])
        outputs[name] = {
            "boxes": det["boxes"].numpy(),
            "scores": det["scores"].numpy(),
            "classes": det["labels"].numpy(),
            "masks": det["masks"].numpy(),
            **({"embeddings": det["embeddings"].numpy()} if "embeddings" in det else {}),
        }
    conversion = {
        "backbone": report["backbone"],
        "loaded": report["loaded"],
        "reinitialised": len(report["reinitialised"]),
        "unused": report["unused"],
    }
    return outputs, conversion


def padded_loss_inputs(batch: list[dict[str, np.ndarray]]):
    """:func:`synthetic_loss_batch` as ``CrossVIS.forward_train`` inputs of single images (:func:`padded_inputs`)."""
    return padded_inputs([[item] for item in batch])


def padded_inputs(samples: list[list[dict[str, np.ndarray]]]):
    """Samples of k frames each (synthetic images) as ``CrossVIS.forward_train`` inputs.

    Returns ``images [B, k, 3, H, W]`` RGB 0..255 zero-padded to the largest frame rounded up to 32
    (detectron2's ``ImageList.from_tensors``), ``image_sizes [B, k, 2]`` and the targets (masks
    zero-padded the same way, as AdelaiDet's ``add_bitmasks`` pads them; identities ``ids − 1``
    when a frame has 1-based ``ids``, else one per instance).
    """
    import torch
    import torch.nn.functional as F

    from crossvis.modeling.backbone import pad_to_multiple

    frames = [item for sample in samples for item in sample]
    height = max(item["image"].shape[0] for item in frames)
    width = max(item["image"].shape[1] for item in frames)
    images, targets = [], []
    for item in frames:
        h, w = item["image"].shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(item["image"].transpose(2, 0, 1))).float()
        masks = torch.from_numpy(item["masks"])
        images.append(pad_to_multiple(F.pad(image, (0, width - w, 0, height - h))))
        ids = item.get("ids")
        targets.append(
            {
                "boxes": torch.from_numpy(item["boxes"]),
                "labels": torch.from_numpy(item["classes"]),
                "masks": pad_to_multiple(F.pad(masks, (0, width - w, 0, height - h))),
                "identities": torch.arange(len(item["classes"]))
                if ids is None
                else torch.from_numpy(ids.astype(np.int64) - 1),
            }
        )
    k = len(samples[0])
    sizes = torch.tensor([[item["image"].shape[:2] for item in sample] for sample in samples])
    images = torch.stack(images).unflatten(0, (len(samples), k))
    return images, sizes, [targets[i : i + k] for i in range(0, len(targets), k)]


def run_ours_losses(workdir: Path, seed: int, overrides: list[str], batch_statistics: bool) -> dict:
    """Convert the reference checkpoint, build our CondInst stage for it, run the training step as the reference did.

    Returns ``{"float32": losses, "float64": losses, "grads": float64 gradients under AdelaiDet's key
    names (via the converter's key table), "positives_per_level": P3..P7 counts}`` (which levels the
    check covered).
    """
    import torch

    torch.set_num_threads(1)
    cfg, model, num_classes = build_ours(workdir, [*LOSS_OVERRIDES, *overrides])
    training_mode(model, batch_statistics)
    images, sizes, targets = padded_loss_inputs(synthetic_loss_batch(seed))
    result = ours_training_steps(model, (images, sizes, targets), workdir)
    fcos = cfg.model.fcos
    result["positives_per_level"] = positives_per_level(
        images, targets, num_classes, list(fcos.sizes_of_interest), fcos.center_sampling_radius
    )
    return result


def build_ours(workdir: Path, overrides: list[str]):
    """Our model from the reference's ``condinst_random.pth``, converted with ``crossvis.cli.convert`` and
    loaded strictly (every tensor). Returns (config, model, class count)."""
    from crossvis.checkpoint.loading import convert, released_model_config
    from crossvis.checkpoint.released import init_model, read_weights
    from crossvis.engine.lightning_module import build_model

    converted = workdir / "condinst_converted.pth"
    convert(str(workdir / "condinst_random.pth"), str(converted), None, None, overrides)
    cfg, num_classes, num_identities = released_model_config(read_weights(converted), overrides)
    model = build_model(cfg.model, num_classes, num_identities)
    init_model(model, converted, strict=True)
    return cfg, model, num_classes


def ours_training_steps(model, inputs: tuple, workdir: Path) -> dict:
    """``forward_train(*inputs)`` in float32 and float64 (images cast), as :func:`save_reference_steps` runs
    the reference: ``{"float32": losses, "float64": losses, "grads": float64 gradients under the
    reference's key names}`` (via the converter's key table, for the keys of ``reference_grads.npz``)."""
    import torch

    from crossvis.checkpoint.released import map_detectron2_key

    images, sizes, targets = inputs

    def cast(dtype):
        return images.to(dtype), sizes, targets

    result = {}
    result["float32"], _ = training_step(model, model.forward_train, cast, torch.float32)
    result["float64"], grads = training_step(model, model.forward_train, cast, torch.float64)
    ours_name = {map_detectron2_key(key): key for key in np.load(workdir / "reference_grads.npz").files}
    result["grads"] = {ours_name.get(name, name): grad for name, grad in grads.items()}
    return result


def positives_per_level(
    images, targets: list[list[dict]], num_classes: int, sizes_of_interest: list[float], radius: float
) -> dict[str, int]:
    """FCOS positives of the batch (our assignment) per pyramid level P3..P7, from the padded input size."""
    from crossvis.modeling.backbone import FPN_STRIDES

    positives = batch_positives(images, targets, num_classes, sizes_of_interest, radius)
    return {f"P{i + 3}": int((positives.levels == i).sum()) for i in range(len(FPN_STRIDES))}


def batch_positives(images, targets: list[list[dict]], num_classes: int, sizes_of_interest: list[float], radius: float):
    """Our FCOS assignment's ``Positives`` of the batch (frames flattened), from the padded input size."""
    from crossvis.modeling.backbone import FPN_STRIDES
    from crossvis.modeling.fcos import build_targets
    from crossvis.modeling.types import pyramid_locations

    height, width = images.shape[-2:]
    shapes = [(-(-height // s), -(-width // s)) for s in FPN_STRIDES]  # 3x3/2 convs: ceil(n / 2) per level
    locations = pyramid_locations(shapes, list(FPN_STRIDES), images.device)
    frames = [frame for sample in targets for frame in sample]
    return build_targets(locations, frames, num_classes, sizes_of_interest, radius)[2]


@contextlib.contextmanager
def reference_run(args: argparse.Namespace, argv: list[str], script: str = __file__, threads: int = 1):
    """The work folder (``--workdir`` or a temporary one) after the reference process has filled it."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        run_reference_process(argv, args.reference_path, workdir, script, threads)
        yield workdir


def run_reference_process(
    argv: list[str], reference_path: str, workdir: Path, script: str = __file__, threads: int = 1
) -> None:
    """``script`` (this one by default) once more with ``--reference-only``, the reference on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": reference_path, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, script, *argv, "--reference-only", "--workdir", str(workdir)]
    subprocess.run(command, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", help="image file, or a video (see --frame-index); required without --losses")
    parser.add_argument("--losses", action="store_true", help="compare training losses on a synthetic batch instead")
    parser.add_argument("--frame-index", type=int, default=0, help="frame of a video --frame")
    parser.add_argument(
        "--reference-path",
        default=os.environ.get("CROSSVIS_REFERENCE_PATH", ""),
        help="PYTHONPATH of the reference process: detectron2, AdelaiDet and their dependencies",
    )
    parser.add_argument("--short", type=int, default=360, help="test short side (AdelaiDet's COCO test size: 800)")
    parser.add_argument("--max-size", type=int, default=640, help="test long-side limit (AdelaiDet: 1333)")
    parser.add_argument("--config", default=ADELAIDET_CONFIG, help="AdelaiDet CondInst config, relative to AdelaiDet")
    parser.add_argument(
        "--override", action="append", default=[], help="--losses: a Hydra override for our model (repeatable)"
    )
    parser.add_argument(
        "--train-bn", action="store_true", help="--losses: BatchNorm2d on batch statistics (default: running ones)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cls-bias", type=float, default=0.0, help="class-logit bias of the random weights")
    parser.add_argument("--workdir", help="where the checkpoints and detections go (default: a temporary folder)")
    parser.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)  # the reference process
    args = parser.parse_args(argv)
    if args.reference_only:
        (run_reference_losses if args.losses else run_reference)(args)
        return 0
    if not args.reference_path:
        parser.error("--reference-path (or CROSSVIS_REFERENCE_PATH) is required")
    if args.losses:
        return main_losses(args, argv if argv is not None else sys.argv[1:])
    if not args.frame or not Path(args.frame).is_file():
        parser.error(f"--frame {args.frame}: no such file (expected an image or a video)")
    with reference_run(args, argv if argv is not None else sys.argv[1:]) as workdir:
        ours, conversion = run_ours(workdir)
        ref = dict(np.load(workdir / "reference.npz"))
    report = compare_detections(ref, ours["same_input"])
    report["end_to_end"] = compare_detections(ref, ours["end_to_end"])
    report.update(
        config=args.config,
        frame=args.frame,
        frame_index=args.frame_index,
        short=args.short,
        max_size=args.max_size,
        seed=args.seed,
        conversion=conversion,
    )
    print(json.dumps(report))
    return 0 if report["ok"] and report["end_to_end"]["ok"] else 1


def main_losses(args: argparse.Namespace, argv: list[str]) -> int:
    """``--losses``: both processes' training losses on the synthetic batch; JSON report, exit 1 beyond tolerance."""
    with reference_run(args, argv) as workdir:
        ref = json.loads((workdir / "reference_losses.json").read_text())
        ours = run_ours_losses(workdir, args.seed, args.override, args.train_bn)
        ref_grads = dict(np.load(workdir / "reference_grads.npz"))
    report = compare_losses(ref["float32"], ours["float32"])
    report["float64"] = compare_losses(ref["float64"], ours["float64"])
    report["float64_gradients"] = compare_gradients(ref_grads, ours["grads"])
    report.update(
        config=args.config,
        seed=args.seed,
        cls_bias=args.cls_bias,
        train_bn=args.train_bn,
        overrides=[*LOSS_OVERRIDES, *args.override],
        positives_per_level=ours["positives_per_level"],
    )
    print(json.dumps(report))
    return 0 if report["ok"] and report["float64"]["ok"] and report["float64_gradients"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
