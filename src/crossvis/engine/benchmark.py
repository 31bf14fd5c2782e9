"""Speed benchmark: the paper's FPS protocol (Table 5) and the end-to-end online cost (``crossvis-benchmark``).

    python -m crossvis.cli.benchmark [checkpoint=CKPT] [input.path=VIDEO_OR_DIR] [compare=[maskrcnn,condinst]]
    python -m crossvis.cli.benchmark 'runtimes=[eager,onnxruntime,compile]'   # the runtimes, same protocol

Batch 1, after warm-up, synchronised on CUDA. Every frame is processed twice, alternating which
comes first (so both figures see the same machine load):

* **model-only** (the paper's FPS): the timer covers ``forward_infer`` only, i.e. a resized
  frame tensor already on the device in, detections out (boxes, scores, labels, embeddings and
  binary masks pasted at the frame's size); decoding, resizing and tracking are left out.
* **end-to-end**: everything an online user waits for: decode (or generate) the frame, resize
  and move it (preprocess), the model, the tracker and RLE encoding of the masks, timed per stage
  with :class:`crossvis.timing.StageTimer` (backbone+FPN through a module hook, mask paste and RLE
  through their own stage markers, "heads" = the rest of ``forward_infer``).

``runtime=onnxruntime model_path=model.onnx`` measures both on ONNX Runtime (``backbone+fpn`` is
then part of "heads"). ``runtimes`` adds one row per runtime under the model-only protocol, the
runtimes called in turn on every frame (rotating which goes first), with their outputs compared
with eager's; the ONNX row runs ``model_path`` or, without one, the benchmarked model exported
to a temporary file.

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from crossvis.data.transforms import preprocess_for_inference
from crossvis.data.video_source import FrameSource
from crossvis.engine.inference import VideoInference, build_tracker, frame_settings, with_overrides
from crossvis.engine.lightning_module import CrossVISModule, build_model
from crossvis.engine.run_config import default_inference
from crossvis.engine.runtime import RUNTIMES, FrameModel, Runtime, autocast_dtype, export_onnx
from crossvis.errors import ConfigError, InputFormatError
from crossvis.modeling.crossvis import CrossVIS, finish_frame
from crossvis.timing import StageTimer, set_apart, stage

STAGES = ("decode", "preprocess", "backbone+fpn", "heads", "mask paste", "tracker", "rle")
MODEL_ONLY = "model-only"  # the paper's call beside each frame: timed apart from STAGES
# Paper Table 5: FPS on one RTX 2080 Ti at 360×640.
PAPER_FPS = {"maskrcnn": 41.6, "condinst": 42.8, "masktrack": 32.8, "crossvis": 39.8}
ROW_NAMES = {  # {backbone}: the benchmarked model's backbone (the paper's rows are R-50)
    "maskrcnn": "Mask R-CNN resnet50-FPN",
    "condinst": "CondInst {backbone}",
    "masktrack": "MaskTrack R-CNN resnet50",
    "crossvis": "CrossVIS {backbone}",
}
COMPARABLE = ("maskrcnn", "condinst")


class NoEmbedding(nn.Module):
    """Stands in for the embedding branch to turn CrossVIS into plain CondInst (0-dim embeddings)."""

    def forward(self, feats: list[Tensor]) -> Tensor:
        locations = sum(f.shape[-2] * f.shape[-1] for f in feats)
        return feats[0].new_zeros(feats[0].shape[0], locations, 0)


class Frames:
    """The benchmark's frames, re-iterable: a video file, a folder of frames, or seeded uint8 noise."""

    def __init__(self, cfg_input: DictConfig, seed: int) -> None:
        requested = cfg_input.frames
        if requested is not None and int(requested) < 1:
            raise ConfigError(f"input.frames: expected a positive number of frames, got {requested}")
        self.size = tuple(int(s) for s in cfg_input.size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"input.size: expected [height, width] of positive ints, got {list(cfg_input.size)}")
        self.seed = seed
        self.source = FrameSource(cfg_input.path, 10.0) if cfg_input.path else None
        if self.source is None:
            if requested is None:
                raise ConfigError("input.frames: a number is needed when frames are generated (input.path=null)")
            self.num_frames, self.kind = int(requested), "generated"
            return
        # A video's length is only known once decoded: count the frames used in one untimed pass.
        limit = None if requested is None else int(requested)
        self.num_frames = sum(1 for _ in itertools.islice(self.source, limit))
        if self.source.read_error:
            raise InputFormatError(f"input: {self.source.path}: could not decode {self.source.read_error}")
        self.kind = "folder" if self.source.path.is_dir() else "video"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.source is not None:
            yield from itertools.islice(self.source, self.num_frames)
            return
        rng = np.random.default_rng(self.seed)
        for _ in range(self.num_frames):
            yield rng.integers(0, 256, (*self.size, 3), dtype=np.uint8)


# (checkpoint path, device) -> the module it holds (crossvis.checkpoint.loading.load_module)
CheckpointLoader = Callable[[str, str], CrossVISModule]


class Benchmark:
    """One model + tracker setting measured on one set of frames."""

    def __init__(self, cfg: DictConfig, load_checkpoint: CheckpointLoader | None = None) -> None:
        """``load_checkpoint`` reads ``cfg.checkpoint`` (needed when it is set)."""
        self.runtime = Runtime(cfg.runtime, cfg.model_path)  # a bad runtime or model_path fails first
        self.device = torch.device(cfg.device)
        self.frames = Frames(cfg.input, int(cfg.seed))
        torch.manual_seed(int(cfg.seed))
        if cfg.checkpoint:
            module = load_checkpoint(cfg.checkpoint, str(self.device))
            self.model: CrossVIS = module.model
            stored = module.cfg.inference
        else:
            self.model = build_model(cfg.model, int(cfg.num_classes), int(cfg.num_identities)).to(self.device)
            # Random box regression gives zero-size boxes, which the reference post-processing drops.
            # A bias of 4 puts every box side 4 strides (>= 32 px) from its location, so even locations
            # in the padding keep a box that overlaps the image and the forced max_detections survive.
            torch.nn.init.constant_(self.model.head.box_pred.bias, 4.0)
            stored = default_inference(cfg.input.short, cfg.input.max_size)
        settings = with_overrides(stored, cfg.inference)
        self.short, self.max_size = int(settings.short), int(settings.max_size)
        self.tracker_cfg = dict(settings.tracker)
        build_tracker(self.tracker_cfg)  # a bad setting fails before any frame is read
        self.labels = list(range(self.model.num_classes))  # results by label: no categories to map to
        self.settings = frame_settings(settings)
        self.post = self.settings.detection
        self.model.eval()
        self.forward = self.runtime.frame_model(self.model, self.settings)
        self.dtype = str(autocast_dtype(self.settings.precision) or torch.float32).replace("torch.", "")

    def preprocess(self, frame: np.ndarray) -> Tensor:
        return preprocess_for_inference(frame, self.short, self.max_size).to(self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def model_only(self, run: Callable[[Any], Any], prepare: Callable[[np.ndarray], Any]) -> float:
        """Seconds spent in ``run(prepare(frame))`` over the frames (``prepare`` untimed)."""
        total = 0.0
        for frame in self.frames:
            inputs = prepare(frame)
            self.sync()
            start = time.perf_counter()
            run(inputs)
            self.sync()
            total += time.perf_counter() - start
        return total

    def timed(self, step: Callable[[], Any], timer: StageTimer | None = None) -> tuple[Any, float]:
        """``step()`` and its synchronised wall time; with ``timer``, its stages are recorded."""
        self.sync()
        start = time.perf_counter()
        with timer.active() if timer is not None else contextlib.nullcontext():
            result = step()
        self.sync()
        return result, time.perf_counter() - start

    def one_round(self, timer: StageTimer) -> tuple[float, float, int]:
        """One pass over the frames through the online runner, with the model-only call beside each frame.

        The model-only call (the paper's protocol) runs just before or just after the frame's online
        step, alternating, so both figures see the same machine load; it is timed apart from the
        end-to-end stages. Returns the model-only and end-to-end seconds and the number of detections.
        """
        model_before = timer.seconds.get(MODEL_ONLY, 0.0)
        counts: list[int] = []

        def frame_model(image: Tensor, frame_size: tuple[int, int]) -> dict[str, Tensor]:
            def paper() -> None:  # resized frame on the device in, detections out
                with set_apart(MODEL_ONLY):
                    self.forward(image, frame_size)

            first = len(counts) % 2 == 0
            if first:
                paper()
            out = self.forward(image, frame_size)
            if not first:
                paper()
            counts.append(len(out["scores"]))
            return out

        runner = VideoInference(self.model, frame_model, self.short, self.max_size, self.tracker_cfg, self.labels)
        _, seconds = self.timed(lambda: runner.run_frames(0, decoded(self.frames)), timer)
        model_s = timer.seconds[MODEL_ONLY] - model_before
        return model_s, seconds - model_s, sum(counts)

    @torch.inference_mode()
    def run(self, rounds: int, warmup: int) -> dict[str, Any]:
        """Warm-up, then ``rounds`` passes over the frames; figures per frame (median round)."""
        first = next(iter(self.frames))
        if warmup:
            warm = VideoInference(self.model, self.forward, self.short, self.max_size, self.tracker_cfg, self.labels)
            warm.run_frames(0, [first] * warmup)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        timer = StageTimer(self.device)
        hooks = timer.time_module(self.model.features, "backbone+fpn")
        model_times, e2e_times, detections = [], [], 0
        for _ in range(rounds):
            model_seconds, e2e_seconds, count = self.one_round(timer)
            model_times.append(model_seconds)
            e2e_times.append(e2e_seconds)
            detections += count
        for handle in hooks:
            handle.remove()
        n = self.frames.num_frames
        model_s, e2e_s = statistics.median(model_times) / n, statistics.median(e2e_times) / n
        stages_ms = {name: 1000 * timer.seconds.get(name, 0.0) / (n * rounds) for name in STAGES}
        stages_ms["other"] = 1000 * sum(e2e_times) / (n * rounds) - sum(stages_ms.values())
        return {
            "model_only_fps": 1.0 / model_s,
            "end_to_end_fps": 1.0 / e2e_s,
            "model_only_ms": 1000 * model_s,
            "end_to_end_ms": 1000 * e2e_s,
            "end_to_end_over_model_only": e2e_s / model_s,
            "stages_ms": stages_ms,
            "detections_per_frame": detections / (n * rounds),
            **peak_memory(self.device),
        }

    def _crossvis_inputs(self, frame: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        return self.preprocess(frame), frame.shape[:2]

    @torch.inference_mode()
    def compare(self, name: str, rounds: int, warmup: int) -> float:
        """Model-only FPS of a Table-5 baseline on the same frames (median over rounds)."""
        if name == "condinst":
            model = copy.deepcopy(self.model)
            model.embedding = NoEmbedding()
            condinst = Runtime().frame_model(model, self.settings)
            run, prepare = (lambda x: condinst(*x)), self._crossvis_inputs
        elif name == "maskrcnn":
            run, prepare = self._maskrcnn()
        else:
            raise ConfigError(f"compare: unknown row {name!r}, expected a subset of {list(COMPARABLE)}")
        first = prepare(next(iter(self.frames)))
        for _ in range(warmup):
            run(first)
        times = [self.model_only(run, prepare) for _ in range(rounds)]
        return self.frames.num_frames / statistics.median(times)

    def frame_model(self, name: str, workdir: str) -> FrameModel:
        """The benchmarked model on runtime ``name``; ONNX: ``model_path`` or the model exported into ``workdir``."""
        if name == "compile":
            network = torch.compile(self.model.forward_frame)
            threshold, mode = self.post.mask_threshold, self.model.upsample_mode
            return lambda image, size: finish_frame(
                network(image, self.post), tuple(image.shape[-2:]), size, mode, threshold
            )
        if name == "onnxruntime" and not self.runtime.model_path:
            export_onnx(self.model, f"{workdir}/model.onnx", self.post)
            return Runtime(name, f"{workdir}/model.onnx").frame_model(self.model, self.settings)
        return Runtime(name, self.runtime.model_path).frame_model(self.model, self.settings)

    @torch.inference_mode()
    def runtime_rows(self, names: list[str], rounds: int, warmup: int) -> dict[str, dict[str, float]]:
        """Model-only FPS of each runtime, called in turn on every frame; outputs against eager's."""
        with tempfile.TemporaryDirectory() as workdir:
            models = {name: self.frame_model(name, workdir) for name in dict.fromkeys(["eager", *names])}
            first = next(iter(self.frames))
            for model in models.values():
                for _ in range(warmup):
                    model(self.preprocess(first), first.shape[:2])
            seconds = {name: [] for name in models}
            diffs = {name: {"max_score_diff": 0.0, "max_box_diff": 0.0, "min_mask_iou": 1.0} for name in models}
            for _ in range(rounds):
                totals = dict.fromkeys(models, 0.0)
                for index, frame in enumerate(self.frames):
                    image, outputs = self.preprocess(frame), {}
                    order = list(models)[index % len(models) :] + list(models)[: index % len(models)]
                    for name in order:
                        outputs[name], elapsed = self.timed(lambda m=models[name]: m(image, frame.shape[:2]))
                        totals[name] += elapsed
                    for name in models:
                        compare_outputs(outputs["eager"], outputs[name], diffs[name])
                for name, total in totals.items():
                    seconds[name].append(total)
        n = self.frames.num_frames
        eager_fps = n / statistics.median(seconds["eager"])
        rows = {}
        for name in models:
            fps = n / statistics.median(seconds[name])
            rows[name] = {"fps": fps, "over_eager": fps / eager_fps, **diffs[name]}
        return rows

    def _maskrcnn(self) -> tuple[Callable[[Any], Any], Callable[[np.ndarray], Any]]:
        """torchvision Mask R-CNN R-50-FPN, random weights, resizing like our model and pasting at frame size.

        It takes the frame at its own size (its transform resizes to ``short``/``max_size`` and
        normalises inside the timed call) and returns mask probabilities at frame size.
        """
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        threshold = self.post.score_threshold
        model = (
            maskrcnn_resnet50_fpn(
                weights=None,
                weights_backbone=None,
                min_size=self.short,
                max_size=self.max_size,
                box_score_thresh=float(threshold),
                box_detections_per_img=int(self.post.max_detections),
            )
            .to(self.device)
            .eval()
        )
        dtype = autocast_dtype(self.settings.precision)

        def run(image: Tensor) -> Any:
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                return model([image])

        def prepare(frame: np.ndarray) -> Tensor:
            return torch.from_numpy(frame).permute(2, 0, 1).to(self.device).float().div_(255.0)

        return run, prepare


def decoded(frames: Frames) -> Iterator[np.ndarray]:
    """The frames, each read (decoded or generated) as stage ``decode``."""
    iterator = iter(frames)
    while True:
        with stage("decode"):
            frame = next(iterator, None)
        if frame is None:
            return
        yield frame


def compare_outputs(reference: dict[str, Tensor], other: dict[str, Tensor], diffs: dict[str, float]) -> None:
    """Fold one frame's differences into ``diffs``: scores, boxes (px), mask IoU (inf / 0 when the counts differ).

    Detections are paired, not compared by position: two of nearly equal score may come out of NMS
    in either order. Each reference detection takes the unpaired one of its class and score (±1e-3)
    with the closest box.
    """
    count = len(reference["scores"])
    if count != len(other["scores"]):
        diffs.update(max_score_diff=math.inf, max_box_diff=math.inf, min_mask_iou=0.0)
        return
    if count == 0:
        return
    cost = (reference["boxes"][:, None] - other["boxes"][None]).abs().amax(2)
    score_gap = (reference["scores"][:, None] - other["scores"][None]).abs()
    cost[(reference["labels"][:, None] != other["labels"][None]) | (score_gap > 1e-3)] = math.inf
    pair = []
    for row in cost:
        j = int(row.argmin())
        pair.append(j)
        cost[:, j] = math.inf
    pair = torch.tensor(pair)
    a, b = reference["masks"].flatten(1), other["masks"][pair].flatten(1)
    union = (a | b).sum(1)
    iou = ((a & b).sum(1) / union.clamp(min=1)).masked_fill(union == 0, 1.0)
    diffs.update(
        max_score_diff=max(diffs["max_score_diff"], float(score_gap[torch.arange(count), pair].max())),
        max_box_diff=max(diffs["max_box_diff"], float((reference["boxes"] - other["boxes"][pair]).abs().max())),
        min_mask_iou=min(diffs["min_mask_iou"], float(iou.min())),
    )


def peak_memory(device: torch.device) -> dict[str, Any]:
    """CUDA max allocated on a GPU, else the process's peak resident set size (MiB)."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "memory": "cuda_max_allocated"}
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return {"peak_memory_mb": kib * scale / 2**20, "memory": "peak_rss"}


def table5(report: dict[str, Any]) -> str:
    """Report rows in the layout of the paper's Table 5, with the paper's 2080 Ti figures beside."""
    measured = {"crossvis": report["model_only_fps"], **report["compare"]}
    base = measured.get("maskrcnn")

    def fmt(value: float | None, pattern: str) -> str:
        return "—" if value is None else pattern.format(value)

    lines = [
        f"{'method':<26} {'FPS':>8} {'×MaskRCNN':>10} {'e2e FPS':>8} {'paper FPS':>10} {'paper ×':>8}",
    ]
    for key in ("maskrcnn", "condinst", "masktrack", "crossvis"):
        fps = measured.get(key)
        ratio = fps / base if fps is not None and base else None
        e2e = report["end_to_end_fps"] if key == "crossvis" else None
        lines.append(
            f"{ROW_NAMES[key].format(backbone=report['backbone']):<26} {fmt(fps, '{:.2f}'):>8} {fmt(ratio, '{:.2f}'):>10} {fmt(e2e, '{:.2f}'):>8} "
            f"{PAPER_FPS[key]:>10.1f} {PAPER_FPS[key] / PAPER_FPS['maskrcnn']:>8.2f}"
        )
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    stages = "\n".join(f"  {name:<13} {ms:9.1f} ms" for name, ms in report["stages_ms"].items())
    rows = "".join(
        f"\n{name:<12} {row['fps']:8.2f} {row['over_eager']:7.2f}× {row['max_score_diff']:10.2g} "
        f"{row['max_box_diff']:9.2g} {row['min_mask_iou']:13.4f}"
        for name, row in report["runtimes"].items()
    )
    runtimes = (
        f"\n\n{'runtime':<12} {'FPS':>8} {'×eager':>8} {'max Δscore':>10} {'max Δbox':>9} {'min mask IoU':>13}{rows}"
    )
    return (
        f"{report['frames']} frames × {report['rounds']} rounds, {report['input']['kind']} "
        f"{report['input']['size'][0]}×{report['input']['size'][1]} → {report['input']['resized'][0]}×"
        f"{report['input']['resized'][1]}, {report['device']} {report['dtype']}"
        f"{', channels-last' if report['channels_last'] else ''}, {report['threads']} threads, "
        f"{report['detections_per_frame']:.1f} detections/frame\n\n"
        f"{table5(report)}\n\n"
        f"model-only  {report['model_only_ms']:9.1f} ms/frame ({report['model_only_fps']:.2f} FPS)\n"
        f"end-to-end  {report['end_to_end_ms']:9.1f} ms/frame ({report['end_to_end_fps']:.2f} FPS), "
        f"{report['end_to_end_over_model_only']:.3f}× model-only\n"
        f"end-to-end stages per frame:\n{stages}\n"
        f"peak memory ({report['memory']}): {report['peak_memory_mb']:.0f} MiB"
        f"{runtimes if report['runtimes'] else ''}"
    )


def benchmark(cfg: DictConfig, load_checkpoint: CheckpointLoader | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``cfg`` (conf/benchmark.yaml) and return its report;
    ``load_checkpoint`` reads ``cfg.checkpoint``."""
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    compare = list(cfg.compare or [])
    unknown = [name for name in compare if name not in COMPARABLE]
    if unknown:
        raise ConfigError(f"compare: unknown rows {unknown}, expected a subset of {list(COMPARABLE)}")
    runtimes = list(cfg.runtimes or [])
    unknown = [name for name in runtimes if name not in (*RUNTIMES, "compile")]
    if unknown:
        raise ConfigError(f"runtimes: unknown {unknown}, expected a subset of {[*RUNTIMES, 'compile']}")
    rounds, warmup = int(cfg.rounds), int(cfg.warmup)
    if rounds < 1 or warmup < 0:
        raise ConfigError(f"rounds >= 1 and warmup >= 0 expected, got rounds={rounds} warmup={warmup}")
    bench = Benchmark(cfg, load_checkpoint)
    report = bench.run(rounds, warmup)  # before the baselines are built: their memory is not ours
    report["compare"] = {name: bench.compare(name, rounds, warmup) for name in compare}
    report["runtimes"] = bench.runtime_rows(runtimes, rounds, warmup) if runtimes else {}
    first = next(iter(bench.frames))
    report.update(
        backbone=bench.model.spec.backbone.name,
        device=str(bench.device),
        dtype=bench.dtype,
        precision=str(bench.settings.precision),
        channels_last=bench.settings.channels_last,
        threads=torch.get_num_threads(),
        runtime=bench.runtime.name,
        frames=bench.frames.num_frames,
        rounds=rounds,
        warmup=warmup,
        input={
            "kind": bench.frames.kind,
            "size": list(first.shape[:2]),
            "resized": list(preprocess_for_inference(first, bench.short, bench.max_size).shape[-2:]),
        },
    )
    if "maskrcnn" in report["compare"]:
        report["ratio_to_maskrcnn"] = {
            name: fps / report["compare"]["maskrcnn"]
            for name, fps in {"crossvis": report["model_only_fps"], **report["compare"]}.items()
        }
    return report
