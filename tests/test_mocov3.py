"""MoCo v3: its loss against the formula (the keys of the batch as negatives, scaled by 2 T),
the momentum encoder as the teacher, and its settings' checks. The 2-process equality and the
exact resume are the generic method tests' (tests/test_distributed_methods.py,
tests/test_exact_resume.py)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from sslkit.losses.moco import moco_v3_info_nce
from sslkit.methods.mocov3 import MoCoV3
from sslkit.models import ConvNet


def reference_loss(queries, keys, temperature):
    """The formula term by term: 2 T * mean_i -log(exp(s_ii) / sum_j exp(s_ij))."""
    terms = []
    for i, q in enumerate(queries):
        q = q / q.norm()
        scores = [torch.exp(torch.dot(q, k / k.norm()) / temperature) for k in keys]
        terms.append(-torch.log(scores[i] / sum(scores)))
    return 2 * temperature * torch.stack(terms).mean()


def test_loss_matches_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    keys = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    for temperature in (0.2, 1.0):
        torch.testing.assert_close(
            moco_v3_info_nce(queries, keys, temperature),
            reference_loss(queries, keys, temperature),
        )


def test_no_gradient_reaches_the_keys_and_the_batch_order_does_not_matter() -> None:
    queries = torch.randn(5, 4, requires_grad=True)
    keys = torch.randn(5, 4, requires_grad=True)
    loss = moco_v3_info_nce(queries, keys, 0.2)
    loss.backward()
    assert keys.grad is None and queries.grad.abs().sum() > 0
    order = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(moco_v3_info_nce(queries[order], keys[order], 0.2), loss)


def test_loss_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same 2-D shape"):
        moco_v3_info_nce(torch.randn(4, 6), torch.randn(3, 6), 0.2)
    with pytest.raises(ValueError, match="empty batch"):
        moco_v3_info_nce(torch.randn(0, 6), torch.randn(0, 6), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        moco_v3_info_nce(torch.randn(4, 6), torch.randn(4, 6), 0.0)


def make_method(**settings) -> MoCoV3:
    torch.manual_seed(0)
    defaults = {"projection_dim": 8, "hidden_dim": 16, "prediction_hidden_dim": 16}
    return MoCoV3(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        batch_size=4,
        **{**defaults, **settings},
    )


def test_the_step_is_the_symmetric_loss_of_predicted_queries_against_momentum_keys() -> None:
    method = make_method().train()
    views = [torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)]
    loss = method.training_step((views, torch.full((4,), -1)), 0)
    # The same step by hand, from the same modules in the same (train) mode.
    images = torch.cat(views)
    q_a, q_b = method.predictor(method.projector(method.backbone(images))).chunk(2)
    with torch.no_grad():
        k_a, k_b = method.teacher_ema.projector(method.teacher_ema.backbone(images)).chunk(2)
    expected = moco_v3_info_nce(q_a, k_b, 0.2) + moco_v3_info_nce(q_b, k_a, 0.2)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in method.teacher_ema.parameters())
    assert method.predictor.layers[0].weight.grad.abs().sum() > 0


def test_the_projector_has_batch_norm_on_every_layer_and_the_momentum_rises_to_one() -> None:
    method = make_method(num_layers=3, momentum=0.95)
    norms = [m for m in method.projector.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 3
    assert method.evaluation_encoders()["teacher"] is method.teacher_ema.backbone
    assert method.teacher_ema.momentum_at(0, 10) == pytest.approx(0.95)
    assert method.teacher_ema.momentum_at(10, 10) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"temperature": 0.0}, "method.temperature"),
        ({"hidden_dim": 0}, "method.hidden_dim"),
        ({"num_layers": 1}, "method.num_layers"),
        ({"momentum": 1.5}, "method.momentum"),
    ],
)
def test_bad_settings_are_refused_with_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_method(**settings)
