import inspect

import pytest
import torch

from sslkit.eval import (
    LinearProbe,
    LinearProtocol,
    classification_metrics,
    fit_linear_probe,
    multilabel_metrics,
)


def _blobs(n, num_classes=5, dim=16, seed=0):
    """Gaussian blobs around well-separated means, on an offset and uneven scale."""
    means = 4.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    features = means[labels] + torch.randn(n, dim, generator=generator)
    return 10.0 + 3.0 * features, labels


def test_probe_separates_gaussian_blobs():
    train, train_labels = _blobs(600)
    test, test_labels = _blobs(300, seed=1)
    probe = fit_linear_probe(train, train_labels, num_classes=5, epochs=20, batch_size=64)
    scores = probe.scores(test)
    assert scores.shape == (300, 5)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(300))
    assert classification_metrics(scores, test_labels, 5)["top1"] > 0.98


def test_same_seed_gives_the_same_probe_and_leaves_the_global_rng_alone():
    features, labels = _blobs(200)
    rng_state = torch.get_rng_state()
    first = fit_linear_probe(features, labels, num_classes=5, epochs=3, batch_size=32, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)
    second = fit_linear_probe(features, labels, num_classes=5, epochs=3, batch_size=32, seed=7)
    other = fit_linear_probe(features, labels, num_classes=5, epochs=3, batch_size=32, seed=8)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.linear.weight, other.linear.weight)


def test_multilabel_probe_learns_linear_labels_with_sigmoid_scores():
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(12, 4, generator=generator)
    features = torch.randn(800, 12, generator=generator)
    labels = (features @ directions > 0).float()
    probe = fit_linear_probe(
        features[:600], labels[:600], num_classes=4, multilabel=True, epochs=30, batch_size=64
    )
    scores = probe.scores(features[600:])
    assert scores.min() >= 0 and scores.max() <= 1
    assert not torch.allclose(scores.sum(dim=1), torch.ones(200))
    metrics = multilabel_metrics(scores, labels[600:])
    assert metrics["micro_f1"] > 0.9
    assert metrics["mAP"] > 0.95


def test_scores_run_in_eval_mode_and_restore_the_mode():
    features, labels = _blobs(100)
    probe = fit_linear_probe(features, labels, num_classes=5, epochs=2, batch_size=32)
    assert not probe.training
    probe.train()
    one_by_one = torch.cat([probe.scores(row.unsqueeze(0)) for row in features[:5]])
    assert probe.training
    torch.testing.assert_close(one_by_one, probe.scores(features[:5], batch_size=2))


def test_tiny_training_sets_never_give_batchnorm_a_single_sample():
    features, labels = _blobs(3)
    probe = fit_linear_probe(features, labels, num_classes=5, epochs=2, batch_size=2)
    assert isinstance(probe, LinearProbe)
    assert probe.norm.num_batches_tracked.item() == 2


def test_protocol_defaults_are_the_probe_defaults():
    signature = inspect.signature(fit_linear_probe).parameters
    for name, value in LinearProtocol().probe_settings().items():
        assert signature[name].default == value, name


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (torch.zeros(10, 5), {}, "multi-hot labels need multilabel=True"),
        (torch.zeros(10), {}, "integer class ids"),
        (torch.zeros(9, dtype=torch.long), {}, r"must be \(10,\) integer class ids"),
        (torch.full((10,), 5), {}, r"must lie in \[0, 5\)"),
        (torch.zeros(10, 3), {"multilabel": True}, "multi-hot train_labels must have shape"),
        (torch.zeros(10, dtype=torch.long), {"batch_size": 1}, "batch_size must be >= 2"),
    ],
)
def test_invalid_inputs_fail_with_a_clear_message(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_linear_probe(torch.randn(10, 4), labels, num_classes=5, epochs=1, **kwargs)
