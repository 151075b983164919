"""NNCLR: nearest-neighbour lookup, loss, support set and its size checks."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.methods.nnclr import NNCLR, SupportSet, nearest_neighbours
from sslkit.models import ConvNet

BATCH = 6
DIM = 8


def build(support_set_size: int = 24, **kwargs) -> NNCLR:
    torch.manual_seed(0)
    method = NNCLR(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        batch_size=BATCH,
        projection_dim=DIM,
        hidden_dim=16,
        prediction_hidden_dim=16,
        support_set_size=support_set_size,
        **kwargs,
    )
    method.log = lambda *args, **kwargs: None
    return method


def attach(method: NNCLR, world_size: int = 1, train_size: int | None = None) -> None:
    """A stand-in trainer; with ``train_size`` it has a datamodule holding that many images."""
    trainer = SimpleNamespace(world_size=world_size, global_step=0)
    if train_size is not None:
        trainer.datamodule = SimpleNamespace(dataset=lambda split: range(train_size))
    method._trainer = trainer


def batch(seed: int) -> tuple[list[Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, 8, 8, generator=generator)
    views = [images, images.flip(-1) + 0.1 * torch.rand(images.shape, generator=generator)]
    return views, torch.zeros(BATCH, dtype=torch.long)


# ------------------------------------------------------------------ nearest neighbours


def reference_nearest(queries: Tensor, support: Tensor) -> Tensor:
    """Loop over queries and candidates: the candidate of largest cosine, normalised."""
    rows = []
    for q in queries:
        cosines = [float(q @ s / (q.norm() * s.norm())) for s in support]
        best = max(range(len(support)), key=cosines.__getitem__)
        rows.append(support[best] / support[best].norm())
    return torch.stack(rows)


def test_nearest_neighbour_is_the_support_row_of_largest_cosine() -> None:
    torch.manual_seed(1)
    queries, support = torch.randn(5, DIM), torch.randn(20, DIM) * 3  # norms differ from 1
    torch.testing.assert_close(
        nearest_neighbours(queries, support, 20), reference_nearest(queries, support)
    )


def test_nearest_neighbour_looks_only_at_filled_rows() -> None:
    torch.manual_seed(2)
    queries, support = torch.randn(5, DIM), torch.randn(20, DIM)
    support[7:] = queries[0]  # unfilled rows identical to a query must never be picked
    found = nearest_neighbours(queries, support, 7)
    torch.testing.assert_close(found, reference_nearest(queries, support[:7]))


def test_an_empty_support_set_gives_each_query_itself() -> None:
    queries = torch.randn(4, DIM)
    found = nearest_neighbours(queries, torch.zeros(10, DIM), torch.tensor(0))
    torch.testing.assert_close(found, F.normalize(queries, dim=1))


def test_the_lookup_carries_no_gradient() -> None:
    queries = torch.randn(3, DIM, requires_grad=True)
    assert not nearest_neighbours(queries, torch.randn(6, DIM), 6).requires_grad
    assert not nearest_neighbours(queries, torch.randn(6, DIM), 0).requires_grad


# ----------------------------------------------------------------------------- the loss


def reference_ntxent(anchors: Tensor, others: Tensor, temperature: float) -> float:
    """SimCLR's 2N-way loss written out: for each of the 2N vectors, -log of the softmax weight
    of its pair among the 2N - 1 others."""
    vectors = F.normalize(torch.cat([anchors, others]), dim=1).double()
    n = anchors.shape[0]
    total = 0.0
    for i in range(2 * n):
        pair = (i + n) % (2 * n)
        scores = {j: float(vectors[i] @ vectors[j]) / temperature for j in range(2 * n) if j != i}
        log_denominator = torch.logsumexp(torch.tensor(list(scores.values())), dim=0)
        total += float(log_denominator) - scores[pair]
    return total / (2 * n)


def test_loss_is_the_symmetric_ntxent_of_neighbours_and_predictions() -> None:
    method = build(support_set_size=12, temperature=0.3)
    for module in method.modules():  # fixed BatchNorm: the forward below sees the same outputs
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    torch.manual_seed(3)
    method.support_set.add(torch.randn(12, DIM))
    views, targets = batch(0)
    with torch.no_grad():
        z = method.projector(method.backbone(torch.cat(views)))
        p = method.predictor(z)
    z_a, z_b, p_a, p_b = *z.chunk(2), *p.chunk(2)
    support = method.support_set.embeddings
    nn_a, nn_b = reference_nearest(z_a, support), reference_nearest(z_b, support)
    expected = 0.5 * (reference_ntxent(nn_a, p_b, 0.3) + reference_ntxent(nn_b, p_a, 0.3))
    method.online_probe = None
    loss = method.training_step((views, targets), 0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_positive_is_a_neighbour_not_the_other_view() -> None:
    # With a support set holding only one embedding, every view's positive is that embedding,
    # so the loss no longer depends on which prediction is paired with which view.
    method = build(support_set_size=12)
    method.support_set.add(torch.randn(1, DIM))
    views, targets = batch(0)
    shuffled = [views[0], views[1][torch.randperm(BATCH)]]
    method.online_probe = None
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    assert method.training_step((views, targets), 0).item() == pytest.approx(
        method.training_step((shuffled, targets), 0).item(), rel=1e-5
    )


def test_gradients_reach_backbone_projector_and_predictor() -> None:
    method = build()
    method.training_step(batch(0), 0).backward()
    for name in ("backbone", "projector", "predictor"):
        grads = [p.grad for p in getattr(method, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


# ------------------------------------------------------------------------ support set


def test_support_set_is_first_in_first_out_and_normalised() -> None:
    support = SupportSet(size=6, dim=2)
    first, second, third = torch.randn(4, 2), torch.randn(4, 2), torch.randn(2, 2)
    support.add(first)
    assert int(support.filled) == 4 and int(support.next_row) == 4
    torch.testing.assert_close(support.embeddings[:4], F.normalize(first, dim=1))
    support.add(second)  # wraps: rows 4, 5 then 0, 1
    assert int(support.filled) == 6 and int(support.next_row) == 2
    expected = F.normalize(torch.cat([second[2:], first[2:], second[:2]]), dim=1)
    torch.testing.assert_close(support.embeddings, expected)
    support.add(third)
    torch.testing.assert_close(support.embeddings[2:4], F.normalize(third, dim=1))
    assert int(support.next_row) == 4


def test_support_set_receives_the_first_views_after_the_optimiser_step() -> None:
    method = build(support_set_size=12)
    views, targets = batch(0)
    first = method.training_step((views, targets), 0)
    assert int(method.support_set.filled) == 0, "the step itself must not change the set"
    again = method.training_step((views, targets), 0)
    assert torch.equal(first, again), "a step depends only on the weights, the set and the batch"
    method._trainer = SimpleNamespace(global_step=0)
    method.after_optimizer_step()
    # both calls above were micro-batches of this optimiser step: 2 x 6 embeddings, in order
    assert int(method.support_set.filled) == 12
    with torch.no_grad():
        z_a = method.projector(method.backbone(torch.cat(views)))[:BATCH]
    torch.testing.assert_close(method.support_set.embeddings[:BATCH], F.normalize(z_a, dim=1))
    torch.testing.assert_close(method.support_set.embeddings[BATCH:], F.normalize(z_a, dim=1))


def test_support_set_round_trips_through_a_checkpoint() -> None:
    method = build(support_set_size=12)
    method.support_set.add(torch.randn(8, DIM))
    state = method.state_dict()
    for key in ("support_set.embeddings", "support_set.next_row", "support_set.filled"):
        assert key in state
    restored = build(support_set_size=12)
    restored.load_state_dict(state)
    assert torch.equal(restored.support_set.embeddings, method.support_set.embeddings)
    assert int(restored.support_set.next_row) == 8 and int(restored.support_set.filled) == 8
    queries = torch.randn(5, DIM)
    assert torch.equal(restored.support_set.nearest(queries), method.support_set.nearest(queries))


# ------------------------------------------------------------------------ bad settings


@pytest.mark.parametrize(
    ("size", "world_size", "train_size", "suggested"),
    [(50, 1, 64, 48), (50, 2, None, 48), (4, 1, 64, 6), (100, 2, 64, 60)],
)
def test_a_size_not_a_multiple_of_the_global_batch_stops_training(
    size: int, world_size: int, train_size: int | None, suggested: int
) -> None:
    method = build(support_set_size=size)
    attach(method, world_size, train_size)
    with pytest.raises(ValueError, match="not a multiple") as error:
        method.on_train_start()
    assert f"method.support_set_size={suggested}." in str(error.value)


def test_a_support_set_larger_than_the_training_set_stops_training() -> None:
    method = build(support_set_size=72)
    attach(method, 1, train_size=64)
    with pytest.raises(ValueError, match="larger than the training set") as error:
        method.on_train_start()
    assert "method.support_set_size=60." in str(error.value)


def test_fitting_sizes_pass_and_without_a_datamodule_only_the_batch_is_checked() -> None:
    method = build(support_set_size=48)
    attach(method, 2, train_size=48)
    method.on_train_start()
    method = build(support_set_size=1200)
    attach(method, 2)  # the stand-in trainer of the 2-process test has no datamodule
    method.on_train_start()


@pytest.mark.parametrize("size", [0, -12, 1.5, True])
def test_support_set_size_must_be_a_positive_integer(size) -> None:
    with pytest.raises(ValueError, match="method.support_set_size must be a positive integer"):
        build(support_set_size=size)


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="method.temperature must be > 0"):
        build(temperature=0.0)
