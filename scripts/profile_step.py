"""Where a training step of the CPU recipe goes: share of data, backbone, heads, losses, backward, optimizer.

One process's step as `make demo` runs it (data.batch_size pairs, one thread), CPU time, medians:

    python scripts/profile_step.py DATA_ROOT [hydra overrides of conf/quickstart.yaml ...]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from crossvis.conf import CONF_DIR
from crossvis.data.datamodule import VISDataModule, collate_pairs
from crossvis.engine.lightning_module import build_model

STEPS = 8  # the first 2 are warm-up


def _time_forward(modules: list[nn.Module], seconds: dict[str, float], name: str) -> None:
    """Add the CPU time of each forward call of ``modules`` to ``seconds[name]``."""
    start: dict[str, float] = {}

    def before(*_):
        start["t"] = time.process_time()

    def after(*_):
        seconds[name] = seconds.get(name, 0.0) + time.process_time() - start["t"]

    for module in modules:
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def profile(data_root: str, overrides: list[str]) -> dict[str, float]:
    """Median CPU seconds per stage of a training step."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("quickstart", overrides=[f"data.root={data_root}", *overrides])
    datamodule = VISDataModule(cfg.data, int(cfg.seed))
    datamodule.setup("fit")
    dataset = datamodule.train_dataset
    model = build_model(cfg.model, datamodule.num_classes, datamodule.num_identities).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dense: dict[str, float] = {}
    _time_forward([model.features.backbone], dense, "backbone")
    heads = [model.features.fpn, model.head, model.mask_branch, model.embedding]
    _time_forward([m for m in heads if m is not None], dense, "heads")
    steps = []
    for step in range(STEPS):
        dense.clear()
        t0 = time.process_time()
        indices = np.random.default_rng(step).integers(len(dataset), size=int(cfg.data.batch_size))
        batch = collate_pairs([dataset[(int(i), 0)] for i in indices])
        t1 = time.process_time()
        losses = model.forward_train(batch["images"], batch["image_sizes"], batch["targets"])
        t2 = time.process_time()
        optimizer.zero_grad()
        sum(losses.values()).backward()
        t3 = time.process_time()
        optimizer.step()
        t4 = time.process_time()
        steps.append(
            {
                "data (load, resize, flip, collate)": t1 - t0,
                "forward: backbone": dense["backbone"],
                "forward: FPN, FCOS head, mask branch, embedding head": dense["heads"],
                "forward: targets, dynamic mask head, crossover, losses": t2 - t1 - dense["backbone"] - dense["heads"],
                "backward": t3 - t2,
                "optimizer": t4 - t3,
            }
        )
    return {stage: statistics.median(s[stage] for s in steps[2:]) for stage in steps[0]}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    seconds = profile(sys.argv[1], sys.argv[2:])
    total = sum(seconds.values())
    print("| stage | share |\n|---|---|")
    for stage, value in seconds.items():
        print(f"| {stage} | {100 * value / total:.1f} % |")
    print(f"one step: {1000 * total:.0f} ms CPU")


if __name__ == "__main__":
    main()
