"""The objective a sweeper optimises: the configured metric, or the first kNN k's top-1."""

from __future__ import annotations

import logging

import pytest

from sslkit.run.jobs import objective, objective_metric
from tests.conftest import TINY

#: The tiny runs' settings without their choice of k.
BASE = [override for override in TINY if not override.startswith("eval.knn.")]

METRICS = {
    "knn/top1@20": 0.6,
    "knn/top1@10": 0.4,
    "knn/top1@50": 0.3,
    "linear/top1": 0.5,
    "knn/mAP@10": 0.2,
}


@pytest.mark.parametrize(
    ("overrides", "metric"),
    [
        ([], "knn/top1@20"),  # KNNProtocol's default k=[20, 200]
        (["eval.knn.k=[10,50]"], "knn/top1@10"),
        (["eval.knn.k=[50,10]"], "knn/top1@50"),
        (["eval=[linear]"], "linear/top1"),
        (["eval.knn.k=[10]", "objective=linear/top1"], "linear/top1"),
    ],
)
def test_objective_defaults_to_the_first_k(hydra_run, overrides, metric):
    cfg = hydra_run("train", [*BASE, *overrides])
    assert cfg.objective in (None, "linear/top1")
    assert objective_metric(cfg) == metric
    assert objective(cfg, {"metrics": METRICS}) == METRICS[metric]


def test_objective_of_multilabel_results_is_the_knn_map(hydra_run):
    cfg = hydra_run("train", [*BASE, "eval.knn.k=[10]"])
    results = {"protocol": {"multilabel": True}, "metrics": METRICS}
    assert objective_metric(cfg, results) == "knn/mAP@10"
    assert objective(cfg, results) == 0.2


def test_objective_of_a_failed_job_is_none(hydra_run):
    assert objective(hydra_run("train", [*BASE, "eval.knn.k=[10]"]), None) is None


def test_a_missing_objective_in_a_multirun_is_logged(hydra_run, monkeypatch, caplog):
    cfg = hydra_run("train", [*BASE, "eval.knn.k=[10]"])
    monkeypatch.setattr("sslkit.run.jobs.is_multirun", lambda: True)
    with caplog.at_level(logging.WARNING, logger="sslkit.run.jobs"):
        assert objective(cfg, {"metrics": {"linear/top1": 0.5}}) is None
    assert "objective=knn/top1@10 is not among the metrics (linear/top1)" in caplog.text
