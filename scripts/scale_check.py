"""Data at scale: a YouTube-VIS-2019-sized training split and what the data pipeline costs on it.

    python scripts/scale_check.py --out /tmp/ytvis19_scale [--batches 100 | --batches 0] [--workers 4]

Writes ``train.json`` with the size of YouTube-VIS 2019 train (2238 videos of 1280x720, 61.9k
frames, 3774 tracks of 40 categories, uncompressed-RLE masks as in the real file) and one real
1280x720 JPEG that every frame path links to (so that frames exist and decode without 61.9k
files' worth of disk). Then measures, each in a fresh process:

- ``crossvis.data.check --no-decode``: wall time and peak resident memory;
- the data module's ``setup("fit")`` with the paper's data config (``data=ytvis19``): time and peak memory;
- the training loader with ``--workers`` workers: pairs/s and each worker's memory from
  ``/proc/<pid>/smaps_rollup`` after the first 10 batches and after ``--batches`` (0: the whole
  epoch, with a reading at each quarter of it): PSS, private
  (Private_Clean + Private_Dirty) and shared (Shared_Clean + Shared_Dirty). Copy-on-write of the
  parent's dataset index moves pages from shared to private; the worker's own buffers (decoded
  frames) add private pages without taking shared ones.

Prints one JSON object with the figures (the last line).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from crossvis.conf import CONF_DIR

VIDEOS, FRAMES, TRACKS, CATEGORIES, HEIGHT, WIDTH = 2238, 61845, 3774, 40, 720, 1280


def _rectangle_rle(x0: int, y0: int, w: int, h: int) -> list[int]:
    """Uncompressed (column-major) RLE counts of a w x h rectangle at (x0, y0) in a HEIGHT x WIDTH frame."""
    gap = HEIGHT - h
    return [x0 * HEIGHT + y0, *([h, gap] * (w - 1)), h, HEIGHT * WIDTH - (x0 + w - 1) * HEIGHT - y0 - h]


def write_split(out: Path, seed: int = 0) -> Path:
    """The json and the frame links; returns the json path."""
    rng = np.random.default_rng(seed)
    lengths = rng.multinomial(FRAMES - 5 * VIDEOS, np.full(VIDEOS, 1 / VIDEOS)) + 5  # >= 5 frames a video
    tracks = np.bincount(rng.integers(0, VIDEOS, TRACKS - VIDEOS), minlength=VIDEOS) + 1  # >= 1 track a video
    image = out / "frame.jpg"
    out.mkdir(parents=True, exist_ok=True)
    texture = rng.integers(0, 255, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    cv2.imwrite(str(image), cv2.resize(texture, (WIDTH, HEIGHT)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    videos, annotations = [], []
    for v, (length, count) in enumerate(zip(lengths.tolist(), tracks.tolist()), start=1):
        folder = f"video_{v:05d}"
        (out / "train" / "JPEGImages" / folder).mkdir(parents=True, exist_ok=True)
        names = [f"{folder}/{i:05d}.jpg" for i in range(length)]
        for name in names:
            link = out / "train" / "JPEGImages" / name
            if not link.is_symlink():
                link.symlink_to(image)
        videos.append({"id": v, "width": WIDTH, "height": HEIGHT, "length": length, "file_names": names})
        for _ in range(count):
            w, h = int(rng.integers(60, 315)), int(rng.integers(60, 400))
            x, y = int(rng.integers(0, WIDTH - w - 40)), int(rng.integers(0, HEIGHT - h))
            first, last = int(rng.integers(0, length // 4 + 1)), int(rng.integers(3 * length // 4, length))
            segs, boxes, areas = [], [], []
            for t in range(length):
                present = first <= t <= last
                dx = t - first
                segs.append({"counts": _rectangle_rle(x + dx, y, w, h), "size": [HEIGHT, WIDTH]} if present else None)
                boxes.append([x + dx, y, w, h] if present else None)
                areas.append(w * h if present else None)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": v,
                    "category_id": int(rng.integers(1, CATEGORIES + 1)),
                    "iscrowd": 0,
                    "height": HEIGHT,
                    "width": WIDTH,
                    "length": 1,
                    "segmentations": segs,
                    "bboxes": boxes,
                    "areas": areas,
                }
            )
    categories = [{"id": c, "name": f"category_{c}", "supercategory": "object"} for c in range(1, CATEGORIES + 1)]
    path = out / "train.json"
    path.write_text(json.dumps({"videos": videos, "categories": categories, "annotations": annotations}))
    return path


def _measure(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter (its last stdout line is a JSON object); adds the wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


CHECK = """
import json, resource, sys, time
from crossvis.data.check import main
start = time.perf_counter()
main([sys.argv[1], sys.argv[2], "--no-decode"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"check_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak)}))
"""

LOADER = """
import json, resource, sys, time
from hydra import compose, initialize_config_dir
from crossvis.data.datamodule import VISDataModule

def memory_mb(pid):  # PSS, private (copied or its own) and shared (still the parent's pages), MB
    fields = dict(line.split()[:2] for line in open(f"/proc/{pid}/smaps_rollup") if line.count(" ") > 1)
    kb = lambda *keys: round(sum(int(fields.get(k + ":", 0)) for k in keys) / 1024, 1)
    return {"pss": kb("Pss"), "private": kb("Private_Clean", "Private_Dirty"), "shared": kb("Shared_Clean", "Shared_Dirty")}

conf, root, workers, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = compose("train", overrides=["data=ytvis19", f"data.root={root}", f"data.num_workers={workers}", "data.val.json=null"])
start = time.perf_counter()
dm = VISDataModule(cfg.data, seed=0)
dm.setup("fit")
setup_s = time.perf_counter() - start
setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
loader = dm.train_dataloader()
batches = batches or len(loader)
readings = {10, batches, *([len(loader) * q // 4 for q in (1, 2, 3)] if batches == len(loader) else [])}
it = iter(loader)
pids = [w.pid for w in it._workers]
memory, pairs, t0 = {}, 0, None
for b in range(1, batches + 1):
    pairs += len(next(it)["meta"])
    if b in readings:
        memory[f"after_{b}"] = [memory_mb(p) for p in pids]
    if b == 10:
        t0, pairs = time.perf_counter(), 0
growth = [{k: round(b[k] - a[k], 1) for k in a} for a, b in zip(memory["after_10"], memory[f"after_{batches}"])]
print(json.dumps({"setup_s": round(setup_s, 2), "setup_peak_rss_mb": round(setup_peak), "pairs_per_s": round(pairs / (time.perf_counter() - t0), 2),
                  "worker_memory_mb": memory,
                  "worker_growth_mb": growth, "pairs": len(dm.train_dataset)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=100, help="0: the whole epoch")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    json_path = args.out / "train.json"
    if not json_path.is_file():
        write_split(args.out)
    figures = {"json_mb": round(json_path.stat().st_size / 2**20)}
    figures["check_no_decode"] = _measure(CHECK, str(json_path), str(args.out / "train" / "JPEGImages"))
    conf = str(CONF_DIR)
    figures["loader"] = _measure(LOADER, conf, str(args.out), str(args.workers), str(args.batches))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
