"""Weighted kNN: faiss search (sslkit.eval.WeightedKNN) against a brute-force torch reference.

Both run in the same process on the same random features, sized like Fashion-MNIST with a
ResNet-18 (60k x 512 train, 10k test), k = 20 and 200; the script prints wall times and checks
that both give the same votes.

    python experiments/knn_speed/bench_knn.py [num_train] [num_test]
"""

import sys
import time

import torch
import torch.nn.functional as F

from sslkit.eval import WeightedKNN

NUM_TRAIN = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
NUM_TEST = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
DIM, CLASSES, KS, T = 512, 10, (20, 200), 0.07


def brute_force(train, labels, test, k):
    """Full similarity matrix in chunks, top-k, scatter of exp(sim / T)."""
    train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    scores = []
    for chunk in test.split(2048):
        sim, idx = (chunk @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(chunk), CLASSES)
        scores.append(votes.scatter_add_(1, labels[idx], (sim / T).exp()))
    return torch.cat(scores)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


generator = torch.Generator().manual_seed(0)
train = torch.randn(NUM_TRAIN, DIM, generator=generator)
labels = torch.randint(0, CLASSES, (NUM_TRAIN,), generator=generator)
test = torch.randn(NUM_TEST, DIM, generator=generator)

print(
    f"train {NUM_TRAIN} x {DIM}, test {NUM_TEST}, k = {KS}, torch threads {torch.get_num_threads()}"
)
knn = WeightedKNN(train, labels, num_classes=CLASSES)
faiss_scores, faiss_s = timed(lambda: knn.predict_each_k(test, ks=KS, temperature=T))
reference_s = 0.0
for k in KS:
    reference, seconds = timed(lambda k=k: brute_force(train, labels, test, k))
    reference_s += seconds
    agree = (faiss_scores[k].argmax(1) == reference.argmax(1)).float().mean().item()
    print(f"k={k}: predictions agree on {100 * agree:.2f}% of test points")
print(f"faiss (one search for all k): {faiss_s:.2f} s")
print(f"torch brute force (one search per k): {reference_s:.2f} s")
