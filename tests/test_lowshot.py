"""Low-shot linear probes: class-balanced, nested, seeded label subsets; lr/wd chosen on train data."""

from __future__ import annotations

import pytest
import torch

from sslkit.eval import (
    LinearProtocol,
    fraction_label,
    holdout_split,
    label_fraction_subset,
    run_protocols,
    select_probe_settings,
)

FRACTIONS = (0.01, 0.1, 0.5, 1.0)


def _imbalanced_labels(seed: int = 0) -> torch.Tensor:
    """Class c has 40 + 30 c samples, shuffled."""
    labels = torch.cat([torch.full((40 + 30 * c,), c) for c in range(6)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_subsets_keep_the_same_fraction_of_every_class():
    labels = _imbalanced_labels()
    counts = torch.bincount(labels)
    for fraction in FRACTIONS:
        subset = label_fraction_subset(labels, fraction, seed=3)
        assert len(subset.unique()) == len(subset)
        expected = [max(1, round(fraction * int(n))) for n in counts]
        assert torch.bincount(labels[subset], minlength=6).tolist() == expected


def test_subsets_are_nested_and_fixed_by_the_seed():
    labels = _imbalanced_labels()
    subsets = [set(label_fraction_subset(labels, f, seed=3).tolist()) for f in FRACTIONS]
    assert all(small < large for small, large in zip(subsets, subsets[1:], strict=False))
    assert subsets[-1] == set(range(len(labels)))
    assert torch.equal(
        label_fraction_subset(labels, 0.1, seed=3), label_fraction_subset(labels, 0.1, seed=3)
    )
    assert not torch.equal(
        label_fraction_subset(labels, 0.1, seed=3), label_fraction_subset(labels, 0.1, seed=4)
    )


def test_multilabel_subsets_are_nested_and_keep_every_label():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(500, 5, generator=generator) < 0.3).float()
    labels[:, 4] = 0
    labels[123, 4] = 1  # a label carried by one image only
    previous: set[int] = set()
    for fraction in FRACTIONS:
        subset = label_fraction_subset(labels, fraction, seed=1)
        assert set(previous) <= set(subset.tolist())
        assert (labels[subset].sum(dim=0) > 0).all()
        assert round(fraction * 500) <= len(subset) <= round(fraction * 500) + 5
        previous = set(subset.tolist())
    assert 123 in label_fraction_subset(labels, 0.01, seed=1).tolist()


def test_holdout_split_is_a_balanced_partition():
    labels = _imbalanced_labels()
    train, validation = holdout_split(labels, 0.2, seed=0)
    assert sorted(train.tolist() + validation.tolist()) == list(range(len(labels)))
    assert torch.equal(validation, label_fraction_subset(labels, 0.2, seed=0))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        holdout_split(labels, 1.0, seed=0)


def test_fraction_labels():
    assert [fraction_label(f) for f in (0.01, 0.1, 0.125, 1.0, 0.07)] == [
        "1%",
        "10%",
        "12.5%",
        "100%",
        "7%",
    ]


def _blobs(n: int, seed: int, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    centres = torch.randn(num_classes, 8, generator=torch.Generator().manual_seed(99))
    return 2 * centres[labels] + torch.randn(n, 8, generator=generator), labels


def test_each_label_fraction_is_reported_and_fraction_one_keeps_the_plain_keys():
    train, train_labels = _blobs(400, 0)
    test, test_labels = _blobs(100, 1)
    probe = {"epochs": 5, "batch_size": 64, "seed": 2}

    def run(fractions):
        linear = LinearProtocol(label_fractions=fractions, **probe)
        return run_protocols(
            train, train_labels, test, test_labels, num_classes=4, knn=None, linear=linear
        )

    low_shot = run([0.05, 0.25, 1.0])
    plain = run([1.0])
    for suffix in ("@5%", "@25%", ""):
        assert {"top1", "macro_f1"} <= {
            key.removeprefix("linear/").removesuffix(suffix)
            for key in low_shot.metrics
            if key.endswith(suffix)
        }
    assert {k: v for k, v in low_shot.metrics.items() if "@" not in k} == plain.metrics
    settings = low_shot.protocol["settings"]
    assert (
        settings["linear@5%"]["num_train"] == 20 and settings["linear@5%"]["label_fraction"] == 0.05
    )
    assert settings["linear@25%"]["num_train"] == 100 and settings["linear"]["num_train"] == 400
    assert set(low_shot.per_class) == {"linear@5%", "linear@25%", "linear"}


def test_grid_search_uses_only_the_training_data():
    train, train_labels = _blobs(300, 0)
    linear = LinearProtocol(
        epochs=5, batch_size=64, lr_grid=[0.001, 0.3], weight_decay_grid=[0.0, 0.01]
    )
    assert linear.searches and len(linear.grid()) == 4
    results = [
        run_protocols(
            train, train_labels, *_blobs(80, seed), num_classes=4, knn=None, linear=linear
        )
        for seed in (1, 2)
    ]
    selections = [r.protocol["settings"]["linear"]["selection"] for r in results]
    assert selections[0] == selections[1]
    direct = select_probe_settings(
        train,
        train_labels,
        grid=linear.grid(),
        val_fraction=0.1,
        num_classes=4,
        epochs=5,
        batch_size=64,
    )
    assert direct == selections[0]
    assert direct["num_val"] == 32 and len(direct["val_scores"]) == 4
    best = max(row["top1"] for row in direct["val_scores"])
    assert (
        direct["val_scores"][[r["top1"] for r in direct["val_scores"]].index(best)]["lr"]
        == (direct["lr"])
    )
    fixed = LinearProtocol(
        epochs=5, batch_size=64, lr=direct["lr"], weight_decay=direct["weight_decay"]
    )
    refit = run_protocols(
        train, train_labels, *_blobs(80, 1), num_classes=4, knn=None, linear=fixed
    )
    assert refit.metrics == results[0].metrics


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_fractions": []}, "non-empty"),
        ({"label_fractions": [0.0]}, r"in \(0, 1\]"),
        ({"label_fractions": [1.5]}, r"in \(0, 1\]"),
        ({"label_fractions": [0.1, 0.1]}, "duplicates"),
        ({"lr_grid": [0.0]}, "lr_grid"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_linear_protocol_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinearProtocol(**kwargs)


def test_grid_search_on_a_too_small_subset_says_what_to_change():
    features, labels = _blobs(3, 0, num_classes=2)
    with pytest.raises(ValueError, match="val_fraction"):
        select_probe_settings(
            features, labels, grid=[(0.1, 0.0)], val_fraction=0.5, num_classes=2, epochs=1
        )
