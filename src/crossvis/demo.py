"""Run a trained CrossVIS on your own video or folder of frames (Hydra entry point).

    python -m crossvis.demo input=VIDEO_OR_FRAME_DIR checkpoint=CKPT output=OUT.mp4

Writes the overlay video (one colour per track id, class name and score) and the results json in
the official YouTube-VIS format. A missing or unreadable input fails before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import hydra
import imageio.v2 as imageio
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from crossvis.data.transforms import load_frame_rgb
from crossvis.evaluate import load_module
from crossvis.evaluation.results import write_results_json
from crossvis.lightning_module import CrossVISModule
from crossvis.visualize import OverlayVideoWriter, draw_tracks

FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class FrameSource:
    """Frames of an mp4 (or anything ffmpeg reads) or of a folder of images, read lazily."""

    def __init__(self, path: str | Path, folder_fps: float) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"input: {self.path} does not exist (expected a video file or a folder of frames)")
        if self.path.is_dir():
            self.frame_paths = sorted(p for p in self.path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not self.frame_paths:
                raise ValueError(f"input: folder {self.path} holds no frames ({', '.join(sorted(FRAME_SUFFIXES))})")
            self.num_frames, self.fps = len(self.frame_paths), folder_fps
            return
        try:
            reader = imageio.get_reader(self.path, format="FFMPEG")
            meta = reader.get_meta_data()
            self.num_frames = reader.count_frames()
            reader.close()
        except Exception as error:  # imageio raises several types for unreadable files
            raise ValueError(f"input: cannot read {self.path} as a video: {error}") from error
        if self.num_frames == 0:
            raise ValueError(f"input: video {self.path} has no frames")
        self.fps = float(meta.get("fps") or folder_fps)
        self.frame_paths = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.frame_paths is not None:
            yield from (load_frame_rgb(p) for p in self.frame_paths)
            return
        with imageio.get_reader(self.path, format="FFMPEG") as reader:
            for frame in reader:
                yield np.ascontiguousarray(frame[..., :3])


def run_on_video(
    module: CrossVISModule,
    source: FrameSource,
    output: str | Path,
    results_path: str | Path,
    gif: str | Path | None = None,
    min_score: float = 0.0,
) -> list[dict]:
    """Online inference over ``source``; writes the overlay video and the results json."""
    inference = module.video_inference()
    with OverlayVideoWriter(output, source.fps, gif) as writer, tqdm(total=source.num_frames, desc="frames") as bar:

        def on_frame(index: int, frame: np.ndarray, detections: dict, track_ids: np.ndarray) -> None:
            writer.append(draw_tracks(frame, detections, track_ids, module.category_names, min_score))
            bar.update()

        results = inference.run_frames(1, iter(source), source.num_frames, on_frame=on_frame)
    write_results_json(results_path, results)
    return results


@hydra.main(config_path="../../conf", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    source = FrameSource(cfg.input, cfg.fps)
    module = load_module(cfg.checkpoint, cfg.device, OmegaConf.to_container(cfg.tracker))
    output = Path(cfg.output)
    results_path = Path(cfg.results) if cfg.results else output.with_suffix(".json")
    results = run_on_video(module, source, output, results_path, cfg.gif, cfg.min_score)
    print(f"{len(results)} tracks over {source.num_frames} frames → {output}, {results_path}")


if __name__ == "__main__":
    main()
