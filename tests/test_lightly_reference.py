"""The lightly-reference benchmark keeps working: every method it is asked for gets a reference row
and an sslkit row with finite figures (a few steps on a subset, on the CPU)."""

from __future__ import annotations

import json
import math
import re

import pytest

METHODS = ("simclr", "byol", "mocov2", "dino", "mae")
#: Methods whose preset also fine-tunes (on 10 % of the labels) and is compared on it.
FINETUNED = ("mae",)


@pytest.mark.integration
def test_every_method_gets_both_rows_with_finite_figures(run_script, tmp_path):
    figures = tmp_path / "figures.json"
    status, out, err = run_script(
        "lightly_reference/bench_lightly_reference.py",
        *("--methods", *METHODS, "--epochs", "1", "--batch", "64", "--seed", "1"),
        # 256 images: 4 steps a row; mocov2's queue of 4096 is fitted to them (a printed override)
        *("--limit-train", "256", "--limit-test", "128", "--json", str(figures)),
        # fine-tuning of both rows cut to a few steps (the protocol's floor is 200)
        *("--eval", "eval.finetune.min_steps=8", "eval.finetune.epochs=1"),
    )
    assert status == 0, err[-3000:]
    for method in METHODS:
        for implementation in ("reference", "sslkit"):
            tuned = r"\s+[\d.]+" if method in FINETUNED else ""
            assert re.search(
                rf"^{method}\s+{implementation}\s+\d+\s+[\d.]+\s+[\d.]+{tuned}$", out, re.M
            )
        tuned = r"\s+fine-tune@10% (yes|no)" if method in FINETUNED else ""
        assert re.search(
            rf"^{method}\s+images/s [\d.]+x\s+kNN@20 (yes|no)\s+linear (yes|no){tuned}$", out, re.M
        )
    assert "mocov2: method.queue_size=256 (fitted to 256 training images)" in out
    assert "batch 64, seed 1;" in out

    document = json.loads(figures.read_text())
    rows = {(row["method"], row["implementation"]): row for row in document["rows"]}
    assert set(rows) == {(m, i) for m in METHODS for i in ("reference", "sslkit")}
    for row in rows.values():
        assert row["seed"] == 1
        assert row["images"] == 256  # one epoch of 4 whole batches, for both implementations
        keys = ["train_s", "images_per_s", "knn_top1@20", "linear_top1"]
        keys += ["finetune_top1@10%"] if row["method"] in FINETUNED else []
        for key in keys:
            assert isinstance(row[key], float) and math.isfinite(row[key]), (row, key)
        assert 0.0 <= row["knn_top1@20"] <= 1.0 and 0.0 <= row["linear_top1"] <= 1.0
    for method in METHODS:
        verdict = document["comparison"][method]
        ratio = (
            rows[(method, "sslkit")]["images_per_s"] / rows[(method, "reference")]["images_per_s"]
        )
        assert verdict["speed_ratio"] == pytest.approx(ratio)
        assert verdict["knn_matches"] == (
            rows[(method, "sslkit")]["knn_top1@20"] >= rows[(method, "reference")]["knn_top1@20"]
        )
    for method in FINETUNED:
        tuned = {i: rows[(method, i)]["finetune_top1@10%"] for i in ("reference", "sslkit")}
        assert document["comparison"][method]["finetune_matches"] == (
            tuned["sslkit"] >= tuned["reference"]
        )
    assert all(
        "finetune_matches" not in document["comparison"][m] for m in set(METHODS) - set(FINETUNED)
    )


def test_eval_option_takes_evaluation_overrides_only(run_script):
    status, _, err = run_script(
        "lightly_reference/bench_lightly_reference.py", "--eval", "method.temperature=0.5"
    )
    assert status == 2
    assert "--eval takes evaluation overrides eval.KEY=VALUE" in err
