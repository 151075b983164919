"""SwAV: lightly's Sinkhorn-Knopp and swapped-prediction loss against the formulas, the
prototypes (unit norm, no bias, frozen for the first steps), multi-crop routing and the queue
(its order, its use in the codes only, its slice per process, its checks). The 2-process
equality (codes over the global batch) and the exact resume are the generic method tests'."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightly.loss.swav_loss import sinkhorn

from sslkit.methods.swav import FeatureQueue, SwAV
from sslkit.models import ConvNet
from tests.conftest import two_process_dir, two_process_worker


def reference_sinkhorn(scores: torch.Tensor, iterations: int, epsilon: float) -> torch.Tensor:
    """Codes Q (B x K): Q = exp(S / eps), then alternately every prototype's total set to 1/K
    and every sample's to 1/B, ending with the samples; returned times B (rows sum to 1)."""
    q = torch.exp(scores / epsilon)
    q = q / q.sum()
    batch, prototypes = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True) / prototypes
        q = q / q.sum(dim=1, keepdim=True) / batch
    return q * batch


def test_lightlys_sinkhorn_matches_the_formula_and_balances_the_prototypes() -> None:
    scores = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    codes = sinkhorn(scores, iterations=3, epsilon=0.5)
    torch.testing.assert_close(codes, reference_sinkhorn(scores, 3, 0.5))
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64, dtype=torch.float64))
    many = sinkhorn(scores, iterations=50, epsilon=0.5)
    torch.testing.assert_close(many.sum(dim=0), torch.full((8,), 8.0, dtype=torch.float64))


def make_method(**settings) -> SwAV:
    torch.manual_seed(0)
    defaults = {"projection_dim": 8, "hidden_dim": 16, "n_prototypes": 6}
    method = SwAV(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        batch_size=4,
        **{**defaults, **settings},
    )
    method._trainer = SimpleNamespace(current_epoch=0, global_step=0, world_size=1)
    method.log = lambda *args, **kwargs: None
    return method


def multicrop(n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, 16, 16, generator=generator) for _ in range(2)] + [
        torch.rand(n, 3, 8, 8, generator=generator) for _ in range(2)
    ]


def swapped_loss(high, low, temperature, codes_of):
    """Mean over global crops i of the mean over every other crop v of
    -sum_k q_i,k log softmax(z_v / T)_k, averaged over samples."""
    crops = list(high) + list(low)
    total = 0.0
    for i, scores in enumerate(high):
        q = codes_of(i, scores)
        terms = [
            -(q * F.log_softmax(z / temperature, dim=1)).sum(dim=1).mean()
            for v, z in enumerate(crops)
            if v != i
        ]
        total = total + sum(terms) / len(terms)
    return total / len(high)


def test_every_crop_predicts_the_codes_of_each_global_crop() -> None:
    method = make_method().train()
    views = multicrop()
    loss = method.training_step((views, torch.full((4,), -1)), 0)
    prototypes = method.prototypes.layer.weight
    torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(6))  # unit norm, no bias
    assert method.prototypes.layer.bias is None
    _, global_embeddings = method.embed(torch.cat(views[:2]))
    _, local_embeddings = method.embed(torch.cat(views[2:]))
    high = (global_embeddings @ prototypes.T).split(4)
    low = (local_embeddings @ prototypes.T).split(4)
    expected = swapped_loss(high, low, 0.1, lambda i, s: reference_sinkhorn(s.detach(), 3, 0.05))
    torch.testing.assert_close(loss, expected)
    assert loss.ndim == 0


def test_prototypes_get_no_update_in_the_first_steps() -> None:
    method = make_method(freeze_prototypes_steps=2).train()
    for step, frozen in ((0, True), (1, True), (2, False)):
        method.zero_grad()
        method._trainer.global_step = step
        method.training_step((multicrop(), torch.full((4,), -1)), step).backward()
        method.on_after_backward()
        assert (method.prototypes.layer.weight.grad is None) == frozen
        assert method.projector.layers[0].weight.grad.abs().sum() > 0


def test_the_queue_keeps_the_newest_embeddings_first_and_joins_only_the_codes() -> None:
    queue = FeatureQueue(size=6, crops=2, dim=3)
    first = [torch.full((2, 3), 1.0), torch.full((2, 3), -1.0)]
    second = [torch.full((2, 3), 2.0), torch.full((2, 3), -2.0)]
    queue.push(first)
    assert not queue.is_full() and int(queue.filled) == 2
    queue.push(second)
    queue.push(second)
    assert queue.is_full()
    assert queue.embeddings[0, :, 0].tolist() == [2, 2, 2, 2, 1, 1]
    queue.push(first)
    assert queue.embeddings[1, :, 0].tolist() == [-1, -1, -2, -2, -2, -2]
    with pytest.raises(ValueError, match="method.queue_size"):
        queue.push([torch.zeros(8, 3), torch.zeros(8, 3)])

    method = make_method(queue_size=8).train()
    batches = [multicrop(seed=s) for s in range(3)]
    for step, views in enumerate(batches[:2]):
        method.training_step((views, torch.full((4,), -1)), step)
    assert method.queue.is_full()
    queued = method.queue.embeddings.clone()
    loss = method.training_step((batches[2], torch.full((4,), -1)), 2)
    # By hand: the queue's scores join each global crop's Sinkhorn step, then are dropped.
    prototypes = method.prototypes.layer.weight
    _, global_embeddings = method.embed(torch.cat(batches[2][:2]))
    _, local_embeddings = method.embed(torch.cat(batches[2][2:]))
    high = (global_embeddings @ prototypes.T).split(4)
    low = (local_embeddings @ prototypes.T).split(4)

    def codes(i, scores):
        joined = torch.cat([scores.detach(), queued[i] @ prototypes.T.detach()])
        return reference_sinkhorn(joined, 3, 0.05)[:4]

    torch.testing.assert_close(loss, swapped_loss(high, low, 0.1, codes))


def test_a_queue_that_does_not_hold_whole_global_batches_stops_training() -> None:
    method = make_method(queue_size=10)
    with pytest.raises(ValueError, match="method.queue_size=8"):
        method.on_fit_start()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"n_prototypes": 0}, "method.n_prototypes"),
        ({"temperature": 0.0}, "method.temperature"),
        ({"sinkhorn_epsilon": -1.0}, "method.sinkhorn_epsilon"),
        ({"queue_size": -1}, "method.queue_size"),
    ],
)
def test_bad_settings_are_refused_with_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_method(**settings)


def _queue_run(process_rank: int | None, world: int = 2, per_rank: int = 6) -> dict:
    """Three steps of SwAV with a queue of one global batch (used from the second step), on
    this process's half of every batch (``process_rank``) or on the whole batch (None)."""
    import torch.distributed as dist

    method = make_method(queue_size=world * per_rank).double()
    method._trainer.world_size = world if process_rank is not None else 1
    for module in method.modules():  # per-process batch statistics differ: keep them fixed
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    losses = []
    for step in range(3):
        views = [v.double() for v in multicrop(world * per_rank, seed=step)]
        if process_rank is not None:
            views = [v[process_rank * per_rank : (process_rank + 1) * per_rank] for v in views]
        optimizer.zero_grad()
        loss = method.training_step((views, torch.full((len(views[0]),), -1)), step)
        loss.backward()
        if process_rank is not None:
            for parameter in method.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= world
        losses.append(loss.detach())
        optimizer.step()
    return {"losses": torch.stack(losses), "state": method.state_dict()}


@two_process_worker
def _queue_worker(process_rank: int, out_dir) -> None:
    torch.save(_queue_run(process_rank), out_dir / f"rank{process_rank}.pt")


def test_two_processes_with_a_queue_equal_one_process_on_the_global_batch(
    two_process_runs,
) -> None:
    """Each process scores its slice of the (gathered, identical) queue, so the Sinkhorn codes'
    columns over both processes are the global batch and the whole queue, as on one process."""
    out_dir = two_process_dir(two_process_runs, _queue_worker)
    ranks = [torch.load(out_dir / f"rank{r}.pt") for r in range(2)]
    single = _queue_run(None)
    close = {"rtol": 1e-9, "atol": 1e-9}
    torch.testing.assert_close(
        (ranks[0]["losses"] + ranks[1]["losses"]) / 2, single["losses"], **close
    )
    for key, value in single["state"].items():
        for result in ranks:
            torch.testing.assert_close(result["state"][key], value, **close, msg=key)
    assert int(single["state"]["queue.filled"]) == 12
