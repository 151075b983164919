"""``SSLMethod.evaluation_encoders`` is the one evaluation hook: a method that overrides it
changes what the final protocols, the kNN monitor, the online probe and ``sslkit-eval`` see."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.build import load_checkpoint, load_method
from sslkit.eval.cache import evaluation_encoder, extract_split_features
from sslkit.evaluate import evaluate
from sslkit.evaluation import evaluate_features
from sslkit.losses import info_nce
from sslkit.methods import SimCLR
from sslkit.methods.base import SSLMethod, split_views
from sslkit.models import ConvNet
from sslkit.train import train
from tests.conftest import TINY


class Readout(nn.Module):
    """Reverses the order of the features and zeroes the second half: changes the cosine
    neighbours (kNN), and a probe trained on it fails on the plain features."""

    def forward(self, features: Tensor) -> Tensor:
        out = features.flip(1).clone()
        out[:, out.shape[1] // 2 :] = 0
        return out


class ReadoutSimCLR(SimCLR):
    """SimCLR whose evaluation hook offers its backbone followed by a fixed read-out."""

    def __init__(self, backbone: Any, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        self.readout = Readout()

    def evaluation_encoders(self) -> dict[str, nn.Module]:
        return {"student": nn.Sequential(self.backbone, self.readout)}

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, targets = batch
        view_a, view_b = split_views(views, 2, "ReadoutSimCLR")
        features = self.backbone(torch.cat([view_a, view_b]))
        loss = info_nce(*self.projector(features).chunk(2), self.temperature)
        probe = self.online_probe_loss(features[: len(view_a)], targets, images=view_a)
        return loss + probe


RUN = [
    *TINY,
    "method._target_=tests.test_evaluation_hook.ReadoutSimCLR",
    "eval.monitor_every=1",
    "baselines=[]",
]
CPU = torch.device("cpu")


def test_every_evaluation_sees_the_overridden_hook(hydra_run, tmp_path) -> None:
    results = train(hydra_run("train", RUN))
    checkpoint_file = tmp_path / "checkpoints" / "last.ckpt"
    method, datamodule, cfg = load_method(checkpoint_file)
    assert isinstance(method, ReadoutSimCLR)
    hooked = extract_split_features(method.evaluation_encoders()["student"], datamodule, CPU)
    plain = extract_split_features(method.backbone, datamodule, CPU)
    expected = evaluate_features(hooked, datamodule, cfg.eval, CPU).metrics
    assert evaluate_features(plain, datamodule, cfg.eval, CPU).metrics != expected

    # kNN, linear probe and low-shot protocols of results.json.
    assert results["metrics"] == expected

    # The kNN monitor while training (its last point is the final model's kNN).
    (history,) = [
        state["history"]
        for name, state in load_checkpoint(checkpoint_file)["callbacks"].items()
        if name.startswith("MetricHistory")
    ]
    assert history["monitor/knn_top1@5"][-1][1] == expected["knn/top1@5"]

    # The online probe: its validation accuracy is that of its weights on the hook's features.
    def probe_top1(features) -> float:
        with torch.no_grad():
            logits = method.online_probe(features.test_features)
        return (logits.argmax(dim=1) == features.test_labels).float().mean().item()

    assert probe_top1(plain) != pytest.approx(probe_top1(hooked), abs=1e-6)
    assert history["val/online_top1"][-1][1] == pytest.approx(probe_top1(hooked), abs=1e-6)

    # sslkit-eval of the checkpoint.
    evaluated = evaluate(
        hydra_run("eval", [f"ckpt_path={checkpoint_file}", "eval.cache=false", *TINY[-3:]])
    )
    assert evaluated["metrics"] == expected


def _method(**kwargs: Any) -> ReadoutSimCLR:
    torch.manual_seed(0)
    return ReadoutSimCLR(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=torch.optim.SGD,
        num_classes=3,
        projection_dim=8,
        hidden_dim=16,
        **kwargs,
    )


def test_online_probe_and_forward_features_use_the_hooks_student(monkeypatch) -> None:
    method = _method()
    logged: dict[str, float] = {}
    monkeypatch.setattr(method, "log", lambda name, value, **_: logged.__setitem__(name, value))
    images, targets = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    student = method.evaluation_encoders()["student"]
    torch.testing.assert_close(method.forward_features(images), student(images))
    # (train-mode passes move the BatchNorm statistics: the expected features come after them)
    features = method.backbone(images)
    with torch.no_grad():
        method.eval()
        expected = student(images)
        method.train()

    loss = method.online_probe_loss(features, targets, images=images)
    torch.testing.assert_close(loss, F.cross_entropy(method.online_probe(expected), targets))
    assert all(m.training for m in method.modules()), "the probe's eval pass restores the modes"
    with pytest.raises(ValueError, match="pass them as online_probe_loss"):
        method.online_probe_loss(features, targets)

    method.eval()
    method.validation_step((images, targets), 0)
    top1 = (method.online_probe(expected).argmax(dim=1) == targets).float().mean()
    torch.testing.assert_close(logged["val/online_top1"], top1)


def test_probe_width_mismatch_and_missing_student_are_explained() -> None:
    class Wide(SimCLR):
        def evaluation_encoders(self) -> dict[str, nn.Module]:
            return {"student": nn.Sequential(self.backbone, nn.Linear(8, 5))}

    class NoStudent(SimCLR):
        def evaluation_encoders(self) -> dict[str, nn.Module]:
            return {"teacher": self.backbone}

    backbone = ConvNet(in_channels=3, widths=[4, 8])
    images = torch.rand(2, 3, 8, 8)
    wide = Wide(backbone, optimizer=torch.optim.SGD, num_classes=3)
    with pytest.raises(ValueError, match="online probe takes 8 features .* gives 5"):
        wide.validation_step((images, torch.tensor([0, 1])), 0)
    no_student = NoStudent(backbone, optimizer=torch.optim.SGD, num_classes=3)
    with pytest.raises(ValueError, match="must name a 'student' encoder"):
        no_student.forward_features(images)
    with pytest.raises(ValueError, match=r"eval.encoder='student' is not offered by NoStudent"):
        evaluation_encoder(no_student, "student")


def test_forward_features_is_not_a_hook() -> None:
    with pytest.raises(TypeError, match="override evaluation_encoders"):

        class Override(SSLMethod):
            def forward_features(self, x: Tensor) -> Tensor:
                return x


def test_a_bare_backbone_is_its_own_student() -> None:
    backbone = ConvNet(in_channels=3, widths=[4, 8])
    assert evaluation_encoder(backbone, "student") is backbone
    with pytest.raises(ValueError, match=r"choose from \['student'\]"):
        evaluation_encoder(backbone, "teacher")
