"""The Fashion-MNIST study's rows (experiments/fashion_mnist/rows.txt) stay runnable: every
training row composes with the study's evaluation settings, and every evaluation row names a
training row listed before it. A broken row would otherwise surface hours into a study."""

from __future__ import annotations

from pathlib import Path

import pytest

ROWS_FILE = Path(__file__).resolve().parents[1] / "experiments" / "fashion_mnist" / "rows.txt"
#: The settings run_study.sh adds to every training row.
STUDY = ["seed=0", "logger=none", "eval.plots=false", "eval.linear.label_fractions=[0.01,0.1,1.0]"]


def study_rows() -> list[tuple[str, list[str]]]:
    """``(name, overrides)`` of every row, in rows.txt's order (as run_study.sh reads it)."""
    rows = []
    for line in ROWS_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _label, how = (part.strip() for part in line.split("|", 2))
            rows.append((name, how.split()))
    return rows


def test_row_names_are_unique_and_evaluation_rows_follow_their_training_row() -> None:
    names = [name for name, _ in study_rows()]
    assert len(names) == len(set(names)), names
    for index, (name, how) in enumerate(study_rows()):
        if how[:1] == ["eval"]:
            assert how[1] in names[:index], f"{name} evaluates {how[1]}, not a row before it"


TRAINING_ROWS = [row for row in study_rows() if row[1][:1] != ["eval"]]


@pytest.mark.parametrize("name, overrides", TRAINING_ROWS, ids=[name for name, _ in TRAINING_ROWS])
def test_training_row_composes(name: str, overrides: list[str], hydra_run) -> None:
    cfg = hydra_run("train", [*overrides, *STUDY])
    assert cfg.trainer.max_epochs == 10, f"{name}: the study trains 10 epochs"
    assert cfg.data.batch_size == 256, f"{name}: the study's batch is 256"
    if "eval=[knn,linear,finetune]" in overrides:
        assert cfg.eval.finetune.label_fractions == [1.0, 0.1, 0.01]
