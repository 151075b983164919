"""sslkit-report groups runs by config, averages over seeds and lists failed jobs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sslkit.report import load_runs, main, plot_metric, summarise, to_markdown, write_csv


def write_run(
    folder: Path, *, seed: int, temperature: float, top1: float | None, lr: float = 0.3
) -> None:
    """A run folder as sslkit-train leaves it: results.json, or failed.json when top1 is None."""
    config = {
        "seed": seed,
        "resume": True,
        "method": {"_target_": "sslkit.methods.SimCLR", "temperature": temperature},
        "optim": {"lr": lr},
        "logger": {"save_dir": str(folder)},
        "eval": {"knn": {"k": [20, 200]}},
    }
    folder.mkdir(parents=True)
    if top1 is None:
        document = {"error": "NonFiniteLossError: the training loss became nan", "config": config}
        (folder / "failed.json").write_text(json.dumps(document))
    else:
        metrics = {"knn/top1@20": top1, "knn/top1@200": top1 / 2, "linear/top1": 1 - top1}
        (folder / "results.json").write_text(json.dumps({"config": config, "metrics": metrics}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two temperatures x three seeds; one seed of temperature 0.5 failed."""
    values = {0.1: [0.50, 0.60, 0.70], 0.5: [0.20, 0.40, None]}
    job = 0
    for temperature, tops in values.items():
        for seed, top1 in enumerate(tops):
            write_run(tmp_path / "sweep" / str(job), seed=seed, temperature=temperature, top1=top1)
            job += 1
    return tmp_path / "sweep"


def test_one_row_per_config_with_mean_and_sample_std_over_seeds(sweep: Path) -> None:
    runs = load_runs(sweep)
    assert len(runs) == 6 and sum(run.failed for run in runs) == 1
    table = summarise(runs)
    assert table.keys == ["method.temperature"]
    assert table.metrics == ["knn/top1@20", "knn/top1@200", "linear/top1"]
    low, high = table.rows
    assert low.values == {"method.temperature": 0.1} and low.seeds == [0, 1, 2]
    assert low.mean("knn/top1@20") == pytest.approx(np.mean([0.5, 0.6, 0.7]))
    assert low.std("knn/top1@20") == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1))
    assert high.seeds == [0, 1] and len(high.failures) == 1
    assert high.mean("linear/top1") == pytest.approx(np.mean([0.8, 0.6]))
    assert [run.path.name for run in table.failures] == ["5"]


def test_markdown_shows_only_differing_keys_and_lists_failures(sweep: Path) -> None:
    text = to_markdown(summarise(load_runs(sweep), metrics=["knn/top1@20"]))
    lines = text.splitlines()
    assert lines[0] == "| method.temperature | seeds | knn/top1@20 | failed |"
    assert lines[2] == "| 0.1 | 0,1,2 | 0.6000 ± 0.1000 | 0 |"
    assert lines[3] == "| 0.5 | 0,1 | 0.3000 ± 0.1414 | 1 |"
    assert f"- `{sweep / '5'}`: NonFiniteLossError: the training loss became nan" in text
    assert "optim.lr" not in text and "save_dir" not in text


def test_runs_with_different_configs_are_separate_rows(tmp_path: Path) -> None:
    write_run(tmp_path / "a", seed=0, temperature=0.1, top1=0.5)
    write_run(tmp_path / "b", seed=0, temperature=0.1, top1=0.7, lr=1.0)
    table = summarise(load_runs(tmp_path / "a", tmp_path / "b" / "results.json"))
    assert table.keys == ["optim.lr"]
    assert [row.std("knn/top1@20") for row in table.rows] == [None, None]
    assert "| 0.3 | 0 | 0.5000 |" in to_markdown(table)


def test_a_folder_counts_as_its_newest_outcome(tmp_path: Path) -> None:
    write_run(tmp_path / "job", seed=0, temperature=0.1, top1=0.5)
    failed = {"error": "RuntimeError: CUDA out of memory", "config": {"seed": 0}}
    (tmp_path / "job" / "failed.json").write_text(json.dumps(failed))
    os.utime(tmp_path / "job" / "results.json", (1, 1))
    (run,) = load_runs(tmp_path)
    assert run.failed and run.error == "RuntimeError: CUDA out of memory"


def test_csv_has_numeric_mean_and_std_columns(sweep: Path, tmp_path: Path) -> None:
    path = write_csv(summarise(load_runs(sweep)), tmp_path / "report.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method.temperature"] for row in rows] == ["0.1", "0.5"]
    assert float(rows[0]["knn/top1@20_std"]) == pytest.approx(0.1)
    assert (rows[1]["runs"], rows[1]["failed"], rows[1]["seeds"]) == ("2", "1", "0 1")


def test_plot_of_a_metric_against_a_swept_key(sweep: Path, tmp_path: Path) -> None:
    table = summarise(load_runs(sweep))
    figure = plot_metric(table, "knn/top1@20", "method.temperature", tmp_path / "plot.png")
    line = figure.axes[0].lines[0]
    assert list(line.get_xdata()) == [0.1, 0.5]
    assert list(line.get_ydata()) == pytest.approx([0.6, 0.3])
    assert (tmp_path / "plot.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not a config key"):
        plot_metric(table, "knn/top1@20", "method.temprature")


def test_command_writes_report_files_and_refuses_a_missing_folder(
    sweep: Path, tmp_path: Path, capsys
) -> None:
    assert main([str(sweep), "--metric", "linear/*", "--plot", "linear/top1"]) == 0
    out = capsys.readouterr().out
    assert "| method.temperature | seeds | linear/top1 | failed |" in out
    assert (sweep / "report.md").read_text() in out
    assert (sweep / "report.csv").is_file()
    assert (sweep / "report_linear_top1_vs_method.temperature.png").is_file()

    assert main([str(tmp_path / "nowhere")]) == 1
    assert "nowhere is neither a run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no runs to report" in capsys.readouterr().err
