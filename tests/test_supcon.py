"""SupCon: the labels mode of SimCLR (``method.positives=labels``) and its loss.

The loss is checked against a loop over anchors written from the paper's L_out formula, against
InfoNCE where every class has one sample, on anchors without positives and on 2 gloo processes
(loss and gradients equal one process on the concatenated batch, labels gathered with the
embeddings). The method's views mode must stay today's SimCLR, bit for bit.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from sslkit.losses import info_nce
from sslkit.losses.supcon import supcon
from sslkit.methods.simclr import SimCLR
from sslkit.models import ConvNet
from tests.conftest import two_process_dir, two_process_worker

WORLD_SIZE = 2
PER_RANK = 6
#: Sums over a batch split in two and over the whole batch differ in their last float32 bits.
CLOSE = {"rtol": 1e-5, "atol": 1e-5}


def _views(num_views: int, n: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return [base + 0.7 * torch.randn(n, d, generator=generator, dtype=torch.float64)
            for _ in range(num_views)]  # fmt: skip


def loop_supcon(views: list[torch.Tensor], labels: list[int], temperature: float) -> float:
    """L_out of Khosla et al. (eq. 2) in plain Python: for each anchor with a positive, minus the
    mean over its positives of the log-softmax over every other row; the mean over anchors."""
    rows = [row for view in views for row in view.tolist()]
    row_labels = [label for _ in views for label in labels]
    units = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(units[i], units[j], strict=True)) / temperature

    terms = []
    for i in range(len(rows)):
        others = [j for j in range(len(rows)) if j != i]
        positives = [p for p in others if row_labels[p] == row_labels[i]]
        if not positives:
            continue
        log_denominator = math.log(sum(math.exp(sim(i, a)) for a in others))
        terms.append(-sum(sim(i, p) - log_denominator for p in positives) / len(positives))
    return sum(terms) / len(terms)


# ------------------------------------------------------------------------------ the loss
@pytest.mark.parametrize(
    ("num_views", "labels", "temperature"),
    [
        (2, [0, 1, 0, 2, 1, 0], 0.5),
        (2, [3, 3, 3, 3], 0.1),
        (3, [0, 1, 1, 2, 0], 0.2),
        (1, [0, 1, 0, 1, 1], 0.3),
        (1, [0, 1, 0, 2, 2, 5], 1.0),  # class 1 and class 5: one sample, one view, no positive
    ],
)
def test_loss_matches_a_loop_over_anchors(num_views, labels, temperature):
    views = _views(num_views, len(labels), 4, seed=len(labels) + num_views)
    got = supcon(views, torch.tensor(labels), temperature)
    assert got.item() == pytest.approx(loop_supcon(views, labels, temperature), rel=1e-10)


def test_one_sample_per_class_is_simclr_info_nce():
    z_a, z_b = (v.requires_grad_(True) for v in _views(2, 8, 5, seed=3))
    ours = supcon([z_a, z_b], torch.arange(8) * 3, 0.2)
    grads = torch.autograd.grad(ours, [z_a, z_b])
    reference = info_nce(z_a, z_b, 0.2)
    expected = torch.autograd.grad(reference, [z_a, z_b])
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_same_class_samples_are_positives_not_negatives():
    # Two samples of one class: SupCon pulls them together, InfoNCE pushes them apart.
    z_a, z_b = (v.requires_grad_(True) for v in _views(2, 4, 3, seed=1))
    labels = torch.tensor([0, 0, 1, 2])
    (grad_supcon,) = torch.autograd.grad(supcon([z_a, z_b], labels, 0.5), [z_a])
    (grad_info_nce,) = torch.autograd.grad(info_nce(z_a, z_b, 0.5), [z_a])
    assert not torch.allclose(grad_supcon[:2], grad_info_nce[:2])
    torch.testing.assert_close(
        supcon([z_a, z_b], labels, 0.5).detach(),
        torch.tensor(loop_supcon([z_a.detach(), z_b.detach()], [0, 0, 1, 2], 0.5)).double(),
    )


def test_anchor_without_positive_is_left_out_but_stays_a_negative():
    views = _views(1, 5, 4, seed=11)
    labels = torch.tensor([0, 0, 1, 1, 7])  # sample 4: the only one of its class
    z = views[0].clone().requires_grad_(True)
    loss = supcon([z], labels, 0.5)
    # The mean over the 4 anchors that have a positive, each normalised over all 4 others.
    assert loss.item() == pytest.approx(loop_supcon(views, labels.tolist(), 0.5), rel=1e-10)
    (grad,) = torch.autograd.grad(loss, [z])
    assert grad[4].abs().sum() > 0  # a negative of the others, not an anchor of its own
    # Dropping it from the batch changes the denominators: it was a candidate.
    assert not math.isclose(loss.item(), supcon([views[0][:4]], labels[:4], 0.5).item())


def test_no_anchor_with_a_positive_gives_a_zero_that_reaches_the_inputs():
    z = _views(1, 4, 3)[0].requires_grad_(True)
    loss = supcon([z], torch.tensor([0, 1, 2, 3]), 0.5)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, [z])
    assert torch.equal(grad, torch.zeros_like(z))


def test_collapsed_embeddings_give_the_log_of_the_candidates_per_positive():
    # Every similarity equal: each log-softmax term is -log(candidates).
    z = torch.ones(4, 3, dtype=torch.float64)
    loss = supcon([z, z], torch.tensor([0, 0, 1, 1]), 0.3)
    assert loss.item() == pytest.approx(math.log(7), rel=1e-12)


@pytest.mark.parametrize(
    ("views", "labels", "temperature", "message"),
    [
        ([torch.randn(4, 3)], torch.tensor([0, 1, -1, 1]), 0.5, r"1 of the 4 are unlabelled"),
        ([torch.randn(4, 3)], torch.eye(4, dtype=torch.long), 0.5, "multi-hot labels"),
        ([torch.randn(4, 3)], torch.tensor([0.0, 1.0, 0.0, 1.0]), 0.5, "integer class labels"),
        ([torch.randn(4, 3)], torch.tensor([0, 1, 0]), 0.5, "one per sample"),
        ([torch.randn(4, 3), torch.randn(3, 3)], torch.tensor([0, 1, 0, 1]), 0.5, "one 2-D"),
        ([], torch.tensor([0]), 0.5, "at least one view"),
        ([torch.randn(4, 3)], torch.tensor([0, 1, 0, 1]), 0.0, "temperature must be > 0"),
    ],
)
def test_bad_inputs_fail_clearly(views, labels, temperature, message):
    with pytest.raises(ValueError, match=message):
        supcon(views, labels, temperature)


# ------------------------------------------------------------------------------ the method
def _method(positives: str = "views", **kwargs) -> SimCLR:
    torch.manual_seed(0)
    method = SimCLR(
        ConvNet(in_channels=3, widths=[4, 8]),
        temperature=0.3,
        projection_dim=8,
        hidden_dim=16,
        positives=positives,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        **kwargs,
    )
    method.log = lambda *args, **kw: None
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return method


def _batch(n: int = 8, seed: int = 0, num_views: int = 2):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=generator)
    views = [images.flip(-1) if v % 2 else images for v in range(num_views)]
    views = [v + 0.1 * torch.rand(v.shape, generator=generator) for v in views]
    return views, torch.arange(n) % 3


def test_views_is_the_default_and_is_simclr_bit_for_bit():
    method = _method()
    assert method.positives == "views"
    views, targets = _batch()
    loss = method.training_step((views, targets), 0)
    # SimCLR's step before the labels mode existed: one backbone pass, InfoNCE of the halves.
    z_a, z_b = method.projector(method.backbone(torch.cat(views))).chunk(2)
    assert torch.equal(loss, info_nce(z_a, z_b, 0.3))


def test_labels_mode_is_supcon_on_the_projections():
    method = _method("labels")
    views, targets = _batch(num_views=2)
    loss = method.training_step((views, targets), 0)
    z = method.projector(method.backbone(torch.cat(views))).chunk(2)
    assert torch.equal(loss, supcon(z, targets, 0.3))
    assert not torch.allclose(loss, info_nce(*z, 0.3))
    # One sample per class: the same loss as the views mode.
    distinct = torch.arange(len(targets))
    torch.testing.assert_close(
        method.training_step((views, distinct), 0), _method().training_step((views, targets), 0)
    )


def test_labels_mode_trains_from_a_single_view():
    method = _method("labels")
    views, targets = _batch(num_views=1)
    loss = method.training_step((views, targets), 0)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    with pytest.raises(ValueError, match="needs 2 augmented view"):
        _method().training_step((views, targets), 0)


def test_labels_mode_fails_clearly_on_unlabelled_images():
    views, targets = _batch()
    targets[2] = -1
    with pytest.raises(ValueError, match="positives=labels needs a class label") as info:
        _method("labels").training_step((views, targets), 0)
    assert "method.positives=views" in str(info.value)


def test_labels_mode_refuses_multilabel_data():
    with pytest.raises(ValueError, match="needs single-label classes"):
        _method("labels", multilabel=True, num_classes=3)
    views, _ = _batch()
    multi_hot = torch.zeros(8, 3, dtype=torch.long)
    multi_hot[:, 0] = 1
    with pytest.raises(ValueError, match="one class label per image"):
        _method("labels").training_step((views, multi_hot), 0)
    # The views mode needs no labels, multi-hot or not.
    _method("views", multilabel=True, num_classes=3)


def test_labels_mode_refuses_views_of_different_sizes():
    views, targets = _batch()
    views[1] = views[1][..., :6, :6]
    with pytest.raises(ValueError, match="views of one size"):
        _method("labels").training_step((views, targets), 0)


def test_unknown_positives_fail_when_built():
    with pytest.raises(ValueError, match=r"method.positives='classes' is not known"):
        _method("classes")


def test_positives_is_a_config_setting(hydra_run):
    cfg = hydra_run("train", ["experiment=simclr_labels_convnet_synthetic"])
    assert cfg.method.positives == "labels"
    assert hydra_run("train", ["experiment=simclr_convnet_synthetic"]).method.positives == "views"


# ----------------------------------------------------------------------- two processes
#: Labels of the global batch (rank 0 holds the first PER_RANK): class 3 has one sample (an
#: anchor only with its other view), class 4 one sample per process (positives across them).
GLOBAL_LABELS = torch.tensor([0, 1, 2, 0, 3, 4, 1, 2, 0, 4, 1, 2])
STEPS = 3


def _global_embeddings(num_views: int) -> list[torch.Tensor]:
    return _views(num_views, WORLD_SIZE * PER_RANK, 5, seed=num_views)


def _method_steps(process_rank: int | None) -> dict:
    """Losses and (process-averaged) gradients of SGD steps of the labels mode, and the state;
    one process on the global batch when ``process_rank`` is None."""
    method = _method("labels", num_classes=5)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    losses, gradients = [], []
    for step in range(STEPS):
        views, _ = _batch(WORLD_SIZE * PER_RANK, seed=step)
        labels = GLOBAL_LABELS.roll(step)
        if process_rank is not None:
            local = slice(process_rank * PER_RANK, (process_rank + 1) * PER_RANK)
            views, labels = [v[local] for v in views], labels[local]
        optimizer.zero_grad()
        loss = method.training_step((views, labels), step)
        loss.backward()
        if process_rank is not None:
            for parameter in method.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= WORLD_SIZE
        losses.append(loss.detach())
        gradients.append({n: p.grad.clone() for n, p in method.named_parameters()})
        optimizer.step()
    return {"losses": losses, "gradients": gradients, "state": method.state_dict()}


@two_process_worker
def _worker(process_rank: int, out_dir: Path) -> None:
    local = slice(process_rank * PER_RANK, (process_rank + 1) * PER_RANK)
    results = {}
    for num_views in (1, 2):
        views = [v[local].clone().requires_grad_(True) for v in _global_embeddings(num_views)]
        loss = supcon(views, GLOBAL_LABELS[local], 0.2)
        loss.backward()
        local_only = supcon([v.detach() for v in views], GLOBAL_LABELS[local], 0.2,
                            gather_distributed=False)  # fmt: skip
        results[num_views] = {
            "loss": loss.detach(),
            "grads": [v.grad for v in views],
            "local_only": local_only,
        }
    results["method"] = _method_steps(process_rank)
    torch.save(results, out_dir / f"rank{process_rank}.pt")


@pytest.fixture(scope="module")
def ranks(two_process_runs: Path) -> list[dict]:
    out_dir = two_process_dir(two_process_runs, _worker)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("num_views", [1, 2])
def test_two_processes_equal_one_process_on_the_global_batch(ranks, num_views):
    views = [v.clone().requires_grad_(True) for v in _global_embeddings(num_views)]
    single = supcon(views, GLOBAL_LABELS, 0.2)
    single.backward()
    mean = torch.stack([r[num_views]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean, single.detach(), rtol=1e-10, atol=1e-12)
    # Each process's inputs get the gradients of every process's loss through the gather;
    # DDP's averaging over the processes then gives the single-process gradient.
    for r, result in enumerate(ranks):
        local = slice(r * PER_RANK, (r + 1) * PER_RANK)
        for got, view in zip(result[num_views]["grads"], views, strict=True):
            torch.testing.assert_close(got / WORLD_SIZE, view.grad[local], rtol=1e-10, atol=1e-12)


def test_two_processes_take_positives_and_negatives_from_each_other(ranks):
    embeddings = _global_embeddings(1)
    for r, result in enumerate(ranks):
        local = slice(r * PER_RANK, (r + 1) * PER_RANK)
        expected = supcon([embeddings[0][local]], GLOBAL_LABELS[local], 0.2)
        torch.testing.assert_close(result[1]["local_only"], expected)
        assert not torch.allclose(result[1]["loss"], expected)


def test_labels_mode_on_two_processes_trains_like_one_process(ranks):
    single = _method_steps(None)
    for step in range(STEPS):
        mean = torch.stack([r["method"]["losses"][step] for r in ranks]).mean()
        torch.testing.assert_close(mean, single["losses"][step], **CLOSE)
        for result in ranks:
            for name, value in single["gradients"][step].items():
                torch.testing.assert_close(
                    result["method"]["gradients"][step][name], value, **CLOSE,
                    msg=lambda m, s=step, k=name: f"step {s}: {k}\n{m}",
                )  # fmt: skip
    for result in ranks:
        for key, value in single["state"].items():
            torch.testing.assert_close(result["method"]["state"][key], value, **CLOSE)
