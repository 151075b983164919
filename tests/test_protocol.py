import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from sslkit.eval import (
    KNNProtocol,
    LinearProtocol,
    ProtocolResult,
    extract_features,
    fit_linear_probe,
    run_protocols,
)


class _Encoder(nn.Module):
    """BatchNorm + dropout: outputs differ between train and eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.dropout = nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(self.conv(images)))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self(images).mean(dim=(2, 3))


def _loader(num_batches=3, batch_size=4, multilabel=False):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(num_batches):
        images = torch.randn(batch_size, 3, 5, 5, generator=generator)
        if multilabel:
            labels = (torch.rand(batch_size, 6, generator=generator) < 0.5).int()
        else:
            labels = torch.randint(0, 6, (batch_size,), generator=generator).tolist()
        batches.append((images, labels))
    return batches


def test_extract_features_flattens_outputs_in_eval_mode_and_restores_every_mode():
    encoder = _Encoder().train()
    encoder.norm.eval()  # a frozen BatchNorm inside a training model must stay frozen
    loader = _loader()
    features, labels = extract_features(encoder, loader)

    assert features.shape == (12, 4 * 5 * 5) and features.dtype == torch.float32
    assert labels.shape == (12,) and labels.dtype == torch.int64
    assert encoder.training and encoder.conv.training and encoder.dropout.training
    assert not encoder.norm.training
    with torch.no_grad():
        expected = torch.cat([encoder.eval()(images).flatten(1) for images, _ in loader])
    torch.testing.assert_close(features, expected)


def test_extract_features_of_a_bound_method_uses_its_module_in_eval_mode():
    encoder = _Encoder().train()
    loader = _loader(multilabel=True)
    features, labels = extract_features(encoder.forward_features, loader)
    assert encoder.training
    assert features.shape == (12, 4)
    assert labels.shape == (12, 6) and labels.dtype == torch.float32
    with torch.no_grad():
        expected = torch.cat([encoder.eval().forward_features(x) for x, _ in loader])
    torch.testing.assert_close(features, expected)


def test_extract_features_restores_the_mode_when_the_encoder_fails():
    encoder = _Encoder().train()
    with pytest.raises(RuntimeError):
        extract_features(encoder, [(torch.randn(2, 5, 5, 5), torch.zeros(2))])
    assert encoder.training and encoder.norm.training


def test_extracted_features_can_train_a_probe():
    features, labels = extract_features(lambda x: x.mean(dim=(2, 3)), _loader())
    probe = fit_linear_probe(features, labels, num_classes=6, epochs=2, batch_size=4)
    assert probe.scores(features).shape == (12, 6)


def _split(n, num_classes, dim=8, seed=0, multilabel=False):
    generator = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    features = means[labels] + torch.randn(n, dim, generator=generator)
    if multilabel:
        labels = nn.functional.one_hot(labels, num_classes).float()
        labels[:, 0] = 1.0
    return features, labels


FAST_LINEAR = LinearProtocol(epochs=3, batch_size=32, lr=0.1, weight_decay=1e-4, seed=3)


def test_run_protocols_reports_every_documented_key():
    train, train_labels = _split(200, 10)
    test, test_labels = _split(50, 10, seed=1)
    result = run_protocols(
        train,
        train_labels,
        test,
        test_labels,
        num_classes=10,
        knn=KNNProtocol(k=[5, 300], temperature=0.1),
        linear=FAST_LINEAR,
    )
    assert isinstance(result, ProtocolResult)
    names = ["top1", "top5", "macro_precision", "macro_recall", "macro_f1"]
    expected = {f"knn/{m}@{k}" for m in names for k in (5, 300)} | {f"linear/{m}" for m in names}
    assert set(result.metrics) == expected
    assert all(0.0 <= value <= 1.0 for value in result.metrics.values())
    assert result.metrics["knn/top1@5"] > 0.9 and result.metrics["linear/top1"] > 0.9
    assert set(result.per_class) == {"knn@5", "knn@300", "linear"}
    assert all(len(rows) == 10 for rows in result.per_class.values())
    assert set(result.per_class["linear"][0]) == {"precision", "recall", "f1", "support"}
    assert result.protocol == {
        "feature_dim": 8,
        "num_train": 200,
        "num_test": 50,
        "num_classes": 10,
        "multilabel": False,
        "knn": {"k": [5, 300], "temperature": 0.1, "k_effective": [5, 200]},
        "linear": {
            "epochs": 3,
            "batch_size": 32,
            "lr": 0.1,
            "weight_decay": 1e-4,
            "seed": 3,
            "label_fractions": [1.0],
            "lr_grid": [],
            "weight_decay_grid": [],
            "val_fraction": 0.1,
        },
        "settings": {
            "knn@5": {
                "protocol": "knn",
                "k": 5,
                "k_effective": 5,
                "temperature": 0.1,
                "num_train": 200,
            },
            "knn@300": {
                "protocol": "knn",
                "k": 300,
                "k_effective": 200,
                "temperature": 0.1,
                "num_train": 200,
            },
            "linear": {
                "protocol": "linear",
                "epochs": 3,
                "batch_size": 32,
                "lr": 0.1,
                "weight_decay": 1e-4,
                "seed": 3,
                "label_fraction": 1.0,
                "num_train": 200,
            },
        },
    }
    assert set(result.timings) == {"knn", "linear"}


def test_run_protocols_multilabel_keys_and_threshold():
    train, train_labels = _split(120, 4, multilabel=True)
    test, test_labels = _split(40, 4, seed=1, multilabel=True)
    result = run_protocols(
        train,
        train_labels,
        test,
        test_labels,
        num_classes=4,
        multilabel=True,
        knn=KNNProtocol(k=[10]),
        linear=FAST_LINEAR,
    )
    names = ["mAP", "micro_f1", "macro_f1", "macro_precision", "macro_recall"]
    assert set(result.metrics) == {f"knn/{m}@10" for m in names} | {f"linear/{m}" for m in names}
    assert result.protocol["threshold"] == 0.5
    assert all(entry["threshold"] == 0.5 for entry in result.protocol["settings"].values())
    assert "ap" in result.per_class["knn@10"][0]


def test_run_protocols_skips_a_protocol_given_none():
    train, labels = _split(60, 3)
    result = run_protocols(
        train, labels, train, labels, num_classes=3, knn=None, linear=FAST_LINEAR
    )
    assert set(result.timings) == {"linear"} and "knn" not in result.protocol
    assert set(result.metrics) == {
        f"linear/{m}" for m in ("top1", "macro_precision", "macro_recall", "macro_f1")
    }


@pytest.mark.parametrize(
    ("test_shape", "multilabel", "knn", "message"),
    [
        ((10, 8), False, None, "no protocol to run"),
        ((10, 6), False, KNNProtocol(), "differ in dimension"),
        ((10, 8), True, KNNProtocol(), "multi-hot train_labels must have shape"),
    ],
)
def test_run_protocols_rejects_bad_inputs(test_shape, multilabel, knn, message):
    train, labels = _split(20, 3)
    with pytest.raises(ValueError, match=message):
        run_protocols(
            train,
            labels,
            torch.randn(test_shape),
            labels[:10],
            num_classes=3,
            multilabel=multilabel,
            knn=knn,
            linear=None,
        )


def test_protocols_instantiate_from_hydra_configs():
    knn = instantiate({"_target_": "sslkit.eval.KNNProtocol", "k": [20, 200], "temperature": 0.07})
    assert knn == KNNProtocol()
    assert type(knn.k) is list and all(type(k) is int for k in knn.k)
    linear = instantiate({"_target_": "sslkit.eval.LinearProtocol", "epochs": 10})
    assert linear == LinearProtocol(epochs=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": []}, "non-empty"), ({"k": [0]}, "k >= 1"), ({"temperature": 0}, "> 0")],
)
def test_knn_protocol_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KNNProtocol(**kwargs)
