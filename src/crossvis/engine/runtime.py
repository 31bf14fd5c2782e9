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

Eager runs take ``inference.precision``: 32 (default, plain float32), ``bf16`` or 16 run the
network under ``torch.autocast`` with that dtype (bf16 also runs on CPU); the outputs are handed
back as float32, and the mask paste always runs in float32. ``inference.channels_last`` converts
the model's 4-D weights to ``torch.channels_last`` at its first call (convolutions then run NHWC,
usually faster with cuDNN/oneDNN under mixed precision; the model stays converted, which changes no
result beyond float rounding).
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
from crossvis.errors import ArgumentError, ConfigError, InputFormatError
from crossvis.files import atomic_path
from crossvis.modeling.crossvis import FRAME_OUTPUTS, CrossVIS, finish_frame
from crossvis.modeling.specs import PostProcessing

FrameModel = Callable[[Tensor, tuple[int, int]], dict[str, Tensor]]
RUNTIMES = ("eager", "onnxruntime")
# The detection settings baked into an exported graph (inference.detection.*).
GRAPH_SETTINGS = ("score_threshold", "pre_nms_topk", "nms_threshold", "max_detections")
METADATA_KEY = "crossvis"
DEFAULT_OPSET = 17
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast_dtype(precision: int | str) -> torch.dtype | None:
    """The autocast dtype of ``inference.precision`` (None for plain float32)."""
    key = str(precision)
    if key not in AUTOCAST_DTYPES:
        raise ArgumentError("precision", f": expected one of 32, bf16, 16, got {precision!r}")
    return AUTOCAST_DTYPES[key]


@dataclass(frozen=True)
class FrameSettings:
    """How each frame is run: CondInst's post-processing, the autocast precision and the memory layout."""

    detection: PostProcessing
    precision: str | int  # 32 | bf16 | 16
    channels_last: bool

    def __post_init__(self) -> None:
        autocast_dtype(self.precision)  # a bad precision fails before any frame


class _FrameGraph(nn.Module):
    """:meth:`CrossVIS.forward_frame` with tuple outputs, the form the exporter traces."""

    def __init__(self, model: CrossVIS, post: PostProcessing) -> None:
        super().__init__()
        self.model = model
        self.post = post

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        raw = self.model.forward_frame(image, self.post)
        return tuple(raw[name] for name in FRAME_OUTPUTS)


def graph_metadata(model: CrossVIS, post: PostProcessing) -> dict:
    """What an ONNX Runtime run must agree on with the checkpoint: graph settings, classes, embedding size."""
    settings = {key: getattr(post, key) for key in GRAPH_SETTINGS}
    return {
        "detection": {key: float(v) if key.endswith("threshold") else int(v) for key, v in settings.items()},
        "num_classes": int(model.num_classes),
        "embedding_dim": int(model.spec.embedding.dim),
        "upsample": model.upsample_mode,
    }


def export_onnx(
    model: CrossVIS,
    path: str | Path,
    post: PostProcessing,
    opset: int = DEFAULT_OPSET,
    sample_size: tuple[int, int] = (200, 300),
) -> dict:
    """Write ``model``'s per-frame network with the detection settings of ``post`` as ONNX to ``path``
    (atomically); returns the stored metadata.

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
                _FrameGraph(model, post).eval(),
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
                f"model.backbone.name={model.spec.backbone.name}: this model cannot be exported to ONNX opset {opset} "
                f"({type(error).__name__}: {detail})"
            ) from error
        graph = onnx.load(str(tmp))
        metadata = graph_metadata(model, post)
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(graph, str(tmp))
    return metadata


class OnnxFrameModel:
    """The frame model on ONNX Runtime (CPU): the exported graph, then the shared :func:`finish_frame`."""

    def __init__(self, path: str | Path, model: CrossVIS, post: PostProcessing) -> None:
        import onnxruntime as ort  # imported when used: a slow import the PyTorch path does not need

        self.path = require_file(path, "model_path", "an ONNX file written by python -m crossvis.cli.export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the entry points' `threads`
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for a bad file
            raise InputFormatError(
                f"model_path: cannot load {self.path} with ONNX Runtime ({str(error).strip().splitlines()[0]}); "
                "expected an ONNX file written by python -m crossvis.cli.export"
            ) from error
        self.model, self.post = model, post
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise InputFormatError(
                f"model_path: {self.path} has no {METADATA_KEY!r} metadata (not written by crossvis.cli.export)"
            )
        self.check(json.loads(stored))

    def check(self, stored: dict) -> None:
        """The checkpoint and the effective settings must be those the graph was exported with."""
        expected = graph_metadata(self.model, self.post)
        for key, value in expected["detection"].items():
            if stored["detection"][key] != value:
                raise ConfigError(
                    f"inference.detection.{key}={value} but {self.path} was exported with {stored['detection'][key]}: "
                    f"re-export (python -m crossvis.cli.export ... inference.detection.{key}={value}) or drop the override"
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
        raw = self.network(image)
        return finish_frame(raw, tuple(image.shape[-2:]), orig_size, self.model.upsample_mode, self.post.mask_threshold)


class EagerFrameModel:
    """The frame model in PyTorch: :meth:`CrossVIS.forward_infer` at the settings' precision and layout."""

    def __init__(self, model: CrossVIS, settings: FrameSettings) -> None:
        self.model, self.post = model, settings.detection
        self.dtype = autocast_dtype(settings.precision)
        self.channels_last = settings.channels_last

    def __call__(self, image: Tensor, orig_size: tuple[int, int]) -> dict[str, Tensor]:
        if self.channels_last and not getattr(self.model, "_channels_last", False):
            self.model.to(memory_format=torch.channels_last)
            self.model._channels_last = True
        with torch.autocast(image.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.model.forward_infer(image, orig_size, self.post)
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}


@dataclass
class Runtime:
    """``runtime`` and ``model_path`` of an entry point: which frame model runs the network."""

    name: str = "eager"
    model_path: str | None = None

    def __post_init__(self) -> None:
        if self.name not in RUNTIMES:
            raise ConfigError(f"runtime: expected one of {list(RUNTIMES)}, got {self.name!r}")
        if self.name == "onnxruntime" and not self.model_path:
            raise ConfigError("model_path: runtime=onnxruntime needs the ONNX file (python -m crossvis.cli.export)")
        if self.name == "onnxruntime":
            require_file(self.model_path, "model_path", "an ONNX file written by python -m crossvis.cli.export")

    def frame_model(self, model: CrossVIS, settings: FrameSettings) -> FrameModel:
        """The frame model of ``model`` with ``settings`` on this runtime (ONNX Runtime: float32)."""
        if self.name == "eager":
            return EagerFrameModel(model, settings)
        return OnnxFrameModel(self.model_path, model, settings.detection)
