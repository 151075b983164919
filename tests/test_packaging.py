"""The configs ship inside the wheel: an installed sslkit composes presets from any directory."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_configs_and_runs_from_unrelated_directory(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(REPO),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("sslkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sslkit/conf/train.yaml" in names
    assert "sslkit/conf/experiment/simclr_resnet18_fashion_mnist.yaml" in names

    # A fresh venv that sees this environment's dependencies but not its editable sslkit
    # (a path added by a .pth file does not have its own .pth files processed).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    (purelib,) = env_dir.glob("lib/python*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(purelib),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [
            str(python),
            "-m",
            "sslkit.train",
            "experiment=simclr_resnet18_fashion_mnist",
            "--cfg",
            "job",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "task_name: simclr_resnet18_fashion_mnist" in done.stdout
    located = subprocess.run(
        [str(python), "-c", "import sslkit.config as c; print(c.config_dir())"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert located.stdout.strip() == str(purelib / "sslkit" / "conf")
