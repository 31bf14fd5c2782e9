"""Multi-node training: two "nodes" of one process each on this machine (Lightning's environment
variables, gloo) train together and compute the gradients of one process on the same global batch
wherever the loss is normalised by counts shared across ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL

# crossvis.train with a callback that saves the gradients of the first step (after DDP's all-reduce)
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
runpy.run_module("crossvis.train", run_name="__main__", alter_sys=True)
"""


# FCOS classification, box and centerness losses and the identity loss divide by positive counts
# averaged over ranks: their own layers get one process's gradient. CondInst's dice loss is a mean
# over each process's own positives (as in AdelaiDet), so the mask branch, the controller and the
# trunk below them get the mean of per-process means instead, which is not asserted here.
SHARED_NORMALISER = ("head.cls_tower.", "head.cls_logits.", "head.box_pred.", "head.ctr_pred.", "head.scales.")
SHARED_NORMALISER += ("embedding.", "identity_loss.")


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
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    env = {**os.environ, "GRADS_OUT": str(single)}
    subprocess.run(
        [sys.executable, "-c", SAVE_GRADIENTS, *_args(tiny_root, single, 4)], env=env, check=True, timeout=600
    )
    cluster = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    multi = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVE_GRADIENTS, *_args(tiny_root, nodes / f"node{rank}", 2, *multi)],
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
    compared = [name for name in reference if name.removeprefix("model.").startswith(SHARED_NORMALISER)]
    assert len(compared) >= 10
    for name, grad in reference.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP: every rank holds the averaged gradient
        if name in compared:
            torch.testing.assert_close(ranks[0][name], grad, rtol=1e-4, atol=1e-7, msg=name)
