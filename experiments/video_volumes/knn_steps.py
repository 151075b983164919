"""Short pretraining loop for the synthetic-video presets: trains N steps and prints kNN@20 on
the centre clips every K steps (constant learning rate, no Lightning, no baselines).

    python experiments/video_volumes/knn_steps.py STEPS EVERY [hydra overrides...]

Environment: PRESET (default ``simclr_conv3d_synthetic_video``; a BYOL preset's teacher follows
the student after every step with the preset's momentum schedule over STEPS); SEED (default 0);
FIXED_COLOURS=1 paints every video with the same grey levels
(before ``data.source.colours`` existed); FIXED_SIZE=1 gives every shape the same radius.
"""

from __future__ import annotations

import os
import resource
import sys

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import sslkit.data.synthetic_video as synthetic_video
from sslkit.build import build_datamodule, build_method
from sslkit.config import register_configs
from sslkit.eval.features import extract_features
from sslkit.eval.knn import knn_predict

CONF = os.path.join(os.path.dirname(__file__), "..", "..", "conf")


def main() -> None:
    torch.set_num_threads(1)
    steps, every, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    if os.environ.get("FIXED_COLOURS"):
        grey = synthetic_video.PLAIN_COLOURS
        synthetic_video._sample_colours = lambda rng, n: tuple(np.full((n, 3), v) for v in grey)
    if os.environ.get("FIXED_SIZE"):
        synthetic_video.MIN_RADIUS = synthetic_video.MAX_RADIUS = 0.22
    register_configs()
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base=None):
        preset = "experiment=" + os.environ.get("PRESET", "simclr_conv3d_synthetic_video")
        cfg = compose("train", overrides=[preset, "logger=none", *overrides])
    torch.manual_seed(int(os.environ.get("SEED", 0)))
    data = build_datamodule(cfg)
    data.setup("fit")
    method = build_method(cfg, data)
    method.log = lambda *args, **kwargs: None
    lr = cfg.optim.lr * cfg.data.batch_size / 256
    optimiser = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)
    loader = data.train_dataloader()

    def knn() -> float:
        train = extract_features(method.forward_features, data.eval_dataloader("train"))
        test = extract_features(method.forward_features, data.eval_dataloader("test"))
        unit = torch.nn.functional.normalize
        scores = knn_predict(
            unit(train[0], dim=1),
            train[1],
            unit(test[0], dim=1),
            num_classes=data.num_classes,
            k=20,
            temperature=0.07,
        )
        return float((scores.argmax(1) == test[1]).float().mean())

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    print(f"init knn@20 {knn():.3f}", flush=True)
    step, start = 0, cpu()
    while step < steps:
        for batch in loader:
            method.train()
            loss = method.training_step(data.on_after_batch_transfer(batch, 0), step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if hasattr(method, "update_teacher"):  # BYOL: the EMA step Lightning would run
                method.update_teacher(step, steps)
            step += 1
            if step % every == 0 or step == steps:
                took = cpu() - start
                print(f"step {step} loss {loss.item():.3f} knn@20 {knn():.3f} cpu {took:.0f}s")
            if step >= steps:
                break


if __name__ == "__main__":
    main()
