"""ONNX export and the ONNX Runtime frame model: same detections, tracks and metric as PyTorch eager."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from crossvis.checkpoint.loading import load_module
from crossvis.data.transforms import load_frame_rgb, preprocess_for_inference
from crossvis.data.ytvis import load_vis
from crossvis.engine.runtime import OnnxFrameModel, Runtime, export_onnx
from crossvis.engine.splits import evaluate_dataset
from crossvis.errors import ConfigError, InputFormatError, InputNotFoundError
from crossvis.modeling.crossvis import FRAME_OUTPUTS, CrossVIS

from helpers import post_processing, tiny_spec

POST = post_processing()


def tiny_model(*overrides: str) -> CrossVIS:
    torch.manual_seed(0)
    model = CrossVIS(tiny_spec(*overrides), num_classes=3, num_identities=4).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(1.0)  # random weights: make locations detections
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, path, POST)
    return model, path


def mask_ious(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).numpy()


@pytest.mark.parametrize("size", [(64, 96), (97, 131), (33, 250)])
def test_the_graph_returns_the_pytorch_network_outputs_at_any_frame_size(exported, size):
    model, path = exported
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        reference = model.forward_frame(image, POST)
    got = OnnxFrameModel(path, model, POST).network(image)
    assert list(got) == list(FRAME_OUTPUTS)
    assert 0 < len(reference["scores"]) <= 100 and len(got["scores"]) == len(reference["scores"])
    assert torch.equal(got["labels"], reference["labels"])
    assert got["mask_probs"].shape == (len(got["scores"]), -(-size[0] // 32) * 8, -(-size[1] // 32) * 8)
    for name in ("boxes", "scores", "mask_probs", "embeddings"):
        assert torch.allclose(got[name], reference[name], atol=1e-4), name


def test_frame_model_parity_on_real_frames(exported, synthetic_root):
    """The detections the tracker receives: scores within 1e-4, boxes within 0.5 px, mask IoU >= 0.99."""
    model, path = exported
    onnx_model = OnnxFrameModel(path, model, POST)
    video = load_vis(synthetic_root / "valid.json", synthetic_root / "valid" / "JPEGImages").videos[0]
    for index in range(0, video.length, 3):
        frame = load_frame_rgb(video.frame_path(index))
        image = preprocess_for_inference(frame, 128, 224)
        reference, got = model.forward_infer(image, frame.shape[:2], POST), onnx_model(image, frame.shape[:2])
        assert set(got) == set(reference) and len(reference["scores"]) > 0
        assert torch.equal(got["labels"], reference["labels"])
        assert (got["scores"] - reference["scores"]).abs().max() <= 1e-4
        assert (got["boxes"] - reference["boxes"]).abs().max() <= 0.5
        assert mask_ious(got["masks"], reference["masks"]).min() >= 0.99
        assert got["masks"].shape == (len(got["scores"]), *frame.shape[:2]) and got["masks"].dtype == torch.bool


def test_a_frame_without_detections_gives_empty_outputs(tmp_path):
    model, none = tiny_model(), post_processing(score_threshold=1.0)
    export_onnx(model, tmp_path / "none.onnx", none)
    out = OnnxFrameModel(tmp_path / "none.onnx", model, none)(torch.rand(3, 64, 96) * 255, (120, 200))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 120, 200) and out["embeddings"].shape == (0, 16)


def test_graph_settings_must_match_the_run(exported):
    model, path = exported
    with pytest.raises(
        ConfigError, match=r"inference.detection.max_detections=20 but .*tiny.onnx was exported with 100"
    ):
        OnnxFrameModel(path, model, post_processing(max_detections=20))
    OnnxFrameModel(path, model, post_processing(mask_threshold=0.7))  # a Python setting, not the graph's
    with pytest.raises(ConfigError, match="num_classes=3, the checkpoint has 5"):
        OnnxFrameModel(path, CrossVIS(tiny_spec(), num_classes=5, num_identities=4), POST)


def test_what_cannot_be_exported_or_loaded_fails_clearly(tmp_path):
    with pytest.raises(ConfigError, match="model.embedding.enabled=false"):
        export_onnx(tiny_model("embedding.enabled=false"), tmp_path / "x.onnx", POST)
    with pytest.raises(ConfigError, match="opset=10: expected 11 or more"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", POST, opset=10)
    assert not (tmp_path / "x.onnx").exists()
    (tmp_path / "bad.onnx").write_text("not onnx")
    with pytest.raises(InputFormatError, match="model_path: cannot load .*bad.onnx with ONNX Runtime"):
        OnnxFrameModel(tmp_path / "bad.onnx", tiny_model(), POST)
    with pytest.raises(InputNotFoundError, match="model_path: no such file"):
        Runtime("onnxruntime", str(tmp_path / "absent.onnx"))
    with pytest.raises(ConfigError, match="model_path: runtime=onnxruntime needs the ONNX file"):
        Runtime("onnxruntime")
    with pytest.raises(ConfigError, match="runtime: expected one of"):
        Runtime("tensorrt")


def test_onnxruntime_gives_the_same_tracks_and_metric_on_the_valid_split(trained_run, synthetic_root, tmp_path):
    """The demo's valid split, evaluated online with each runtime (tracker, paste and RLE shared)."""
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    export_onnx(load_module(checkpoint).model, tmp_path / "model.onnx", POST)
    dataset = load_vis(synthetic_root / "valid_gt.json", synthetic_root / "valid" / "JPEGImages")
    metrics, results = {}, {}
    for runtime in (Runtime(), Runtime("onnxruntime", str(tmp_path / "model.onnx"))):
        module = load_module(checkpoint)
        (tmp_path / runtime.name).mkdir()
        metrics[runtime.name] = evaluate_dataset(module, dataset, dataset.raw, tmp_path / runtime.name, runtime=runtime)
        results[runtime.name] = json.loads((tmp_path / runtime.name / "results.json").read_text())
    eager, onnx = results["eager"], results["onnxruntime"]
    assert len(eager) == len(onnx) > 0
    for a, b in zip(eager, onnx):
        assert (a["video_id"], a["category_id"]) == (b["video_id"], b["category_id"])
        assert abs(a["score"] - b["score"]) <= 1e-4
        assert [s is None for s in a["segmentations"]] == [s is None for s in b["segmentations"]]
        pairs = [(x, y) for x, y in zip(a["segmentations"], b["segmentations"]) if x is not None]
        # equal RLEs (two empty masks have IoU 0 for pycocotools) or IoU >= 0.99
        assert all(x == y or mask_utils.iou([x], [y], [0])[0, 0] >= 0.99 for x, y in pairs)
    assert metrics["onnxruntime"] == pytest.approx(metrics["eager"], abs=1e-3)
