"""Run a trained CrossVIS on your own video, folder of frames or stream (Hydra entry point).

    python -m crossvis.cli.demo input=VIDEO_OR_FRAME_DIR_OR_URL checkpoint=CKPT output=OUT.mp4

Writes the overlay video (one colour per track id, class name and score), the results json in
the official YouTube-VIS format and, when asked, per-frame JSON lines and mask PNGs
(:mod:`crossvis.frame_outputs`). Input, checkpoint and output folders are checked (the first
frame decoded) before any work; a failure there writes nothing.

Frames are consumed as the decoder yields them: a container's frame count is often wrong, so it
only sizes the progress bar. If a frame cannot be decoded in the middle of the video, the frames
before it are kept: the outputs cover them and a warning names the frame. ``input=-``, URLs and
capture devices stream through PyAV; ``realtime=true`` drops the frames inference cannot keep up with.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import hydra
from omegaconf import DictConfig

from crossvis.checkpoint.loading import load_checked_module
from crossvis.cli import configure_threads, require_writable_dir, user_errors
from crossvis.data.video_source import open_source
from crossvis.engine.runtime import Runtime
from crossvis.engine.video import run_on_video
from crossvis.frame_outputs import FrameOutputs, require_new_dir
from crossvis.visualize import LiveDisplay


@hydra.main(config_path="pkg://crossvis.conf", config_name="demo", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    configure_threads(cfg.threads)
    runtime = Runtime(cfg.runtime, cfg.model_path)
    output = Path(cfg.output)
    results_path = Path(cfg.results) if cfg.results else output.with_suffix(".json")
    for field, path in (("output", output), ("results", results_path), ("gif", cfg.gif), ("jsonl", cfg.jsonl)):
        if path:
            require_writable_dir(Path(path).parent, field)
    if cfg.masks_dir:
        require_writable_dir(Path(cfg.masks_dir).parent, "masks_dir")
        require_new_dir(cfg.masks_dir, "masks_dir")
    display = LiveDisplay() if cfg.display else contextlib.nullcontext()
    source = open_source(cfg.input, cfg.fps, cfg.input_format, cfg.realtime)
    module = load_checked_module(cfg.checkpoint, cfg.device)
    outputs = FrameOutputs(
        cfg.jsonl, cfg.masks_dir, module.category_ids, module.category_names, lambda: source.last_timestamp
    )
    with display, outputs:
        results = run_on_video(
            module,
            source,
            output,
            results_path,
            cfg.gif,
            cfg.min_score,
            cfg.inference,
            runtime,
            sinks=[outputs],
            show=display.show if cfg.display else None,
        )
    print(f"{len(results)} tracks over {source.frames_read} frames → {output}, {results_path}")
    if cfg.realtime:
        print(f"realtime: {source.frames_read} frames processed, {source.frames_dropped} dropped")


if __name__ == "__main__":
    main()
