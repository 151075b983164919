"""DINO: its loss (lightly's DINOLoss) against the formula, the centre's update, the teacher
temperature's warmup, multi-crop routing (global crops to both networks, every crop to the
student), the frozen last layer and the per-parameter gradient clipping. The 2-process
equality (the centre over the global batch) and the exact resume are the generic method
tests'."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss

from sslkit.methods.dino import DINO, clip_each_parameter, crops_by_size, teacher_temperature
from sslkit.models import ConvNet


def reference_loss(teacher_out, student_out, center, teacher_temp, student_temp):
    """Mean over the pairs (teacher crop t, student crop s), s != t, and the samples of
    -sum_k softmax((t - c) / T_t)_k * log softmax(s / T_s)_k."""
    total, pairs = 0.0, 0
    for t, teacher in enumerate(teacher_out):
        target = F.softmax((teacher - center) / teacher_temp, dim=-1)
        for s, student in enumerate(student_out):
            if s == t:
                continue
            log_prob = F.log_softmax(student / student_temp, dim=-1)
            total = total + (-(target * log_prob).sum(dim=-1)).mean()
            pairs += 1
    return total / pairs


def test_lightlys_loss_matches_the_formula_and_moves_the_centre() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher = [torch.randn(5, 16, generator=generator, dtype=torch.float64) for _ in range(2)]
    student = [torch.randn(5, 16, generator=generator, dtype=torch.float64) for _ in range(5)]
    loss_fn = DINOLoss(output_dim=16, teacher_temp=0.07, student_temp=0.1, center_momentum=0.8)
    loss_fn.center = torch.randn(1, 1, 16, generator=generator, dtype=torch.float64)
    center = loss_fn.center.clone()
    loss = loss_fn(teacher, student, teacher_temp=0.05)
    torch.testing.assert_close(loss, reference_loss(teacher, student, center[0], 0.05, 0.1))
    expected = 0.8 * center + 0.2 * torch.cat(teacher).mean(dim=0).view(1, 1, -1)
    torch.testing.assert_close(loss_fn.center, expected)


def test_teacher_temperature_warms_up_linearly_per_epoch() -> None:
    temps = [teacher_temperature(e, 4, 0.04, 0.07) for e in range(6)]
    assert temps == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert teacher_temperature(0, 0, 0.04, 0.07) == 0.07
    assert teacher_temperature(0, 1, 0.04, 0.07) == 0.04


def make_method(**settings) -> DINO:
    torch.manual_seed(0)
    defaults = {"output_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8}
    method = DINO(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        batch_size=4,
        **{**defaults, **settings},
    )
    method._trainer = SimpleNamespace(current_epoch=0, global_step=0)
    method.log = lambda *args, **kwargs: None
    return method


def multicrop(n: int = 4) -> list[torch.Tensor]:
    return [torch.rand(n, 3, 16, 16), torch.rand(n, 3, 16, 16)] + [
        torch.rand(n, 3, 8, 8) for _ in range(3)
    ]


def test_global_crops_go_to_both_networks_and_every_crop_to_the_student() -> None:
    method = make_method(teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=2)
    method.train()
    views = multicrop()
    center = method.criterion.center.clone()
    loss = method.training_step((views, torch.full((4,), -1)), 0)
    # By hand, from the same modules in the same mode: crops of one size batched together.
    student = torch.cat(
        [method.head(method.backbone(torch.cat(views[:2]))),
         method.head(method.backbone(torch.cat(views[2:])))]
    ).split(4)  # fmt: skip
    with torch.no_grad():
        teacher = method.teacher_ema.head(method.teacher_ema.backbone(torch.cat(views[:2])))
    expected = reference_loss(teacher.split(4), student, center[0], 0.04, 0.1)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in method.teacher_ema.parameters())


def test_the_last_layer_is_frozen_in_the_first_epochs_only() -> None:
    method = make_method(freeze_last_layer_epochs=1).train()
    for epoch, frozen in ((0, True), (1, False)):
        method.zero_grad()
        method._trainer.current_epoch = epoch
        method.training_step((multicrop(), torch.full((4,), -1)), 0).backward()
        method.on_after_backward()
        last = method.head.last_layer.parametrizations.weight.original1.grad
        assert (last is None) == frozen
        assert method.head.layers[0].weight.grad.abs().sum() > 0


def test_each_parameter_is_clipped_to_the_norm_on_its_own() -> None:
    small, large = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    small.grad, large.grad = torch.full((3,), 0.1), torch.full((4,), 10.0)
    clip_each_parameter([small, large], 3.0)
    torch.testing.assert_close(small.grad, torch.full((3,), 0.1))  # under the limit: kept
    torch.testing.assert_close(large.grad.norm(), torch.tensor(3.0), rtol=1e-5, atol=0)


def test_the_centre_is_in_the_state_dict() -> None:
    method = make_method().train()
    method.training_step((multicrop(), torch.full((4,), -1)), 0)
    state = method.state_dict()
    assert torch.equal(state["criterion.center"], method.criterion.center)
    assert state["criterion.center"].abs().sum() > 0
    fresh = make_method()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.center, method.criterion.center)


def test_crops_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 3 view"):
        crops_by_size([torch.zeros(2, 3, 8, 8)] * 2, 3, "DINO")
    with pytest.raises(ValueError, match="global crops must share one size"):
        crops_by_size([torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)], 2, "DINO")
    global_views, local_views = crops_by_size(multicrop(), 2, "DINO")
    assert len(global_views) == 2 and len(local_views) == 3


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"output_dim": 0}, "method.output_dim"),
        ({"teacher_temp": 0.0}, "method.teacher_temp"),
        ({"center_momentum": 1.5}, "method.center_momentum"),
        ({"clip_grad": -1.0}, "method.clip_grad"),
    ],
)
def test_bad_settings_are_refused_with_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_method(**settings)
