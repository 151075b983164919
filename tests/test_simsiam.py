"""SimSiam: the loss against its formula written out, the stop-gradient, the predictor's fixed
learning rate over a run (the generic ``fixed_lr_modules`` hook), collapse monitor, bad settings."""

from __future__ import annotations

import logging
import math
from functools import partial
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import nn

from sslkit.build import build_datamodule, build_method
from sslkit.losses.simsiam import simsiam_loss
from sslkit.methods.base import SSLMethod
from sslkit.methods.simsiam import SimSiam
from sslkit.models import ConvNet
from sslkit.optim import FIXED_LR, parameter_groups, warmup_cosine
from tests.conftest import TINY

SIMSIAM_TINY = [
    *TINY,
    "method=simsiam",
    "augment=simclr",
    "method.projection_dim=16",
    "method.hidden_dim=32",
    "method.prediction_hidden_dim=8",
]


def reference_loss(p_a, p_b, z_a, z_b):
    """1/2 (D(p_a, sg z_b) + D(p_b, sg z_a)), D the mean negative cosine, written out."""

    def d(p, z):
        z = z.detach()
        cos = (p * z).sum(dim=1) / (p.pow(2).sum(dim=1).sqrt() * z.pow(2).sum(dim=1).sqrt())
        return -cos.mean()

    return 0.5 * d(p_a, z_b) + 0.5 * d(p_b, z_a)


def _random(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


def test_loss_and_gradients_match_the_formula() -> None:
    inputs = [_random(12, 7, seed=s) for s in range(4)]
    loss = simsiam_loss(*inputs)
    loss.backward()
    ours = [t.grad for t in inputs]
    copies = [t.detach().clone().requires_grad_() for t in inputs]
    expected = reference_loss(*copies)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for mine, theirs in zip(ours[:2], [c.grad for c in copies[:2]], strict=True):
        torch.testing.assert_close(mine, theirs)
    # The stop-gradient: no gradient reaches the projections.
    assert ours[2] is None and ours[3] is None
    assert copies[2].grad is None and copies[3].grad is None


def test_loss_is_minus_one_when_predictions_match_and_one_when_opposite() -> None:
    z_a, z_b = torch.randn(5, 4), torch.randn(5, 4)
    assert simsiam_loss(3 * z_b, 0.5 * z_a, z_a, z_b).item() == pytest.approx(-1.0)
    assert simsiam_loss(-z_b, -2 * z_a, z_a, z_b).item() == pytest.approx(1.0)
    # Symmetric: swapping the views gives the same loss.
    p_a, p_b = torch.randn(5, 4), torch.randn(5, 4)
    assert simsiam_loss(p_a, p_b, z_a, z_b) == pytest.approx(simsiam_loss(p_b, p_a, z_b, z_a))


@pytest.mark.parametrize(
    "shapes", [[(4, 3)] * 3 + [(4, 2)], [(0, 3)] * 4, [(4, 3, 1)] * 4], ids=str
)
def test_loss_rejects_mismatched_or_empty_inputs(shapes) -> None:
    with pytest.raises(ValueError, match="simsiam_loss expects"):
        simsiam_loss(*[torch.randn(*s) for s in shapes])


def _method(**settings) -> SimSiam:
    torch.manual_seed(0)
    return SimSiam(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        projection_dim=8,
        hidden_dim=16,
        prediction_hidden_dim=4,
        num_classes=3,
        **settings,
    )


def test_training_step_is_the_loss_of_each_prediction_against_the_other_projection() -> None:
    method = _method(online_probe=False)
    method.log = lambda *args, **kwargs: None
    generator = torch.Generator().manual_seed(1)
    view_a, view_b = torch.rand(2, 6, 3, 8, 8, generator=generator)
    loss = method.training_step(([view_a, view_b], torch.zeros(6, dtype=torch.long)), 0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters()}
    method.zero_grad()

    projections = method.projector(method.backbone(torch.cat([view_a, view_b])))
    p_a, p_b = method.predictor(projections).chunk(2)
    z_a, z_b = projections.chunk(2)
    expected = reference_loss(p_a, p_b, z_a, z_b)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for name, p in method.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=name)
    # Without the stop-gradient the projector and backbone would get other gradients.
    method.zero_grad()
    projections = method.projector(method.backbone(torch.cat([view_a, view_b])))
    q_a, q_b = method.predictor(projections).chunk(2)
    y_a, y_b = projections.chunk(2)
    (
        -0.5 * F.cosine_similarity(q_a, y_b).mean() - 0.5 * F.cosine_similarity(q_b, y_a).mean()
    ).backward()
    assert not torch.allclose(
        grads["projector.layers.0.weight"], method.projector.layers[0].weight.grad
    )


class _LearningRates(Callback):
    """The learning rate of every parameter group before each optimiser step."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.rates.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def _rates_over_a_run(hydra_run, overrides: list[str]) -> tuple[SimSiam, list[list[float]]]:
    # 128 images in batches of 32: 4 steps an epoch, 3 epochs, one of warmup.
    cfg = hydra_run(
        "train", [*SIMSIAM_TINY, "trainer.max_epochs=3", "schedule.warmup_epochs=1", *overrides]
    )
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    recorder = _LearningRates()
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[recorder],
    )
    trainer.fit(method, datamodule=datamodule)
    assert trainer.global_step == 12 and len(recorder.rates) == 12
    return method, recorder.rates


def _groups_of(method: SimSiam, module: nn.Module) -> list[int]:
    ids = {id(p) for p in module.parameters()}
    groups = method.trainer.optimizers[0].param_groups
    return [i for i, g in enumerate(groups) if any(id(p) in ids for p in g["params"])]


def _schedule_factors(steps: int, steps_per_epoch: int) -> list[float]:
    """warmup_cosine on a single group of lr 1: linear warmup over one epoch, then cosine."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(
        optimizer, total_steps=steps, steps_per_epoch=steps_per_epoch, warmup_epochs=1
    )
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


@pytest.mark.parametrize("fixed", [True, False])
def test_predictor_lr_stays_at_its_base_value_while_the_rest_follows_the_schedule(
    hydra_run, fixed: bool
) -> None:
    method, rates = _rates_over_a_run(
        hydra_run, ["optim=sgd", "optim.lr=0.4", f"method.fixed_predictor_lr={fixed}"]
    )
    base = 0.4 * 32 / 256  # linear scaling by the batch
    factors = _schedule_factors(12, 4)
    assert factors[0] < factors[3] == pytest.approx(1.0) and factors[-1] < 0.1  # warmup, cosine
    predictor, backbone = _groups_of(method, method.predictor), _groups_of(method, method.backbone)
    # Fixed: the predictor has groups of its own; else it shares the backbone's.
    assert predictor and backbone and bool(set(predictor) & set(backbone)) != fixed
    groups = method.trainer.optimizers[0].param_groups
    assert all(bool(groups[i].get(FIXED_LR)) == fixed for i in predictor)
    for step, step_rates in enumerate(rates):
        for i in backbone + _groups_of(method, method.projector):
            assert step_rates[i] == pytest.approx(base * factors[step]), (step, i)
        for i in predictor:
            expected = base if fixed else base * factors[step]
            assert step_rates[i] == pytest.approx(expected), (step, i)


def test_a_schedule_that_ignores_the_fixed_rate_is_refused() -> None:
    method = _method()
    method.schedule_factory = lambda optimizer, **_: torch.optim.lr_scheduler.StepLR(optimizer, 5)
    method._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=10, max_epochs=1)
    with pytest.raises(ValueError, match="fixed_lr_modules"):
        method.configure_optimizers()
    method.fixed_predictor_lr = False
    assert method.configure_optimizers()["lr_scheduler"]["scheduler"]


def test_fixed_lr_modules_must_be_trained_modules() -> None:
    class Outside(SimSiam):
        def fixed_lr_modules(self) -> list[nn.Module]:
            return [nn.Linear(2, 2)]

    method = Outside(ConvNet(in_channels=3, widths=[4]), optimizer=partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match="outside its trainable_modules"):
        method.configure_optimizers()


def test_parameter_groups_skip_and_mark_groups() -> None:
    head, tail = nn.Linear(3, 2), nn.Linear(2, 1)
    model = nn.Sequential(head, tail)
    rest = parameter_groups([model], 0.1, skip=tail.parameters())
    fixed = parameter_groups([tail], 0.1, fixed_lr=True)
    assert [g["params"] for g in rest] == [[head.weight], [head.bias]]
    assert [g["params"] for g in fixed] == [[tail.weight], [tail.bias]]
    assert [g["weight_decay"] for g in fixed] == [0.1, 0.0]
    assert all(g["fixed_lr"] for g in fixed) and not any(FIXED_LR in g for g in rest)


def test_every_parameter_is_optimised_once() -> None:
    method = _method()
    method._trainer = SimpleNamespace(world_size=1, estimated_stepping_batches=10, max_epochs=1)
    optimizer = method.configure_optimizers()["optimizer"]
    optimised = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(optimised) == sorted(id(p) for p in method.parameters())


def test_collapse_monitor_logs_the_projection_std_and_warns(caplog) -> None:
    method = _method()
    logged = {}
    method.log = lambda key, value, **kwargs: logged.__setitem__(key, value)
    generator = torch.Generator().manual_seed(0)
    with caplog.at_level(logging.WARNING):
        healthy = method.monitor_collapse(torch.randn(4096, 16, generator=generator))
        assert healthy == pytest.approx(1 / math.sqrt(16), rel=0.05)
        assert "train/projection_std" in logged and not caplog.records
        collapsed = torch.ones(64, 16) + 1e-4 * torch.randn(64, 16, generator=generator)
        assert method.monitor_collapse(collapsed) < 1e-3
    assert len(caplog.records) == 1 and "collapsing" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"collapse_threshold": -1.0}, "collapse_threshold"),
        ({"prediction_hidden_dim": 0}, "prediction_hidden_dim"),
        ({"projection_dim": 0}, "projection_dim"),
    ],
)
def test_bad_settings_fail_with_a_message(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimSiam(
            ConvNet(in_channels=3, widths=[4]),
            optimizer=partial(torch.optim.SGD, lr=0.1),
            **settings,
        )


def test_one_view_is_refused() -> None:
    method = _method()
    with pytest.raises(ValueError, match="SimSiam needs 2 augmented view"):
        method.training_step(([torch.rand(4, 3, 8, 8)], torch.zeros(4, dtype=torch.long)), 0)


def test_evaluation_uses_the_backbone() -> None:
    method = _method()
    assert method.evaluation_encoders() == {"student": method.backbone}
    assert isinstance(method, SSLMethod) and not method.teachers()
