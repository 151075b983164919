"""RankMe: the effective rank of features against its formula, and where a run reports it
(results.json for the encoder and each baseline, the printed table, sslkit-report)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sslkit.build import load_method
from sslkit.eval.cache import evaluation_encoder, extract_split_features
from sslkit.eval.rankme import EPSILON, rankme, singular_values
from sslkit.report import load_runs, summarise, to_markdown


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    """``rows x cols`` with orthonormal columns (rows >= cols)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q


def with_spectrum(n: int, d: int, spectrum: list[float], seed: int = 0) -> torch.Tensor:
    """``U diag(spectrum) V^T``: an ``n x d`` float32 matrix whose singular values are known."""
    k = len(spectrum)
    u, v = orthonormal(n, k, seed), orthonormal(d, k, seed + 1)
    return (u @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ v.T).float()


def reference_rankme(features: torch.Tensor, epsilon: float = EPSILON) -> float:
    """The paper's formula written directly on a float64 SVD of the whole matrix."""
    s = torch.linalg.svdvals(features.double())
    p = s / s.sum() + epsilon
    return math.exp(-sum(float(pk) * math.log(float(pk)) for pk in p))


def test_orthogonal_features_have_full_rank():
    features = orthonormal(200, 16, seed=0).float()
    assert rankme(features) == pytest.approx(16, rel=1e-4)
    assert rankme(5.0 * features.T) == pytest.approx(16, rel=1e-4)  # N < D: rank N


def test_rank_one_features_have_rank_about_one():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(1000, 1, generator=generator), torch.randn(1, 128, generator=generator)
    features = (u + 10.0) @ v  # one direction, large values: float32 rounding must not add rank
    value = rankme(features)
    assert 1.0 < value < 1.01


def test_a_known_spectrum_gives_the_entropy_computed_by_hand():
    # s = (3, 2, 1): p = (1/2, 1/3, 1/6), so RankMe = exp(ln2 / 2 + ln3 / 3 + ln6 / 6) = 2.7495.
    features = with_spectrum(40, 6, [3.0, 2.0, 1.0])
    by_hand = math.exp(math.log(2) / 2 + math.log(3) / 3 + math.log(6) / 6)
    assert by_hand == pytest.approx(2.7495, abs=1e-4)
    assert rankme(features, epsilon=0.0) == pytest.approx(by_hand, rel=1e-5)
    # With the epsilon every one of the min(N, D) = 6 values gets it, the three zeros too.
    p = [1 / 2 + EPSILON, 1 / 3 + EPSILON, 1 / 6 + EPSILON] + [EPSILON] * 3
    expected = math.exp(-sum(pk * math.log(pk) for pk in p))
    assert rankme(features) == pytest.approx(expected, rel=1e-5)
    assert rankme(features) > rankme(features, epsilon=0.0)


@pytest.mark.parametrize("shape", [(120, 16), (16, 120)], ids=["tall", "wide"])
def test_matches_the_formula_on_an_svd_and_is_scale_and_transpose_invariant(shape, monkeypatch):
    generator = torch.Generator().manual_seed(1)
    decay = torch.logspace(0, -3, shape[1])
    features = torch.randn(*shape, generator=generator) * decay  # uneven spectrum
    monkeypatch.setattr("sslkit.eval.rankme._CHUNK", 7)  # the Gram matrix summed over chunks
    expected = reference_rankme(features)
    assert rankme(features) == pytest.approx(expected, rel=1e-6)
    assert rankme(1e-3 * features) == pytest.approx(expected, rel=1e-6)
    assert rankme(features.T.contiguous()) == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(
        singular_values(features), torch.linalg.svdvals(features.double()), rtol=1e-6, atol=1e-9
    )


def test_zero_features_have_rank_zero_and_bad_input_is_refused():
    assert rankme(torch.zeros(10, 4)) == 0.0
    with pytest.raises(
        ValueError, match=r"non-empty 2-D \(N, D\) feature matrix, got shape \(5,\)"
    ):
        rankme(torch.ones(5))
    with pytest.raises(ValueError, match="non-empty 2-D"):
        rankme(torch.ones(0, 8))
    with pytest.raises(ValueError, match="NaN/inf"):
        rankme(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        rankme(torch.eye(3), epsilon=-1.0)


def test_a_run_reports_rankme_of_the_train_features_for_the_encoder_and_each_baseline(tiny_run):
    results = json.loads((tiny_run.dir / "results.json").read_text())
    loaded = load_method(tiny_run.dir / "checkpoints" / "last.ckpt")
    device = torch.device("cpu")
    encoder = evaluation_encoder(loaded.method, "student")
    trained = extract_split_features(encoder, loaded.datamodule, device)
    with loaded.datamodule.without_standardize():
        pixels = extract_split_features(nn.Flatten(), loaded.datamodule, device)

    assert results["metrics"]["rankme"] == pytest.approx(rankme(trained.train_features))
    assert results["metrics"]["rankme"] != pytest.approx(rankme(trained.test_features))
    raw = results["baselines"]["raw_pixels"]["rankme"]
    assert raw == pytest.approx(rankme(pixels.train_features))
    assert 1.0 < results["baselines"]["random_init"]["rankme"] <= 16  # ConvNet widths [8, 16]
    assert results["protocol"]["rankme"] == {"split": "train", "num_samples": 128, "epsilon": 1e-7}
    assert "eval_rankme_s" in results["timings"]

    header, _, *rows = tiny_run.stdout.split("\n\nresults:")[0].strip().splitlines()[-5:]
    assert header.split()[-3:] == ["RankMe", "wall", "time"]
    assert rows[0].startswith("raw pixels") and f"{raw:.1f}" in rows[0].split()


def test_sslkit_report_shows_rankme_by_default(tmp_path):
    config = {"seed": 0, "method": {"_target_": "sslkit.methods.SimCLR", "temperature": 0.1}}
    for seed, rank in enumerate([10.0, 14.0]):
        folder = tmp_path / str(seed)
        folder.mkdir()
        document = {
            "config": {**config, "seed": seed},
            "metrics": {"linear/top1": 0.5, "rankme": rank},
        }
        (folder / "results.json").write_text(json.dumps(document))
    table = summarise(load_runs(tmp_path))
    assert table.metrics == ["linear/top1", "rankme"]
    lines = to_markdown(table).splitlines()
    assert lines[0] == "| seeds | linear/top1 | rankme |"
    assert lines[2] == f"| 0,1 | 0.5000 ± 0.0000 | 12.0000 ± {math.sqrt(8):.4f} |"
