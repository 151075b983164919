"""Bad inputs a user can give, one row each: the command's exit status, a message that names the
problem and the fix, and every output written before (results, checkpoints) still there.

The commands run through their ``main`` in this process (``run_in_process`` in conftest.py: the
exit status and output the console script gives, without a new interpreter's 6 s of imports);
test_cli.py runs the console scripts as real processes."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from sslkit.run.failures import FAILED_FILE
from tests.conftest import BIN, TINY

#: The settings of conftest's ``tiny_run`` (its baselines aside, which do not change the config
#: hash): a rerun with these resumes it.
RUN = [*TINY, "baselines=[]", "trainer.max_epochs=2"]
#: The same run settings for a dataset other than the synthetic one.
ANY_DATA = [o for o in RUN if not o.startswith(("data=", "data.source."))]
TRAIN, EVAL = BIN / "sslkit-train", BIN / "sslkit-eval"


def outputs(root: Path) -> set[str]:
    """Content hashes of the results and checkpoints below ``root`` (renaming keeps them)."""
    files = [*root.rglob("*.ckpt*"), *root.rglob("results*.json")]
    return {hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def image_folder(root: Path, classes: dict[str, int], corrupt: int = 0) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (20, 20), color=(40 * i, 9 * len(name), 0)).save(
                root / name / f"{i}.png"
            )
    for i in range(corrupt):
        (root / next(iter(classes)) / f"broken{i}.png").write_bytes(b"\x89PNG cut short")
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@dataclass
class Case:
    """A bad input: ``prepare(case dir, trained run copy) -> command``; expected exit status and
    message fragments (the problem and the fix); ``check(case dir, output, run)`` looks at the
    folder afterwards (``run`` runs another command)."""

    prepare: Callable[[Path, Path], list]
    status: int
    says: tuple[str, ...]
    check: Callable[[Path, str, Callable], None] | None = None


def _other_config_fails(tmp: Path, run: Path) -> list:
    return [TRAIN, *RUN, "data.batch_size=1000", f"hydra.run.dir={run}"]


def _no_stale_results(tmp: Path, output: str, run_command: Callable) -> None:
    run = tmp / "run"
    assert not (run / "results.json").exists(), "no results.json next to the new config"
    failed = json.loads((run / FAILED_FILE).read_text())
    assert failed["error"].startswith("ValueError: The synthetic train split has 128 images")
    kept = [p.name.split(".")[1] for p in run.glob("results.*.json")]
    assert kept == [p.name.split(".")[1] for p in tmp.glob("run/checkpoints.*")], (
        "the earlier results are kept aside under the tag of their checkpoints"
    )
    report = run_command([sys.executable, "-m", "sslkit.report", run], cwd=tmp)
    assert report.returncode == 0, report.stderr
    assert "Failed jobs (1):" in report.stdout and "knn/top1@5" not in report.stdout


def _other_config_succeeds(tmp: Path, run: Path) -> list:
    return [TRAIN, *RUN, "method.temperature=0.2", f"hydra.run.dir={run}"]


def _results_of_the_new_config(tmp: Path, output: str, run_command: Callable) -> None:
    run = tmp / "run"
    assert json.loads((run / "results.json").read_text())["config"]["method"]["temperature"] == 0.2
    (kept,) = run.glob("results.*.json")
    assert json.loads(kept.read_text())["config"]["method"]["temperature"] != 0.2
    assert (tmp / "run" / f"checkpoints.{kept.name.split('.')[1]}").is_dir()


def _single_class(tmp: Path, run: Path) -> list:
    root = image_folder(tmp / "one_class", {"cat": 6})
    return [
        TRAIN,
        *ANY_DATA,
        "data=imagefolder",
        f"data.source.root={root}",
        f"hydra.run.dir={run}",
    ]


def _diverging(tmp: Path, run: Path) -> list:
    return [TRAIN, *RUN, "trainer.max_epochs=1", "optim.lr=1e8", f"hydra.run.dir={tmp / 'new'}"]


def _diverged_checkpoints_kept(tmp: Path, output: str, run_command: Callable) -> None:
    assert (tmp / "new" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp / "new" / FAILED_FILE).is_file() and not (tmp / "new" / "results.json").exists()


def _sweep_all_fail(tmp: Path, run: Path) -> list:
    return [TRAIN, "-m", *RUN, "data.batch_size=500,1000", f"hydra.sweep.dir={tmp / 'sweep'}"]


def _partial_fashion_mnist(tmp: Path, run: Path) -> list:
    root = tmp / "fmnist"
    root.mkdir()
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x00" * 16)
    return [
        TRAIN,
        *ANY_DATA,
        "data=fashion_mnist",
        f"data.source.root={root}",
        f"hydra.run.dir={run}",
    ]


def _eval_truncated(tmp: Path, run: Path) -> list:
    ckpt = run / "checkpoints" / "epoch001.ckpt"
    truncate(ckpt)
    return [EVAL, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp / 'eval'}"]


def _eval_not_a_checkpoint(tmp: Path, run: Path) -> list:
    notes = tmp / "notes.ckpt"
    notes.write_text("not a checkpoint")
    return [EVAL, f"ckpt_path={notes}", f"hydra.run.dir={tmp / 'eval'}"]


def _corrupt_images_in_workers(tmp: Path, run: Path) -> list:
    train = image_folder(tmp / "train", {"cat": 4, "dog": 4}, corrupt=2)
    test = image_folder(tmp / "test", {"cat": 2, "dog": 2})
    return [
        TRAIN,
        *ANY_DATA,
        "data=imagefolder",
        f"data.source.root={train}",
        f"data.source.test_root={test}",
        "data.source.image_size=16",
        "data.batch_size=4",
        "data.num_workers=2",
        f"hydra.run.dir={run}",
    ]


def _gpu_preset(tmp: Path, run: Path) -> list:
    return [TRAIN, "experiment=simclr_resnet18_cifar10", f"hydra.run.dir={run}"]


def _key_typo(tmp: Path, run: Path) -> list:
    return [TRAIN, *RUN, "method.temprature=0.2", f"hydra.run.dir={run}"]


def _damaged_last(tmp: Path, run: Path) -> list:
    truncate(run / "checkpoints" / "last.ckpt")
    return [TRAIN, *RUN, f"hydra.run.dir={run}"]


def _resumed_from_intact(tmp: Path, output: str, run_command: Callable) -> None:
    checkpoints = tmp / "run" / "checkpoints"
    assert f"resuming from the newest intact checkpoint {checkpoints / 'epoch001.ckpt'}" in output
    assert (checkpoints / "last.damaged.ckpt").is_file()
    assert not list(tmp.glob("run/checkpoints.*")), "the run was not started over"
    assert json.loads((tmp / "run" / "results.json").read_text())["metrics"]


def _corrupt_results(tmp: Path, run: Path) -> list:
    (tmp / "broken").mkdir()
    (tmp / "broken" / "results.json").write_text('{"metrics": {"knn/top1@5": 0.')
    return [sys.executable, "-m", "sslkit.report", tmp, "--out", tmp / "report"]


def _report_lists_the_rest(tmp: Path, output: str, run_command: Callable) -> None:
    assert "| seeds | knn/top1@5 |" in output and "| 0 |" in output


CASES = {
    # A failed run into a folder with earlier results: no stale results.json, a failure marker.
    "failed rerun with another config": Case(
        _other_config_fails,
        1,
        ("fewer than data.batch_size=1000", "Set data.batch_size"),
        _no_stale_results,
    ),
    # A successful rerun with another config: the earlier results are kept beside its checkpoints.
    "rerun with another config": Case(
        _other_config_succeeds,
        0,
        ("not resuming from", "are kept as results."),
        _results_of_the_new_config,
    ),
    "trainer.max_epochs=0": Case(
        lambda tmp, run: [TRAIN, *RUN, "trainer.max_epochs=0", f"hydra.run.dir={run}"],
        1,
        ("trainer.max_epochs=0 trains nothing", "Set trainer.max_epochs to at least 1"),
    ),
    "single-class image folder": Case(
        _single_class, 1, ("images of 1 class only (cat)", "Add images of at least one more class")
    ),
    "non-finite weights after the last epoch": Case(
        _diverging,
        1,
        ("non-finite values in", "Lower the learning rate (optim.lr)"),
        _diverged_checkpoints_kept,
    ),
    "multirun whose every job fails": Case(
        _sweep_all_fail, 1, ("all 2 job(s) of the sweep failed", "failed.json")
    ),
    "Fashion-MNIST root with some of the files": Case(
        _partial_fashion_mnist,
        1,
        ("holds 1 of the 4 Fashion-MNIST files", "Copy the missing files there"),
    ),
    "sslkit-eval on a truncated checkpoint": Case(
        _eval_truncated, 1, ("cannot be read as a checkpoint", "Pass an intact one")
    ),
    "sslkit-eval on a checkpoint that does not exist": Case(
        lambda tmp, run: [EVAL, f"ckpt_path={tmp / 'none.ckpt'}", f"hydra.run.dir={tmp / 'e'}"],
        1,
        ("none.ckpt", "does not exist"),
    ),
    "sslkit-eval on a file that is no checkpoint": Case(
        _eval_not_a_checkpoint, 1, ("notes.ckpt cannot be read as a checkpoint", "Pass an intact")
    ),
    "corrupt images read in DataLoader workers": Case(
        _corrupt_images_in_workers,
        1,
        ("error: Cannot read image", "broken0.png", "broken1.png", "Remove or replace these"),
    ),
    "GPU preset on a machine without a GPU": Case(
        _gpu_preset, 1, ("has no CUDA GPU", "add trainer=cpu")
    ),
    "misspelt key": Case(
        _key_typo, 1, ("method.temprature is not a setting", "did you mean method.temperature?")
    ),
    "truncated last.ckpt beside an intact epoch checkpoint": Case(
        _damaged_last, 0, ("cannot be read as a checkpoint",), _resumed_from_intact
    ),
    "corrupt results.json among runs": Case(
        _corrupt_results, 0, ("unreadable results.json",), _report_lists_the_rest
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tiny_run, tmp_path: Path, run_in_process) -> None:
    case = CASES[name]
    if name.startswith("GPU") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = tiny_run.copy(tmp_path / "run")
    command = case.prepare(tmp_path, run)
    before = outputs(tmp_path)
    done = run_in_process(command, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == case.status, output[-3000:]
    for fragment in case.says:
        assert fragment in output, output[-3000:]
    if case.status:
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "DataLoader worker process" not in done.stderr
    assert before <= outputs(tmp_path), "an earlier result or checkpoint was lost"
    if case.check:
        case.check(tmp_path, output, run_in_process)
