"""The error contract of the entry points and the thread setting (in process, fast)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from torch.utils.data import DataLoader, Dataset

import crossvis
from crossvis.checkpoint.training_state import check_categories, read_training_checkpoint
from crossvis.cli import configure_threads, require_file, require_writable_dir, user_errors
from crossvis.conf import CONF_DIR
from crossvis.data.ytvis import load_vis
from crossvis.errors import ConfigError, InputFormatError, UserError, user_message


class _BadFrames(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise InputFormatError(f"/data/frame{index}.jpg: cannot decode the frame (image file is truncated)")


def test_error_from_a_dataloader_worker_is_reported_without_the_worker_traceback() -> None:
    with pytest.raises(InputFormatError) as caught:
        next(iter(DataLoader(_BadFrames(), num_workers=1)))
    assert "DataLoader worker process 0" in str(caught.value)  # what torch re-raises
    assert user_message(caught.value) == "/data/frame0.jpg: cannot decode the frame (image file is truncated)"


def test_user_errors_prints_one_line_and_exits_1(capsys, monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @user_errors
    def entry_point() -> None:
        raise UserError("checkpoint: no such file x.ckpt")

    with pytest.raises(SystemExit) as exit_info:
        entry_point()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: checkpoint: no such file x.ckpt\n"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError):  # the traceback, on request
        entry_point()


def test_bugs_keep_their_traceback() -> None:
    @user_errors
    def entry_point() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        entry_point()


def test_threads_auto_counts_idle_available_cores_minus_workers(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
        assert configure_threads("auto", workers=2) == 4 == torch.get_num_threads()  # 6 cores - 2 workers
        monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 0.0, 0.0))
        assert configure_threads("auto") == 3  # 8 cores, 5 busy
        assert configure_threads("auto", workers=4) == 1  # never below one
        assert configure_threads(2) == 2 == torch.get_num_threads()
        for bad in (0, "all", 1.5, True):
            with pytest.raises(ConfigError, match="threads: expected 'auto' or a positive integer"):
                configure_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_threads_key_of_the_composed_configs() -> None:
    from hydra import compose, initialize_config_dir

    conf = CONF_DIR
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert all(compose(name).threads == "auto" for name in ("train", "evaluate", "demo", "quickstart"))
        assert compose("train", overrides=["threads=3"]).threads == 3
        assert compose("train").checkpoint.every_n_steps == 500
        assert compose("quickstart").checkpoint.every_n_steps == 100


def test_paths_are_checked_before_the_work(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"checkpoint: {tmp_path} is a directory"):
        require_file(tmp_path, "checkpoint", "a .ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint: no such file"):
        require_file(tmp_path / "x.ckpt", "checkpoint", "a .ckpt")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=f"output: cannot create the output folder {tmp_path / 'file' / 'out'}"):
        require_writable_dir(tmp_path / "file" / "out", "output")
    assert require_writable_dir(tmp_path / "new" / "deeper", "output") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", bytes(range(256)) * 20])
def test_a_file_that_is_not_a_checkpoint_is_reported_as_such(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=f"checkpoint: cannot read {path}") as caught:
        read_training_checkpoint(path)
    assert "weights_only" not in str(caught.value)
    torch.save({"state_dict": {}}, path)  # a torch file, but not a training checkpoint
    with pytest.raises(InputFormatError, match=r"has no \['hyper_parameters', 'global_step'\]"):
        read_training_checkpoint(path)


def test_category_mismatch_names_both_lists() -> None:
    check_categories("a.ckpt", ["cat", "dog"], [1, 2], "valid.json", [(1, "cat"), (2, "dog")])
    with pytest.raises(UserError) as caught:
        check_categories("a.ckpt", ["cat", "dog"], [1, 2], "valid.json", [(2, "cat"), (5, "dog")])
    assert str(caught.value) == (
        "checkpoint a.ckpt was trained on other categories than valid.json: checkpoint (id, name) "
        "[(1, 'cat'), (2, 'dog')]; data [(2, 'cat'), (5, 'dog')]. Use a checkpoint trained on this dataset."
    )


def test_directory_given_as_annotation_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: is a directory"):
        load_vis(tmp_path, tmp_path)


@pytest.mark.parametrize("mode", ["RUN", "MULTIRUN"])
def test_user_error_ends_a_run_but_only_the_member_of_a_sweep(capsys, mode: str) -> None:
    @user_errors
    def job() -> None:
        raise ConfigError("data.sampler.T: expected a positive integer or 'inf', got 0")

    conf = CONF_DIR
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        HydraConfig.instance().set_config(compose("train", [f"hydra.mode={mode}"], return_hydra_config=True))
    try:
        # a run exits 1; a sweep member's error goes on to Hydra, which records it and runs the others
        with pytest.raises(SystemExit if mode == "RUN" else ConfigError):
            job()
    finally:
        HydraConfig.instance().cfg = None
    assert capsys.readouterr().err == "error: data.sampler.T: expected a positive integer or 'inf', got 0\n"


@pytest.mark.parametrize("name", crossvis.MOVED_ENTRY_POINTS)
def test_the_entry_module_names_of_0_2_find_the_cli_modules(name: str) -> None:
    old, new = importlib.util.find_spec(f"crossvis.{name}"), importlib.util.find_spec(f"crossvis.cli.{name}")
    assert old.name == f"crossvis.{name}" and old.origin == new.origin


def test_python_m_with_an_entry_module_name_of_0_2_runs_the_cli_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crossvis.analyze", "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m crossvis.cli.analyze")
    unknown = subprocess.run(
        [sys.executable, "-m", "crossvis.no_such_entry_point"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 1 and "No module named crossvis.no_such_entry_point" in unknown.stderr
