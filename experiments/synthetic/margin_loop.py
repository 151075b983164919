"""Margin losses with class labels outside sslkit's training loop: does the loss learn the
synthetic shapes' classes, and how does that depend on how positives and negatives are chosen?

    python experiments/synthetic/margin_loop.py --loss triplet --positives all --negatives random

The convnet of the synthetic presets (widths 16-32-64) with a SimCLR projection head (512-128)
and L2-normalised embeddings (``--loss ce``: a linear classifier instead), AdamW lr 2e-3, weight
decay 1e-4, batches of 128 un-augmented training images (random horizontal flips only), seed 0,
one thread. Prints kNN@20 (cosine, T=0.07) of the backbone features on the test split every 100
steps and, for the margin losses, the mean distance of the positive and negative terms.

``--positives one``: one random positive per anchor (sslkit's mining before it took every
pair); ``all``: every (anchor, positive) pair of the batch, one negative per pair.
``--positive-margin``: the pairwise loss stops pulling positive pairs closer than it (0 here,
0.5 in sslkit's PairwiseContrastive).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor, nn

from sslkit.data.synthetic import SyntheticShapes
from sslkit.eval.knn import knn_predict
from sslkit.losses import pairs_from_triplets, pairwise_contrastive
from sslkit.models import ConvNet


def split(source: SyntheticShapes, name: str) -> tuple[Tensor, Tensor]:
    data = source.build(name)
    images = torch.as_tensor(data.images).permute(0, 3, 1, 2).float() / 255
    return images, torch.as_tensor(np.asarray(data.targets))


def mine(embeddings: Tensor, labels: Tensor, positives: str, negatives: str, margin: float):
    distance = torch.cdist(embeddings, embeddings)
    same = labels[:, None] == labels[None, :]
    is_positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    if positives == "all":
        anchor, positive = is_positive.nonzero(as_tuple=True)
    else:
        anchor = torch.arange(len(labels))
        positive = torch.rand(is_positive.shape).masked_fill(~is_positive, -1).argmax(1)
    candidates = ~same[anchor]
    if negatives == "semihard":
        d_ap = distance[anchor, positive][:, None]
        candidates &= (distance[anchor] > d_ap) & (distance[anchor] < d_ap + margin)
    if negatives == "random":
        negative = torch.rand(candidates.shape).masked_fill(~candidates, -1).argmax(1)
    else:
        negative = distance[anchor].masked_fill(~candidates, float("inf")).argmin(1)
    keep = candidates.any(1)
    return anchor[keep], positive[keep], negative[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", choices=["ce", "triplet", "pairwise"], default="triplet")
    parser.add_argument("--positives", choices=["one", "all"], default="all")
    parser.add_argument("--negatives", choices=["random", "hard", "semihard"], default="random")
    parser.add_argument("--margin", type=float, help="default 0.2 (triplet), 1.5 (pairwise)")
    parser.add_argument("--no-normalize", action="store_true", help="raw embeddings")
    parser.add_argument(
        "--positive-margin", type=float, default=0.0, help="pairwise: stop pulling closer pairs"
    )
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    margin = args.margin or (1.5 if args.loss == "pairwise" else 0.2)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = SyntheticShapes(image_size=24)
    (train_x, train_y), (test_x, test_y) = split(source, "train"), split(source, "test")
    mean, std = train_x.mean((0, 2, 3), keepdim=True), train_x.std((0, 2, 3), keepdim=True)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    net = ConvNet(3, [16, 32, 64])
    head = nn.Linear(64, 10) if args.loss == "ce" else SimCLRProjectionHead(64, 512, 128)
    params = [*net.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)

    @torch.no_grad()
    def knn() -> float:
        net.eval()
        train, test = net(train_x), net(test_x)
        net.train()
        votes = knn_predict(train, train_y, test, num_classes=10, k=20, temperature=0.07)
        return float((votes.argmax(1) == test_y).float().mean())

    print(f"init kNN@20 {knn():.3f}")
    step = 0
    while step < args.steps:
        order = torch.randperm(len(train_x))
        for start in range(0, len(order) - 127, 128):
            batch = order[start : start + 128]
            x, y = train_x[batch], train_y[batch]
            x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x, x.flip(3))
            out = head(net(x))
            if args.loss == "ce":
                loss, note = F.cross_entropy(out, y), ""
            else:
                e = out if args.no_normalize else F.normalize(out, dim=1)
                a, p, n = mine(e.detach(), y, args.positives, args.negatives, margin)
                if args.loss == "triplet":
                    loss = F.triplet_margin_loss(e[a], e[p], e[n], margin=margin)
                else:
                    first, second, same = pairs_from_triplets(a, p, n)
                    loss = pairwise_contrastive(
                        e[first], e[second], same, margin, args.positive_margin
                    )
                with torch.no_grad():
                    d_pos = (e[a] - e[p]).norm(dim=1).mean()
                    d_neg = (e[a] - e[n]).norm(dim=1).mean()
                note = f" d(a,p) {d_pos:.2f} d(a,n) {d_neg:.2f}"
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            if step % 100 == 0 or step == args.steps:
                print(f"step {step} loss {loss.item():.3f}{note} kNN@20 {knn():.3f}", flush=True)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
