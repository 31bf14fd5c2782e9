"""Export a checkpoint's per-frame network to ONNX (Hydra entry point).

    python -m crossvis.cli.export checkpoint=CKPT output=model.onnx [inference.detection.max_detections=N]

The graph takes a resized frame (float32 [3, height, width], RGB 0..255, any height and width)
and returns boxes, scores, labels, stride-4 mask probabilities and identity embeddings
(:func:`crossvis.engine.runtime.export_onnx`); ``crossvis.cli.demo``, ``evaluate`` and ``benchmark`` run it
with ``runtime=onnxruntime model_path=model.onnx``. The file appears only when the export succeeds.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from crossvis.checkpoint.loading import load_checked_module
from crossvis.cli import require_writable_dir, user_errors
from crossvis.engine.inference import frame_settings, with_overrides
from crossvis.engine.runtime import export_onnx


@hydra.main(config_path="pkg://crossvis.conf", config_name="export", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    output = Path(cfg.output)
    require_writable_dir(output.parent, "output")
    module = load_checked_module(cfg.checkpoint, "cpu")
    settings = frame_settings(with_overrides(module.cfg.inference, cfg.inference))
    metadata = export_onnx(module.model, output, settings.detection, int(cfg.opset))
    print(f"Wrote {output} (opset {cfg.opset}; graph settings {metadata['detection']})")


if __name__ == "__main__":
    main()
