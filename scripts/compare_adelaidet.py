"""Issue 9's acceptance check: our inference vs AdelaiDet's own CondInst inference, same weights, same frame.

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
2. This process converts the checkpoint with ``crossvis.convert``, loads it the way
   ``crossvis.evaluate`` loads released weights, runs ``CrossVIS.forward_infer`` on the same resized
   frame and pairs the two detection sets (:func:`compare_detections`); then once more from the
   original frame through this project's own resize (``end_to_end``).

The last line printed is a JSON report; the exit code is 1 when the issue's tolerances fail (boxes
within 0.01 px, scores within 1e-4, every mask IoU >= 0.999, nothing unpaired; embeddings within
1e-4) for either run.
Reference imports: ``adet._C`` (BezierAlign / DefROIAlign, text spotting only) and ``skimage``
(BoxInst's training colour similarity) are stubbed; CondInst inference uses neither.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BOX_TOLERANCE = 0.01  # px; float32 reordering alone moves boxes by ~2e-3 px (issue 9)
SCORE_TOLERANCE = 1e-4
EMBEDDING_TOLERANCE = 1e-4  # CrossVIS fork: max |difference| of a paired detection's embedding (values ~0.1-1)
MIN_MASK_IOU = 0.999
PAIR_GATE = 4.0  # px: candidates farther apart (L-inf over the 4 coordinates) are not paired at all
ADELAIDET_CONFIG = "configs/CondInst/MS_R_50_1x.yaml"


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


# ---------------------------------------------------------------- reference process (AdelaiDet) ----


def _stub_unused_extensions() -> None:
    """Stand-ins for imports CondInst inference never calls (no C++ build, no scikit-image)."""
    import types

    sys.modules["adet._C"] = types.ModuleType("adet._C")  # BezierAlign, DefROIAlign (ABCNet) only
    skimage = types.ModuleType("skimage")
    skimage.color = types.ModuleType("skimage.color")  # BoxInst's training-time rgb2lab only
    sys.modules.update({"skimage": skimage, "skimage.color": skimage.color})


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


def run_reference(args: argparse.Namespace) -> None:
    """Build, save and run AdelaiDet's CondInst (call with the reference on ``PYTHONPATH``)."""
    import torch

    torch.set_num_threads(1)
    _stub_unused_extensions()
    from adet.config import get_cfg
    from detectron2.engine import DefaultPredictor
    from detectron2.modeling import build_model

    adelaidet = Path(sys.modules["adet"].__file__).resolve().parents[1]
    cfg = get_cfg()
    cfg.merge_from_file(str(adelaidet / args.config))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", args.short, "INPUT.MAX_SIZE_TEST", args.max_size]
    )
    out = Path(args.workdir)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    randomise_weights(model, args.seed, args.cls_bias)
    checkpoint = out / "condinst_random.pth"
    torch.save({"model": model.state_dict()}, checkpoint)

    cfg.MODEL.WEIGHTS = str(checkpoint)
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
    """Convert the reference checkpoint, load it as ``crossvis.evaluate`` does, run the frame twice.

    ``same_input``: on the frame AdelaiDet resized (the issue's criterion); ``end_to_end``: from the
    original frame through this project's own resize (``preprocess_for_inference``), as
    ``crossvis.evaluate`` / ``crossvis.demo`` run.
    """
    import torch

    from crossvis.data.transforms import preprocess_for_inference
    from crossvis.loading import convert, load_module

    torch.set_num_threads(1)
    converted = workdir / "condinst_converted.pth"
    report = convert(str(workdir / "condinst_random.pth"), str(converted), None, None, [])
    ref = np.load(workdir / "reference.npz")
    module = load_module(converted)
    frame_rgb = np.ascontiguousarray(ref["frame_bgr"][..., ::-1])
    resized_rgb = np.ascontiguousarray(ref["resized_bgr"][..., ::-1])
    short, max_size = (int(v) for v in ref["test_size"])
    inputs = {
        "same_input": torch.from_numpy(np.ascontiguousarray(resized_rgb.transpose(2, 0, 1))).float(),
        "end_to_end": preprocess_for_inference(frame_rgb, short, max_size),
    }
    outputs = {}
    for name, image in inputs.items():
        det = module.model.forward_infer(image, frame_rgb.shape[:2])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", required=True, help="image file, or a video (see --frame-index)")
    parser.add_argument("--frame-index", type=int, default=0, help="frame of a video --frame")
    parser.add_argument(
        "--reference-path",
        default=os.environ.get("CROSSVIS_REFERENCE_PATH", ""),
        help="PYTHONPATH of the reference process: detectron2, AdelaiDet and their dependencies",
    )
    parser.add_argument("--short", type=int, default=360, help="test short side (AdelaiDet's COCO test size: 800)")
    parser.add_argument("--max-size", type=int, default=640, help="test long-side limit (AdelaiDet: 1333)")
    parser.add_argument("--config", default=ADELAIDET_CONFIG, help="AdelaiDet CondInst config, relative to AdelaiDet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cls-bias", type=float, default=0.0, help="class-logit bias of the random weights")
    parser.add_argument("--workdir", help="where the checkpoints and detections go (default: a temporary folder)")
    parser.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)  # the reference process
    args = parser.parse_args(argv)
    if args.reference_only:
        run_reference(args)
        return 0
    if not args.reference_path:
        parser.error("--reference-path (or CROSSVIS_REFERENCE_PATH) is required")
    if not Path(args.frame).is_file():
        parser.error(f"--frame {args.frame}: no such file (expected an image or a video)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": args.reference_path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        command = [
            sys.executable,
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
            "--reference-only",
            "--workdir",
            str(workdir),
        ]
        subprocess.run(command, env=env, check=True)
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


if __name__ == "__main__":
    sys.exit(main())
