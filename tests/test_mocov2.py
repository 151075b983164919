"""MoCo v2: its loss against the formula, the queue's order and wrap, the queue-size checks at the
start of training, and the queue in checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from sslkit.losses.moco import moco_info_nce
from sslkit.methods.mocov2 import KeyQueue, MoCoV2
from sslkit.models import ConvNet
from tests.conftest import two_process_dir, two_process_worker


def reference_loss(queries, keys, queue, temperature):
    """The formula term by term: -log(exp(s+) / (exp(s+) + sum_j exp(s_j))), averaged."""
    terms = []
    for q, k in zip(queries, keys, strict=True):
        q = q / q.norm()
        k = k / k.norm()
        positive = torch.exp(torch.dot(q, k) / temperature)
        negatives = sum(
            (torch.exp(torch.dot(q, n) / temperature) for n in queue), torch.tensor(0.0)
        )
        terms.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(terms).mean()


def test_loss_matches_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    keys = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    queue = F.normalize(torch.randn(7, 8, generator=generator, dtype=torch.float64), dim=1)
    for temperature in (0.2, 1.0):
        torch.testing.assert_close(
            moco_info_nce(queries, keys, queue, temperature),
            reference_loss(queries, keys, queue, temperature),
        )


def test_loss_ignores_the_other_keys_of_the_batch_and_is_zero_without_a_queue() -> None:
    queries, keys = torch.randn(4, 6), torch.randn(4, 6)
    assert moco_info_nce(queries, keys, torch.empty(0, 6), 0.2).item() == 0.0
    # Permuting the batch changes nothing: no key of another row is a negative.
    queue = F.normalize(torch.randn(10, 6), dim=1)
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(
        moco_info_nce(queries[order], keys[order], queue, 0.2),
        moco_info_nce(queries, keys, queue, 0.2),
    )


def test_loss_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same 2-D shape"):
        moco_info_nce(torch.randn(4, 6), torch.randn(3, 6), torch.empty(0, 6), 0.2)
    with pytest.raises(ValueError, match=r"\(K, 6\) queue"):
        moco_info_nce(torch.randn(4, 6), torch.randn(4, 6), torch.randn(3, 5), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        moco_info_nce(torch.randn(4, 6), torch.randn(4, 6), torch.empty(0, 6), 0.0)


def test_queue_starts_with_random_unit_keys_then_keeps_the_newest_in_order_and_wraps() -> None:
    queue = KeyQueue(size=5, dim=2)
    start = queue.negatives()
    torch.testing.assert_close(start.norm(dim=1), torch.ones(5))
    assert torch.equal(KeyQueue(size=5, dim=2).negatives(), start), "the same on every process"
    first = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    queue.enqueue(first)
    torch.testing.assert_close(queue.negatives()[:3], F.normalize(first, dim=1))
    assert torch.equal(queue.negatives()[3:], start[3:])
    assert int(queue.ptr) == 3
    second = torch.tensor([[0.0, -1.0], [-1.0, 0.0], [1.0, 1.0]])
    queue.enqueue(second)
    # Slots 3 and 4 take the first two new keys; the third overwrites the oldest, slot 0.
    expected = F.normalize(
        torch.stack([second[2], first[1], first[2], second[0], second[1]]), dim=1
    )
    torch.testing.assert_close(queue.negatives(), expected)
    assert int(queue.ptr) == 1
    with pytest.raises(ValueError, match="method.queue_size"):
        queue.enqueue(torch.randn(6, 2))


def make_method(**settings) -> MoCoV2:
    torch.manual_seed(0)
    defaults = {"projection_dim": 8, "hidden_dim": 16, "queue_size": 12, "momentum": 0.9}
    return MoCoV2(
        ConvNet(in_channels=3, widths=[4, 8]),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        batch_size=4,
        **{**defaults, **settings},
    )


def views(seed: int, n: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=generator)
    return [images, images.flip(-1) + 0.1 * torch.rand(images.shape, generator=generator)]


def test_keys_enter_the_queue_after_the_loss() -> None:
    method = make_method()
    method.log = lambda *args, **kwargs: None
    method.eval()  # BatchNorm from running statistics: the same outputs when recomputed
    labels = torch.full((4,), -1)
    teacher = method.teacher_ema
    for step in range(2):
        batch = views(step)
        before = method.queue.negatives()
        with torch.no_grad():
            q_a, q_b = method.projector(method.backbone(torch.cat(batch))).chunk(2)
            k_a, k_b = teacher.projector(teacher.backbone(torch.cat(batch))).chunk(2)
        # The loss sees the queue before this step's keys: they are not their own negatives.
        expected = 0.5 * (
            moco_info_nce(q_a, k_b, before, 0.2) + moco_info_nce(q_b, k_a, before, 0.2)
        )
        torch.testing.assert_close(method.training_step((batch, labels), step), expected)
        # Then the first view's keys only entered, after the keys already held.
        after = method.queue.negatives()
        slots = slice(4 * step, 4 * step + 4)
        torch.testing.assert_close(after[slots], F.normalize(k_a, dim=1))
        assert torch.equal(after[4 * step + 4 :], before[4 * step + 4 :])
        assert int(method.queue.ptr) == 4 * step + 4


def attach(method: MoCoV2, world_size: int = 1, train_size: int | None = None) -> None:
    datamodule = None
    if train_size is not None:
        datamodule = SimpleNamespace(dataset=lambda split: range(train_size))
    method._trainer = SimpleNamespace(world_size=world_size, datamodule=datamodule)


def test_queue_size_not_a_multiple_of_the_global_batch_stops_training() -> None:
    method = make_method(queue_size=20)
    attach(method, world_size=2)  # 4 images a process: 8 keys a step
    with pytest.raises(
        ValueError, match=r"method\.queue_size=20 is not a multiple of the 8"
    ) as error:
        method.on_fit_start()
    assert "Set method.queue_size=16" in str(error.value)
    small = make_method(queue_size=6)
    attach(small, world_size=2)
    with pytest.raises(ValueError, match="Set method.queue_size=8"):
        small.on_fit_start()


def test_queue_larger_than_the_training_set_stops_training() -> None:
    method = make_method(queue_size=48)
    attach(method, world_size=1, train_size=30)
    with pytest.raises(
        ValueError, match=r"method\.queue_size=48 is larger than the training set \(30"
    ) as error:
        method.on_fit_start()
    assert "Set method.queue_size=28" in str(error.value)
    fits = make_method(queue_size=28)
    attach(fits, world_size=1, train_size=30)
    fits.on_fit_start()  # a multiple of 4, at most the training set: accepted


def test_bad_settings_are_refused_with_their_key() -> None:
    for settings, key in (
        ({"temperature": 0.0}, "method.temperature"),
        ({"queue_size": 0}, "method.queue_size"),
        ({"momentum": 1.5}, "method.momentum"),
        ({"final_momentum": -0.1}, "method.final_momentum"),
    ):
        with pytest.raises(ValueError, match=key):
            make_method(**settings)


def test_key_encoder_is_the_teacher_and_its_momentum_is_constant_by_default() -> None:
    method = make_method(momentum=0.97)
    encoders = method.evaluation_encoders()
    assert encoders["student"] is method.backbone
    assert encoders["teacher"] is method.teacher_ema.backbone
    assert encoders["teacher"] is not method.backbone
    assert all(method.teacher_ema.momentum_at(s, 10) == 0.97 for s in (0, 5, 10))
    rising = make_method(momentum=0.9, final_momentum=1.0)
    assert rising.teacher_ema.momentum_at(0, 10) == pytest.approx(0.9)
    assert rising.teacher_ema.momentum_at(10, 10) == pytest.approx(1.0)


class TwoViews(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int):
        image_a, image_b = (v[0] for v in views(index, n=1))
        return [image_a, image_b], -1


def test_queue_is_saved_in_and_restored_from_a_checkpoint(tmp_path: Path) -> None:
    method = make_method(queue_size=12)
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, DataLoader(TwoViews(), batch_size=4))
    assert int(method.queue.ptr) == 8
    trainer.save_checkpoint(tmp_path / "moco.ckpt")
    state = torch.load(tmp_path / "moco.ckpt", weights_only=False)["state_dict"]
    for name in ("queue.keys", "queue.ptr"):
        assert torch.equal(state[name], getattr(method.queue, name.split(".")[1])), name
    restored = make_method(queue_size=12)
    assert not torch.equal(restored.queue.negatives(), method.queue.negatives())
    restored.load_state_dict(state)
    assert torch.equal(restored.queue.negatives(), method.queue.negatives())
    assert int(restored.queue.ptr) == 8


@two_process_worker
def _two_process_worker(process_rank: int, out_dir: Path) -> None:
    from tests.test_distributed_methods import train_steps

    torch.save(train_steps("mocov2", process_rank), out_dir / f"rank{process_rank}.pt")


def test_two_processes_equal_one_process_on_the_global_batch(two_process_runs: Path) -> None:
    # The shared 2-process test skips this comparison for MoCo: two calls of its step on the
    # same batch differ because the first call's keys enter the queue, which it takes for
    # randomness of its own. Here the queue, losses and gradients are compared directly.
    from tests.test_distributed_methods import CLOSE, STEPS, WORLD_SIZE, train_steps

    out_dir = two_process_dir(two_process_runs, _two_process_worker)
    ranks = [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    single = train_steps("mocov2")
    for step in range(STEPS):
        mean_loss = torch.stack([r["losses"][step] for r in ranks]).mean()
        torch.testing.assert_close(mean_loss, single["losses"][step], **CLOSE)
        for result in ranks:
            assert result["gradients"][step].keys() == single["gradients"][step].keys()
            for key, value in single["gradients"][step].items():
                torch.testing.assert_close(result["gradients"][step][key], value, **CLOSE)
    for result in ranks:
        assert result["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            torch.testing.assert_close(result["state"][key], value, **CLOSE)
    # 3 steps of 12 keys in a queue of 48: slots 0-35 hold this run's keys, in rank order.
    assert int(single["state"]["queue.ptr"]) == 36


def test_the_single_order_loss_takes_queries_of_one_view_and_keys_of_the_other() -> None:
    method = make_method(symmetric=False).train()
    view_a, view_b = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    negatives = method.queue.negatives()
    loss = method.training_step(([view_a, view_b], torch.full((4,), -1)), 0)
    queries = method.projector(method.backbone(view_a))
    with torch.no_grad():
        keys = method.teacher_ema.projector(method.teacher_ema.backbone(view_b))
    torch.testing.assert_close(loss, moco_info_nce(queries, keys, negatives, method.temperature))
    # The second view's keys entered the queue, in front of the random start.
    torch.testing.assert_close(method.queue.keys[:4], F.normalize(keys, dim=1))
