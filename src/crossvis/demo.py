"""Run a trained CrossVIS on your own video or folder of frames (Hydra entry point).

    python -m crossvis.demo input=VIDEO_OR_FRAME_DIR checkpoint=CKPT output=OUT.mp4

Writes the overlay video (one colour per track id, class name and score) and the results json in
the official YouTube-VIS format. Input, checkpoint and output folder are checked (the first
frame decoded) before any work; a failure there writes nothing.

Frames are consumed as the decoder yields them: a container's frame count is often wrong, so it
only sizes the progress bar. If a frame cannot be decoded in the middle of the video, the frames
before it are kept: both outputs cover them and a warning names the frame.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from crossvis.cli import configure_threads, require_writable_dir, user_errors
from crossvis.inference import run_on_video
from crossvis.loading import load_checked_module
from crossvis.video_io import FrameSource


@hydra.main(config_path="../../conf", config_name="demo", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    configure_threads(cfg.threads)
    source = FrameSource(cfg.input, cfg.fps)
    output = Path(cfg.output)
    results_path = Path(cfg.results) if cfg.results else output.with_suffix(".json")
    for field, path in (("output", output), ("results", results_path), ("gif", cfg.gif)):
        if path:
            require_writable_dir(Path(path).parent, field)
    module = load_checked_module(cfg.checkpoint, cfg.device)
    results = run_on_video(module, source, output, results_path, cfg.gif, cfg.min_score, cfg.inference)
    print(f"{len(results)} tracks over {source.frames_read} frames → {output}, {results_path}")


if __name__ == "__main__":
    main()
