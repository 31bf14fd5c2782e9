"""The built wheel carries its configs: installed where the source tree is not importable, its entry points
compose from ``pkg://crossvis.conf`` and take a user's ``--config-dir``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the project, installed (without dependencies) into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work), str(source)], check=True)
    (wheel,) = work.glob("crossvis-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("crossvis/conf/train.yaml", "crossvis/conf/data/_video.yaml", "crossvis/conf/experiment/table6.yaml"):
        assert name in names, name
    assert any(name.endswith("licenses/LICENSE") for name in names)
    target = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def _run(installed: Path, cwd: Path, *command: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_installed_wheel_imports_from_its_own_folder(installed: Path, tmp_path: Path) -> None:
    out = _run(
        installed, tmp_path, sys.executable, "-c", "import crossvis, crossvis.conf; print(crossvis.conf.CONF_DIR)"
    )
    assert Path(out.strip()) == installed / "crossvis" / "conf"


def test_a_console_script_of_the_wheel_composes_the_packaged_configs_from_another_directory(
    installed: Path, tmp_path: Path
) -> None:
    out = _run(
        installed,
        tmp_path,
        str(installed / "bin" / "crossvis-train"),
        "--cfg",
        "job",
        "--resolve",
        "experiment=table6",
        "coco_init=c.pth",
    )
    assert "table: table6" in out and "validate_on: holdout" in out and "init_from: c.pth" in out


def test_a_user_config_dir_adds_options_to_the_packaged_groups(installed: Path, tmp_path: Path) -> None:
    own = tmp_path / "my_conf" / "data"
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text(
        "defaults:\n  - _video\n  - _self_\n\nname: mine\nroot: /data/mine\ntrain:\n  json: ${..root}/t.json\n  images: ${..root}/t\nval:\n  json: ${..root}/v.json\n  images: ${..root}/v\n"
    )
    out = _run(
        installed,
        tmp_path,
        sys.executable,
        "-m",
        "crossvis.cli.train",
        "--config-dir",
        str(tmp_path / "my_conf"),
        "--cfg",
        "job",
        "data=mine",
    )
    assert "name: mine" in out and "holdout_every: 10" in out  # the packaged base, merged into the user's option
