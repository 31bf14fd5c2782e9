"""Speed benchmark: the paper's FPS protocol (Table 5) and the end-to-end online cost (Hydra entry point; the protocol: :mod:`crossvis.engine.benchmark`).

    python -m crossvis.benchmark [checkpoint=CKPT] [input.path=VIDEO_OR_DIR] [compare=[maskrcnn,condinst]]
    python -m crossvis.benchmark 'runtimes=[eager,onnxruntime,compile]'   # the runtimes, same protocol

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from crossvis.checkpoint.loading import load_module
from crossvis.cli import user_errors
from crossvis.engine.benchmark import benchmark, format_report


@hydra.main(config_path="pkg://crossvis.conf", config_name="benchmark", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    report = benchmark(cfg, load_module)
    print(format_report(report))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
