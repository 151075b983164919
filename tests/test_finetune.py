"""Fine-tuning: layer-wise rates and weight decay for a ViT, end-to-end training that beats the
frozen encoder, its label fractions, single- and multi-label results, and its place in a run
(``eval=[knn,linear,finetune]``, the random-init baseline fine-tuned with the same settings)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sslkit.eval.finetune import Classifier, FinetuneProtocol, layer_groups, run_finetune
from sslkit.models import ConvNet
from sslkit.models.vit import ViT
from sslkit.train import train
from tests.conftest import TINY


def test_vit_blocks_get_layer_wise_rates_and_embeddings_no_weight_decay() -> None:
    encoder = ViT(image_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=3)
    model = Classifier(encoder, 24, 5)
    protocol = FinetuneProtocol(layer_decay=0.5, weight_decay=0.05)
    groups = layer_groups(model, protocol, lr=1.0)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    vit = "encoder.model."
    assert rate[id(named["head.weight"])] == 1.0
    assert rate[id(named[vit + "norm.weight"])] == 1.0
    assert rate[id(named[vit + "blocks.2.attn.qkv.weight"])] == 0.5
    assert rate[id(named[vit + "blocks.0.attn.qkv.weight"])] == 0.125
    assert rate[id(named[vit + "patch_embed.proj.weight"])] == 0.0625
    assert rate[id(named[vit + "pos_embed"])] == 0.0625
    assert decay[id(named[vit + "pos_embed"])] == 0.0 == decay[id(named[vit + "cls_token"])]
    assert decay[id(named[vit + "blocks.1.mlp.fc1.weight"])] == 0.05
    assert decay[id(named[vit + "blocks.1.mlp.fc1.bias"])] == 0.0
    # Any other encoder: one rate.
    conv = Classifier(ConvNet(in_channels=3, widths=[4, 8]), 8, 5)
    assert {g["lr"] for g in layer_groups(conv, protocol, lr=1.0)} == {1.0}


class StripesData:
    """A stand-in datamodule: 8x8 images of horizontal or vertical stripes (or, multi-label,
    either, both or none), which a random conv net's pooled features barely separate."""

    def __init__(self, multilabel: bool = False, n: int = 256) -> None:
        generator = torch.Generator().manual_seed(0)
        self.multilabel, self.num_classes = multilabel, 2
        self.splits = {}
        for split in ("train", "test"):
            if multilabel:
                labels = torch.randint(0, 2, (n, 2), generator=generator)
            else:
                labels = torch.randint(0, 2, (n,), generator=generator)
            rows = (torch.arange(8) % 2).float().view(1, 8, 1).expand(n, 8, 8)
            horizontal = labels[:, 0] if multilabel else 1 - labels
            vertical = labels[:, 1] if multilabel else labels
            images = rows * horizontal.view(-1, 1, 1) + rows.transpose(1, 2) * vertical.view(
                -1, 1, 1
            )
            images = images + 0.3 * torch.randn(n, 8, 8, generator=generator)
            self.splits[split] = (images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), labels)

    def eval_dataloader(self, split: str):
        images, labels = self.splits[split]
        return [(images[i : i + 64], labels[i : i + 64]) for i in range(0, len(images), 64)]


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet(in_channels=3, widths=[8, 16])


@pytest.mark.parametrize("multilabel", [False, True], ids=["single-label", "multi-label"])
def test_fine_tuning_learns_the_task_on_each_label_fraction(multilabel: bool) -> None:
    data = StripesData(multilabel)
    protocol = FinetuneProtocol(
        epochs=15, batch_size=32, lr=0.01, min_scale=1.0, label_fractions=[1.0, 0.25]
    )
    original = encoder()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    outcome = run_finetune(original, data, protocol, torch.device("cpu"))
    metric = "mAP" if multilabel else "top1"
    assert outcome["metrics"][f"finetune/{metric}"] > 0.9, outcome["metrics"]
    assert f"finetune/{metric}@25%" in outcome["metrics"]
    settings = outcome["settings"]["finetune@25%"]
    assert settings["num_train"] in range(60, 70) and settings["lr"] == 0.01
    assert settings["label_fraction"] == 0.25 and settings["protocol"] == "finetune"
    assert len(outcome["per_class"]["finetune"]) == 2
    # The encoder handed in is not changed: every fraction starts from a copy.
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"optimizer": "lamb"}, "eval.finetune.optimizer"),
        ({"epochs": 0}, "epochs >= 1"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"label_fractions": [0.0]}, "label_fractions"),
        ({"min_scale": 1.5}, "min_scale"),
    ],
)
def test_bad_settings_stop_with_a_message(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FinetuneProtocol(**settings)


@pytest.mark.integration
def test_a_run_reports_fine_tuning_and_the_random_init_reference(hydra_run, tmp_path) -> None:
    cfg = hydra_run(
        "train",
        [
            *TINY,
            "eval=[knn,linear,finetune]",
            "eval.finetune.epochs=2",
            "eval.finetune.label_fractions=[1.0,0.5]",
            "baselines=[random_init]",
        ],
    )
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    for metrics in (results["metrics"], results["baselines"]["random_init"]):
        assert {"finetune/top1", "finetune/top1@50%", "finetune/macro_f1"} <= set(metrics)
    assert results["protocol"]["finetune"]["epochs"] == 2
    assert 56 <= results["protocol"]["settings"]["finetune@50%"]["num_train"] <= 72  # of 128
    assert results["timings"]["eval_finetune_s"] > 0


@pytest.mark.integration
def test_fine_tuning_alone_needs_no_frozen_feature_protocol(hydra_run, tmp_path) -> None:
    """``eval=[finetune]`` fine-tunes without the kNN and the linear probe (it once stopped
    with "no evaluation protocol selected")."""
    cfg = hydra_run(
        "train",
        [*(o for o in TINY if not o.startswith(("eval.knn", "eval.linear"))),
         "eval=[finetune]", "eval.finetune.epochs=1", "eval.finetune.min_steps=2",
         "eval.finetune.label_fractions=[1.0]"],
    )  # fmt: skip
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert "finetune/top1" in results["metrics"]
    assert "rankme" in results["metrics"]
    assert not any(key.startswith(("knn/", "linear/")) for key in results["metrics"])
    assert results["protocol"]["num_train"] == 128
