"""Inference precision (inference.precision) and channels-last layout (inference.channels_last) of the
PyTorch runtime, on CPU, set through the composed run config."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from torchvision.ops import box_iou

from crossvis.checkpoint.loading import load_module
from crossvis.conf import CONF_DIR
from crossvis.data.transforms import load_frame_rgb, preprocess_for_inference
from crossvis.engine.inference import frame_settings, with_overrides
from crossvis.engine.runtime import FrameModel, Runtime
from crossvis.errors import ConfigError
from crossvis.modeling.crossvis import CrossVIS

from helpers import TINY_MODEL, spec_of


def settings(*overrides: str):
    """The frame settings of the composed training config (score_threshold 0: up to max_detections)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*TINY_MODEL, "logger=none", "inference.detection.score_threshold=0", *overrides]
        )
    return cfg, frame_settings(cfg.inference)


def tiny_frame_model(*overrides: str) -> tuple[CrossVIS, FrameModel]:
    cfg, frame = settings(*overrides)
    torch.manual_seed(0)
    model = CrossVIS(spec_of(cfg.model), num_classes=3, num_identities=10).eval()
    return model, Runtime().frame_model(model, frame)


def image() -> torch.Tensor:
    return torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0)) * 255


def fpn_output_dtype(model: CrossVIS, frame_model: FrameModel) -> torch.dtype:
    seen = []
    handle = model.features.fpn.register_forward_hook(lambda m, i, out: seen.append(out[0].dtype))
    frame_model(image(), (64, 96))
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(
    ("precision", "dtype"), [("32", torch.float32), ("bf16", torch.bfloat16), ("16", torch.float16)]
)
def test_precision_from_the_composed_config_sets_the_compute_dtype(precision, dtype):
    model, frame_model = tiny_frame_model(f"inference.precision={precision}")
    assert fpn_output_dtype(model, frame_model) == dtype
    out = frame_model(image(), (64, 96))
    k = len(out["scores"])
    assert 0 < k <= 100  # score_threshold 0: up to max_detections (empty boxes are dropped, as AdelaiDet)
    assert all(out[key].dtype == torch.float32 for key in ("boxes", "scores", "embeddings"))  # handed back as float32
    assert out["masks"].dtype == torch.bool and out["masks"].shape == (k, 64, 96)


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ConfigError, match="^inference.precision: expected one of 32, bf16, 16, got 8"):
        settings("inference.precision=8")  # checked with the settings, before any frame


def test_channels_last_converts_the_model_and_keeps_the_detections():
    reference = tiny_frame_model()[1](image(), (64, 96))
    model, frame_model = tiny_frame_model("inference.channels_last=true")
    out = frame_model(image(), (64, 96))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    torch.testing.assert_close(out["scores"], reference["scores"], rtol=1e-4, atol=1e-5)
    assert torch.equal(out["labels"], reference["labels"])
    assert (out["masks"] != reference["masks"]).float().mean() < 1e-3


def test_bf16_keeps_the_top_detections_of_float32(trained_run, synthetic_root):
    """A briefly trained model on a synthetic valid frame: its confident detections survive bf16."""
    module = load_module(trained_run / "checkpoints" / "last.ckpt")
    model = module.model
    frame = load_frame_rgb(sorted((synthetic_root / "valid" / "JPEGImages").glob("*/*.jpg"))[0])
    inputs = preprocess_for_inference(frame, module.cfg.data.transform.short, module.cfg.data.transform.max_size)
    fp32 = Runtime().frame_model(model, frame_settings(module.cfg.inference))(inputs, frame.shape[:2])
    as_bf16 = Runtime().frame_model(model, frame_settings(with_overrides(module.cfg.inference, {"precision": "bf16"})))
    assert fpn_output_dtype(model, as_bf16) == torch.bfloat16
    bf16 = as_bf16(inputs, frame.shape[:2])

    scores = fp32["scores"]
    top = [i for i in range(min(5, len(scores))) if scores[i] > 0.2]
    assert len(top) >= 2, f"expected confident detections, scores {scores[:5].tolist()}"
    for i in top:  # each top float32 detection has a bf16 twin: same class and box, close score, same mask
        ious = box_iou(fp32["boxes"][i : i + 1], bf16["boxes"])[0]
        ious[bf16["labels"] != fp32["labels"][i]] = 0
        match = int(ious.argmax())
        assert ious[match] > 0.9
        assert abs(float(bf16["scores"][match] - scores[i])) < 0.02
        a, b = fp32["masks"][i], bf16["masks"][match]
        assert (a & b).sum() / (a | b).sum() > 0.9
