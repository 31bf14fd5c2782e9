"""Where the per-frame network runs: PyTorch eager or ONNX Runtime, behind one frame-model callable.

The online loop (:class:`crossvis.engine.inference.VideoInference`) calls a *frame model*
``(image (3, h, w) 0..255 resized, (H0, W0)) → detections``. Both runtimes compute the network
part, :meth:`CrossVIS.forward_frame` (normalise and pad, backbone, FPN, heads, detection
selection and NMS, dynamic mask head: boxes, scores, labels, stride-4 mask probabilities and
identity embeddings), and share everything after it: :func:`crossvis.modeling.crossvis.finish_frame`
(box scaling, mask paste), the tracker and the RLE encoding.

Export (:func:`export_onnx`) uses ``torch.onnx.export(..., dynamo=False)``, the TorchScript
tracer: with torch 2.14 it turns ``torchvision.ops.batched_nms`` into ONNX NonMaxSuppression
(opset ≥ 11; the default here is 17) and keeps the frame's height and width dynamic. The
``torch.export``-based exporter (``dynamo=True``) needs ``onnxscript`` and data-independent
shapes, which detection selection does not have. The detection settings
(``inference.detection.score_threshold``, ``pre_nms_topk``, ``nms_threshold``,
``max_detections``) are constants of the graph: they are stored in the file's metadata and an
ONNX Runtime run whose settings differ stops with an error naming the key.
``mask_threshold``, the resize and the tracker stay Python settings.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from crossvis.cli import require_file
from crossvis.errors import ConfigError, InputFormatError
from crossvis.io import atomic_path
from crossvis.modeling.crossvis import FRAME_OUTPUTS, CrossVIS, finish_frame

FrameModel = Callable[[Tensor, tuple[int, int]], dict[str, Tensor]]
RUNTIMES = ("eager", "onnxruntime")
# The detection settings baked into an exported graph (model.inference.* = inference.detection.*).
GRAPH_SETTINGS = ("score_threshold", "pre_nms_topk", "nms_threshold", "max_detections")
METADATA_KEY = "crossvis"
DEFAULT_OPSET = 17


class _FrameGraph(nn.Module):
    """:meth:`CrossVIS.forward_frame` with tuple outputs, the form the exporter traces."""

    def __init__(self, model: CrossVIS) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        raw = self.model.forward_frame(image)
        return tuple(raw[name] for name in FRAME_OUTPUTS)


def graph_metadata(model: CrossVIS) -> dict:
    """What an ONNX Runtime run must agree on with the checkpoint: graph settings, classes, embedding size."""
    settings = {key: model.cfg.inference[key] for key in GRAPH_SETTINGS}
    return {
        "detection": {key: float(v) if key.endswith("threshold") else int(v) for key, v in settings.items()},
        "num_classes": int(model.num_classes),
        "embedding_dim": int(model.cfg.embedding.dim),
        "upsample": model.upsample_mode,
    }


def export_onnx(
    model: CrossVIS, path: str | Path, opset: int = DEFAULT_OPSET, sample_size: tuple[int, int] = (200, 300)
) -> dict:
    """Write ``model``'s per-frame network as ONNX to ``path`` (atomically); returns the stored metadata.

    Input ``image`` float32 [3, height, width] (RGB 0..255, resized, unpadded; height and width
    dynamic); outputs :data:`FRAME_OUTPUTS` with K ≤ ``max_detections`` rows (more only on exact
    score ties at the cap). ``sample_size`` is the frame traced; any other size runs the same graph.
    It must need padding (not a multiple of 32): the tracer records only the branch it takes.
    """
    import onnx  # imported when used: a slow import that inference does not need

    if model.embedding is None:
        raise ConfigError(
            "model.embedding.enabled=false: the exported graph must return the identity embeddings the "
            "tracker links with; export a video checkpoint (CondInst-only checkpoints have none)"
        )
    if min(s % 32 for s in sample_size) == 0:
        raise ValueError(f"sample_size={sample_size}: expected sides that are not multiples of 32 (padding is traced)")
    if opset < 11:
        raise ConfigError(f"opset={opset}: expected 11 or more (ONNX NonMaxSuppression)")
    model = model.eval()
    image = torch.rand(3, *sample_size, generator=torch.Generator().manual_seed(0)) * 255
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the shape arithmetic it records
        try:
            torch.onnx.export(
                _FrameGraph(model).eval(),
                (image,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=list(FRAME_OUTPUTS),
                dynamic_axes={
                    "image": {1: "height", 2: "width"},
                    **{name: {0: "detections"} for name in FRAME_OUTPUTS},
                },
            )
        except Exception as error:  # the exporter raises many types for an operator it cannot convert
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"model.backbone.name={model.cfg.backbone.name}: this model cannot be exported to ONNX opset {opset} "
                f"({type(error).__name__}: {detail})"
            ) from error
        graph = onnx.load(str(tmp))
        metadata = graph_metadata(model)
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(graph, str(tmp))
    return metadata


class OnnxFrameModel:
    """The frame model on ONNX Runtime (CPU): the exported graph, then the shared :func:`finish_frame`."""

    def __init__(self, path: str | Path, model: CrossVIS) -> None:
        import onnxruntime as ort  # imported when used: a slow import the PyTorch path does not need

        self.path = require_file(path, "model_path", "an ONNX file written by python -m crossvis.export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the entry points' `threads`
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a bad file
            raise InputFormatError(
                f"model_path: cannot load {self.path} with ONNX Runtime ({str(error).strip().splitlines()[0]}); "
                "expected an ONNX file written by python -m crossvis.export"
            ) from error
        self.model = model
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise InputFormatError(
                f"model_path: {self.path} has no {METADATA_KEY!r} metadata (not written by crossvis.export)"
            )
        self.check(json.loads(stored))

    def check(self, stored: dict) -> None:
        """The checkpoint and the effective settings must be those the graph was exported with."""
        expected = graph_metadata(self.model)
        for key, value in expected["detection"].items():
            if stored["detection"][key] != value:
                raise ConfigError(
                    f"inference.detection.{key}={value} but {self.path} was exported with {stored['detection'][key]}: "
                    f"re-export (python -m crossvis.export ... inference.detection.{key}={value}) or drop the override"
                )
        for key in ("num_classes", "embedding_dim", "upsample"):
            if stored[key] != expected[key]:
                raise ConfigError(
                    f"model_path: {self.path} was exported from a model with {key}={stored[key]}, the checkpoint has "
                    f"{expected[key]}: export this checkpoint"
                )

    def network(self, image: Tensor) -> dict[str, Tensor]:
        """The graph's raw outputs (:data:`FRAME_OUTPUTS`) for ``image (3, h, w)``."""
        outputs = self.session.run(list(FRAME_OUTPUTS), {"image": image.detach().cpu().float().numpy()})
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(FRAME_OUTPUTS, outputs)}

    def __call__(self, image: Tensor, orig_size: tuple[int, int]) -> dict[str, Tensor]:
        cfg = self.model.cfg.inference
        raw = self.network(image)
        return finish_frame(raw, tuple(image.shape[-2:]), orig_size, self.model.upsample_mode, cfg.mask_threshold)


@dataclass
class Runtime:
    """``runtime`` and ``model_path`` of an entry point: which frame model runs the network."""

    name: str = "eager"
    model_path: str | None = None

    def __post_init__(self) -> None:
        if self.name not in RUNTIMES:
            raise ConfigError(f"runtime: expected one of {list(RUNTIMES)}, got {self.name!r}")
        if self.name == "onnxruntime" and not self.model_path:
            raise ConfigError("model_path: runtime=onnxruntime needs the ONNX file (python -m crossvis.export)")
        if self.name == "onnxruntime":
            require_file(self.model_path, "model_path", "an ONNX file written by python -m crossvis.export")

    def frame_model(self, model: CrossVIS) -> FrameModel:
        """The frame model of ``model`` on this runtime (with the model's current settings)."""
        if self.name == "eager":
            return model.forward_infer
        return OnnxFrameModel(self.model_path, model)
