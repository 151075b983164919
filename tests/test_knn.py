import pytest
import torch
import torch.nn.functional as F

from sslkit.eval import WeightedKNN, knn_predict


def _reference_knn(train, labels, test, num_classes, k, temperature):
    """Brute force: full cosine-similarity matrix, topk, scatter of exp(sim / T)."""
    similarity = F.normalize(test.double(), dim=1) @ F.normalize(train.double(), dim=1).T
    top_similarity, top_index = similarity.topk(min(k, train.shape[0]), dim=1)
    weights = (top_similarity / temperature).exp()
    if labels.ndim == 2:
        votes = (weights.unsqueeze(2) * labels.double()[top_index]).sum(dim=1)
        return votes / weights.sum(dim=1, keepdim=True)
    votes = torch.zeros(test.shape[0], num_classes, dtype=torch.float64)
    return votes.scatter_add_(1, labels[top_index], weights)


def _data(n_train, n_test, dim, num_classes, seed=0, multilabel=False):
    generator = torch.Generator().manual_seed(seed)
    train = torch.randn(n_train, dim, generator=generator)
    test = torch.randn(n_test, dim, generator=generator)
    if multilabel:
        labels = (torch.rand(n_train, num_classes, generator=generator) < 0.3).float()
    else:
        labels = torch.randint(0, num_classes, (n_train,), generator=generator)
    return train, labels, test


@pytest.mark.parametrize(
    ("n_train", "k", "temperature"),
    [(200, 1, 0.07), (200, 20, 0.07), (300, 50, 0.5), (15, 40, 0.1)],
)
def test_single_label_matches_brute_force(n_train, k, temperature):
    train, labels, test = _data(n_train, 37, 16, num_classes=7, seed=k)
    scores = knn_predict(train, labels, test, num_classes=7, k=k, temperature=temperature)
    expected = _reference_knn(train, labels, test, 7, k, temperature)
    assert scores.shape == (37, 7)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("n_train", "k"), [(150, 10), (12, 30)])
def test_multilabel_matches_brute_force_and_lies_in_unit_interval(n_train, k):
    train, labels, test = _data(n_train, 25, 8, num_classes=5, seed=1, multilabel=True)
    scores = knn_predict(train, labels, test, num_classes=5, k=k, temperature=0.07)
    expected = _reference_knn(train, labels, test, 5, k, 0.07)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)
    assert scores.min() >= 0 and scores.max() <= 1 + 1e-6


def test_k_above_train_size_votes_with_every_training_sample():
    train, labels, test = _data(6, 4, 3, num_classes=3)
    clipped = knn_predict(train, labels, test, num_classes=3, k=100, temperature=0.07)
    exact = knn_predict(train, labels, test, num_classes=3, k=6, temperature=0.07)
    torch.testing.assert_close(clipped, exact)


def test_nearest_neighbour_of_a_training_sample_is_itself():
    train, labels, _ = _data(50, 0, 10, num_classes=4)
    scores = knn_predict(train, labels, 3.0 * train, num_classes=4, k=1, temperature=0.07)
    assert torch.equal(scores.argmax(dim=1), labels)


def test_scores_do_not_depend_on_feature_norms():
    train, labels, test = _data(80, 20, 6, num_classes=4)
    scale = torch.rand(80, 1) + 0.1
    torch.testing.assert_close(
        knn_predict(train * scale, labels, test * 7.0, num_classes=4, k=20, temperature=0.07),
        knn_predict(train, labels, test, num_classes=4, k=20, temperature=0.07),
        rtol=1e-4,
        atol=1e-6,
    )


def test_one_search_for_several_k_equals_separate_searches_in_any_chunking():
    train, labels, test = _data(120, 50, 8, num_classes=6, seed=3)
    knn = WeightedKNN(train, labels, num_classes=6)
    together = knn.predict_each_k(test, ks=[5, 30, 500], temperature=0.1, chunk_size=7)
    assert list(together) == [5, 30, 500]
    for k, scores in together.items():
        alone = knn_predict(train, labels, test, num_classes=6, k=k, temperature=0.1)
        torch.testing.assert_close(scores, alone)


def test_empty_test_set_gives_empty_scores():
    train, labels, _ = _data(10, 0, 4, num_classes=3)
    assert knn_predict(
        train, labels, torch.zeros(0, 4), num_classes=3, k=20, temperature=0.07
    ).shape == (0, 3)


@pytest.mark.parametrize(
    ("train_shape", "labels", "test_shape", "kwargs", "message"),
    [
        (
            (10, 4),
            torch.zeros(10, dtype=torch.long),
            (3, 5),
            {},
            r"test_features must be \(N_test, 4\)",
        ),
        ((10, 4), torch.zeros(9, dtype=torch.long), (3, 4), {}, "train_labels must be"),
        ((10, 4), torch.full((10,), 3), (3, 4), {}, r"must lie in \[0, 3\)"),
        ((10, 4), torch.zeros(10, 2), (3, 4), {}, "multi-hot train_labels must have shape"),
        ((10, 4), torch.zeros(10), (3, 4), {}, "integer class ids"),
        ((10,), torch.zeros(10, dtype=torch.long), (3, 4), {}, "train_features must be 2-D"),
        ((10, 4), torch.zeros(10, dtype=torch.long), (3, 4), {"k": 0}, "k must be >= 1"),
        ((10, 4), torch.zeros(10, dtype=torch.long), (3, 4), {"temperature": 0.0}, "temperature"),
    ],
)
def test_invalid_inputs_fail_with_a_clear_message(train_shape, labels, test_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        knn_predict(
            torch.randn(train_shape),
            labels,
            torch.randn(test_shape),
            num_classes=3,
            **{"k": 20, "temperature": 0.07, **kwargs},
        )


def test_multilabel_scores_stay_finite_at_tiny_temperatures():
    train, labels, test = _data(100, 20, 8, num_classes=5, seed=2, multilabel=True)
    scores = knn_predict(train, labels, test, num_classes=5, k=10, temperature=1e-4)
    nearest = (F.normalize(test, dim=1) @ F.normalize(train, dim=1).T).argmax(dim=1)
    torch.testing.assert_close(scores, labels[nearest])
