"""Outputs are written whole or not at all, with the permissions of any other output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from sslkit.run.files import atomic_write, set_aside, write_json_atomic
from sslkit.run.resume import AtomicCheckpointIO


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        results = write_json_atomic(tmp_path / "results.json", {"metrics": {}})
        checkpoint = tmp_path / "last.ckpt"
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, checkpoint)
    finally:
        os.umask(old)
    for path in (results, checkpoint):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_an_interrupted_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, path)

    def fail_halfway(handle) -> None:
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail_halfway)
    assert torch.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left"


def test_set_aside_keeps_the_suffix_and_never_overwrites(tmp_path: Path) -> None:
    for _ in range(2):
        (tmp_path / "results.json").write_text("{}")
        set_aside(tmp_path / "results.json", "abc")
    (tmp_path / "checkpoints").mkdir()
    set_aside(tmp_path / "checkpoints", "abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints.abc",
        "results.abc.1.json",
        "results.abc.json",
    ]
