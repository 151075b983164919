"""Mining returns the triplets it claims on constructed and random embeddings."""

import pytest
import torch

from sslkit.losses import mine_triplets, pairs_from_triplets

# Points on a line: indices 0 and 1 share identity 0, every other point is a negative of both.
LINE = torch.tensor([[0.0], [0.3], [0.1], [0.35], [0.45], [2.0]])
LINE_IDENTITY = torch.tensor([0, 0, 1, 2, 3, 4])


def _labelled_batch(seed: int = 0, count: int = 40, classes: int = 4):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(torch.randn(count, 8, generator=generator), dim=1)
    identity = torch.randint(0, classes, (count,), generator=generator)
    return embeddings, identity, torch.cdist(embeddings, embeddings)


def test_only_anchors_with_a_positive_and_a_negative_are_used():
    for mining in ("random", "hard"):
        anchor, positive, negative = mine_triplets(LINE, LINE_IDENTITY, mining)
        assert anchor.tolist() == [0, 1]
        assert positive.tolist() == [1, 0]
    everyone_alike = torch.zeros(4, dtype=torch.long)
    assert mine_triplets(torch.randn(4, 2), everyone_alike)[0].numel() == 0


def test_hard_negative_is_the_closest_one_of_another_identity():
    _, _, negative = mine_triplets(LINE, LINE_IDENTITY, "hard")
    assert negative.tolist() == [2, 3]  # 0.1 is closest to 0.0; 0.35 is closest to 0.3

    embeddings, identity, distance = _labelled_batch()
    anchor, positive, negative = mine_triplets(embeddings, identity, "hard")
    for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True):
        others = identity != identity[a]
        assert identity[p] == identity[a] and p != a and identity[n] != identity[a]
        assert distance[a, n] == distance[a][others].min()


def test_semihard_negatives_lie_beyond_the_positive_within_the_margin():
    anchor, positive, negative = mine_triplets(LINE, LINE_IDENTITY, "semihard", margin=0.2)
    # Anchor 0 (d(a,p) = 0.3): window (0.3, 0.5) holds 0.35 and 0.45, the closest is index 3.
    # Anchor 1 (d(a,p) = 0.3): its negatives lie at 0.2, 0.05, 0.15 and 1.7, none in the window.
    assert (anchor.tolist(), positive.tolist(), negative.tolist()) == ([0], [1], [3])

    margin = 0.3
    embeddings, identity, distance = _labelled_batch(seed=1)
    generator = torch.Generator().manual_seed(0)
    anchor, positive, negative = mine_triplets(
        embeddings, identity, "semihard", margin, generator=generator
    )
    pairs = int(((identity[:, None] == identity) & ~torch.eye(len(identity), dtype=bool)).sum())
    assert 0 < len(anchor) < pairs
    for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist(), strict=True):
        d_ap = distance[a, p]
        window = (identity != identity[a]) & (distance[a] > d_ap) & (distance[a] < d_ap + margin)
        assert identity[p] == identity[a] and p != a
        assert d_ap < distance[a, n] < d_ap + margin
        assert distance[a, n] == distance[a][window].min()


def test_every_anchor_positive_pair_gets_a_triplet():
    embeddings, identity, _ = _labelled_batch(seed=3, count=12, classes=3)
    pairs = {
        (a, p)
        for a in range(len(identity))
        for p in range(len(identity))
        if a != p and identity[a] == identity[p]
    }
    for mining in ("random", "hard"):
        anchor, positive, negative = mine_triplets(embeddings, identity, mining)
        assert set(zip(anchor.tolist(), positive.tolist(), strict=True)) == pairs
        assert len(anchor) == len(pairs)
        assert (identity[negative] != identity[anchor]).all()


def test_random_mining_draws_every_negative_independently_per_pair():
    embeddings, identity, _ = _labelled_batch(seed=2, count=12, classes=3)
    generator = torch.Generator().manual_seed(0)
    seen_negatives, differ = set(), False
    for _ in range(200):
        anchor, positive, negative = mine_triplets(
            embeddings, identity, "random", generator=generator
        )
        assert (identity[positive] == identity[anchor]).all() and (positive != anchor).all()
        assert (identity[negative] != identity[anchor]).all()
        first = anchor == 0
        seen_negatives.update(negative[first].tolist())
        differ |= len(set(negative[first].tolist())) > 1
    assert seen_negatives == set(torch.nonzero(identity != identity[0]).flatten().tolist())
    assert differ  # the pairs of one anchor draw their negatives independently


def test_mining_in_chunks_gives_the_same_triplets(monkeypatch):
    import sslkit.losses.mining as mining_module

    embeddings, identity, _ = _labelled_batch(seed=4, count=30, classes=3)
    for mining in ("hard", "semihard"):
        whole = mine_triplets(embeddings, identity, mining, 0.3)
        monkeypatch.setattr(mining_module, "_CHUNK_ELEMENTS", 7 * len(embeddings))
        chunked = mine_triplets(embeddings, identity, mining, 0.3)
        monkeypatch.undo()
        for a, b in zip(whole, chunked, strict=True):
            assert torch.equal(a, b)


def test_views_identity_pairs_each_view_with_the_other_view_of_its_image():
    images = 6
    embeddings = torch.randn(2 * images, 4)
    identity = torch.arange(images).repeat(2)
    anchor, positive, negative = mine_triplets(embeddings, identity, "hard")
    assert anchor.tolist() == list(range(2 * images))
    assert positive.tolist() == [(i + images) % (2 * images) for i in range(2 * images)]
    assert (negative % images != anchor % images).all()


def test_pairs_from_triplets_are_balanced():
    anchor, positive, negative = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    a, b, same = pairs_from_triplets(anchor, positive, negative)
    assert a.tolist() == [0, 1, 0, 1]
    assert b.tolist() == [2, 3, 4, 5]
    assert same.tolist() == [True, True, False, False]


def test_bad_arguments_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown mining 'hardest'; choose from random, hard"):
        mine_triplets(LINE, LINE_IDENTITY, "hardest")
    with pytest.raises(ValueError, match="one identity per embedding"):
        mine_triplets(LINE, LINE_IDENTITY[:3])
