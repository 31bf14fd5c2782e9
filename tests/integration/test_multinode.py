"""Multi-node training: two "nodes" of one process each on this machine (Lightning's environment
variables, gloo) train together and compute the gradients of one process on the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL

# crossvis.cli.train with a callback that saves the gradients of the first step (after DDP's all-reduce)
# and keeps BatchNorm layers on their running statistics: train-mode BatchNorm normalises over each
# process's own batch (as in the paper's multi-GPU training, no SyncBN), which no other layer does.
SAVE_GRADIENTS = """
import os, torch
import pytorch_lightning as pl
from torch.nn.modules.batchnorm import _BatchNorm

class SaveGradients(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, *args):
        for module in pl_module.modules():
            if isinstance(module, _BatchNorm):
                module.eval()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}
        torch.save(grads, f"{os.environ['GRADS_OUT']}.rank{trainer.global_rank}.pt")

class Trainer(pl.Trainer):
    def __init__(self, *args, callbacks=(), **kwargs):
        super().__init__(*args, callbacks=[*callbacks, SaveGradients()], **kwargs)

pl.Trainer = Trainer
import runpy
runpy.run_module("crossvis.cli.train", run_name="__main__", alter_sys=True)
"""


def _static_copy(root: Path, dst: Path) -> Path:
    """``root`` with every training video turned into copies of the first frame of its first video.

    Every frame then has the same positives, so the losses normalised by each process's own count
    (CondInst's dice mean, L_id with its default local normaliser, as in AdelaiDet and the fork) have
    equal normalisers on both ranks, and their mean over ranks is the one-process value: every
    gradient must then agree, not only those of the losses with rank-shared normalisers.
    """
    shutil.copytree(root, dst)
    data = json.loads((root / "train.json").read_text())
    first = data["videos"][0]
    instances = [a for a in data["annotations"] if a["video_id"] == first["id"]]
    videos, annotations = [], []
    for video in data["videos"]:
        videos.append({**video, "file_names": [first["file_names"][0]] * video["length"]})
        for instance in instances:
            per_frame = {key: [instance[key][0]] * video["length"] for key in ("segmentations", "bboxes", "areas")}
            annotations.append({**instance, **per_frame, "id": len(annotations) + 1, "video_id": video["id"]})
    (dst / "train.json").write_text(json.dumps({**data, "videos": videos, "annotations": annotations}))
    return dst


def _args(root: Path, run_dir: Path, pairs_per_process: int, *extra: str) -> list[str]:
    return [
        "data=synthetic",
        f"data.root={root}",
        f"hydra.run.dir={run_dir}",
        "logger=none",
        *TINY_MODEL,
        "model.crossover.enabled=false",  # its random choice of a positive differs per process
        "data.transform.short=64",
        "data.transform.max_size=96",
        "data.transform.flip_prob=0",  # a flip could move a box across a location and change the counts
        f"data.batch_size={pairs_per_process}",
        "data.num_workers=0",
        "trainer.enable_progress_bar=false",
        "trainer.limit_val_batches=0",
        "trainer.max_steps=1",
        "threads=1",
        *extra,
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_compute_the_gradients_of_one_process_on_the_same_global_batch(tiny_root, tmp_path):
    root = _static_copy(tiny_root, tmp_path / "data")
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    env = {**os.environ, "GRADS_OUT": str(single)}
    subprocess.run([sys.executable, "-c", SAVE_GRADIENTS, *_args(root, single, 4)], env=env, check=True, timeout=600)
    cluster = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    multi = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVE_GRADIENTS, *_args(root, nodes / f"node{rank}", 2, *multi)],
            env={**os.environ, **cluster, "NODE_RANK": str(rank), "GRADS_OUT": str(nodes)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(out[-3000:] for out in outputs)
    assert "distributed_backend=gloo" in outputs[0] and "All distributed processes registered" in outputs[0]
    reference = torch.load(f"{single}.rank0.pt")
    ranks = [torch.load(f"{nodes}.rank{rank}.pt") for rank in (0, 1)]
    assert reference.keys() == ranks[0].keys() == ranks[1].keys() and len(reference) > 50
    assert any(name.startswith("model.mask_branch.") for name in reference)  # the dice loss's own layers
    for name, grad in reference.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP: every rank holds the averaged gradient
        torch.testing.assert_close(ranks[0][name], grad, rtol=1e-4, atol=1e-7, msg=name)
