"""Running the evaluation of a run: features once, the protocols and the features' RankMe,
the baselines, the measurements a model offers, plots, and ``results.json``.

Both entry points end in :func:`evaluate_and_report`, so a checkpoint evaluated later goes
through exactly the steps its training run ended with. What is evaluated is any encoder: one
that a method names in its evaluation hook (``SSLMethod.evaluation_encoders``, e.g. BYOL's
student and teacher), picked by ``eval.encoder``, or a bare backbone.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

import sslkit
from sslkit.build import build_random_backbone
from sslkit.data import class_counts
from sslkit.eval import ProtocolResult
from sslkit.eval.cache import (
    SplitFeatures,
    evaluation_encoder,
    extract_split_features,
    feature_cache_file,
    load_or_extract,
)
from sslkit.eval.clips import add_multiclip_result
from sslkit.eval.finetune import run_finetune
from sslkit.eval.inpainting import Inpainter, evaluate_inpainting
from sslkit.eval.plots import plot_attention, write_plots
from sslkit.eval.protocol import empty_result, run_protocols_on_splits
from sslkit.eval.rankme import EPSILON as RANKME_EPSILON
from sslkit.eval.rankme import rankme
from sslkit.run.files import write_json_atomic
from sslkit.run.loggers import log_media, log_summary
from sslkit.run.results import RANKME, RESULTS_FILE, results_document, results_table

BASELINES = ("raw_pixels", "random_init")


def check_classes(datamodule: Any) -> None:
    """Refuse a train split whose labelled images all come from one class: every protocol
    would score 100 % by construction."""
    counts = class_counts(datamodule.dataset("train").targets, datamodule.num_classes)
    present = [name for name, count in zip(datamodule.class_names, counts, strict=True) if count]
    if len(present) == 1:
        raise ValueError(
            f"the {datamodule.name} train split has labelled images of 1 class only "
            f"({present[0]}), so kNN and linear-probe accuracy would be 100 % "
            "by construction. Add images of at least one more class (for data=imagefolder one "
            "sub-folder per class under data.source.root)."
        )


def evaluate_features(
    features: SplitFeatures,
    datamodule: Any,
    eval_cfg: DictConfig,
    device: torch.device,
    encoder: nn.Module | None = None,
) -> ProtocolResult:
    """The configured protocols on frozen features of the train/test splits, plus ``rankme``,
    the label-free effective rank of the train features (:func:`~sslkit.eval.rankme.rankme`);
    with ``encoder``, also the multi-clip result of video data (:mod:`sslkit.eval.clips`)."""
    if not any(eval_cfg.get(name) for name in ("knn", "linear", "finetune")):
        raise ValueError(
            "no evaluation protocol selected: use eval=[knn,linear] (or one of them; "
            "eval=[finetune] fine-tunes only)"
        )
    for split in ("train", "test"):
        if not torch.isfinite(getattr(features, f"{split}_features")).all():
            raise ValueError(
                f"the encoder gives NaN/inf features on the {split} split: its weights diverged. "
                "Retrain with a lower learning rate (optim.lr) or more warmup "
                "(schedule.warmup_epochs)."
            )
    knn = instantiate(eval_cfg.knn) if eval_cfg.get("knn") else None
    linear = instantiate(eval_cfg.linear) if eval_cfg.get("linear") else None
    if knn is None and linear is None:  # eval=[finetune]: no frozen-feature protocol
        result = empty_result(
            features.train_features,
            features.test_features,
            datamodule.num_classes,
            bool(datamodule.multilabel),
        )
    else:
        result = run_protocols_on_splits(
            features, datamodule, knn=knn, linear=linear, device=str(device)
        )
    start = time.perf_counter()
    result.metrics[RANKME] = rankme(features.train_features)
    result.protocol[RANKME] = {
        "split": "train",
        "num_samples": features.train_features.shape[0],
        "epsilon": RANKME_EPSILON,
    }
    result.timings[RANKME] = time.perf_counter() - start
    if encoder is not None and (knn is not None or linear is not None):
        add_multiclip_result(result, encoder, datamodule, knn=knn, linear=linear, device=device)
    return result


def add_finetune_result(
    result: ProtocolResult,
    encoder: nn.Module,
    datamodule: Any,
    eval_cfg: DictConfig,
    device: torch.device,
) -> None:
    """With ``eval.finetune`` set, fine-tune a copy of ``encoder`` on each of its label
    fractions (:mod:`sslkit.eval.finetune`) and add its metrics, per-class results, settings
    and time to ``result``."""
    if not eval_cfg.get("finetune"):
        return
    protocol = instantiate(eval_cfg.finetune)
    outcome = run_finetune(encoder, datamodule, protocol, device)
    result.metrics.update(outcome["metrics"])
    result.per_class.update(outcome["per_class"])
    result.protocol["settings"].update(outcome["settings"])
    result.protocol["finetune"] = asdict(protocol)
    result.timings["finetune"] = outcome["seconds"]


def evaluate_encoder(
    encoder: nn.Module, datamodule: Any, eval_cfg: DictConfig, device: torch.device
) -> ProtocolResult:
    """Frozen features of the un-augmented train/test splits -> the configured protocols."""
    features = extract_split_features(encoder, datamodule, device)
    return evaluate_features(features, datamodule, eval_cfg, device, encoder)


#: Data keys that change how images are batched, not which features they give.
_LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "drop_last", "imbalance_warn_ratio")


def feature_cache_for(cfg: DictConfig, checkpoint: str, device: torch.device) -> Path | None:
    """The feature cache file of ``checkpoint`` under ``cfg`` (None when ``eval.cache`` is off)."""
    if not cfg.eval.cache:
        return None
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in _LOADER_KEYS:
        data.pop(key, None)
    return feature_cache_file(checkpoint, data=data, encoder=cfg.eval.encoder, device=device)


def baseline_encoder(name: str, cfg: DictConfig, datamodule: Any) -> nn.Module:
    """Reference encoders: flattened pixels, or the same backbone at its seeded random init."""
    if name == "raw_pixels":
        return nn.Flatten()
    if name == "random_init":
        return build_random_backbone(cfg, datamodule)
    raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")


def evaluate_baselines(
    cfg: DictConfig, datamodule: Any, device: torch.device
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Metrics and wall time of every baseline listed in ``cfg.baselines``."""
    metrics, timings = {}, {}
    for name in cfg.get("baselines") or []:
        start = time.perf_counter()
        # Raw pixels are the pixels as the views give them, without data.standardize.
        pixels = name == "raw_pixels" and hasattr(datamodule, "without_standardize")
        encoder = baseline_encoder(name, cfg, datamodule)
        with datamodule.without_standardize() if pixels else contextlib.nullcontext():
            result = evaluate_encoder(encoder, datamodule, cfg.eval, device)
        if name == "random_init":  # the fine-tuning protocol's reference row
            add_finetune_result(result, encoder, datamodule, cfg.eval, device)
        metrics[name] = result.metrics
        timings[name] = time.perf_counter() - start
    return metrics, timings


def model_measurements(
    model: nn.Module, datamodule: Any, output_dir: Path, device: torch.device
) -> dict[str, float]:
    """Measurements of what a model computes besides features (e.g. an inpainter's
    reconstructions, with ``reconstructions.png`` in ``output_dir``, when it predicts pixels)."""
    if isinstance(model, Inpainter) and model.reconstructs_pixels:
        return evaluate_inpainting(model, datamodule, output_dir, device)
    return {}


def evaluate_and_report(
    cfg: DictConfig,
    *,
    model: nn.Module,
    name: str,
    datamodule: Any,
    output_dir: Path,
    device: torch.device,
    logger: Any,
    timings: Mapping[str, Any],
    checkpoint: str | None,
    history: Mapping[str, Any] | None = None,
    cache_file: Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``model``'s chosen encoder and the baselines, then write and print the results.

    ``model`` is a method or a bare backbone and ``name`` what ``results.json`` calls it. The
    encoder's features are extracted once (or read from ``cache_file``, see
    :mod:`sslkit.eval.cache`) and serve every protocol and plot; the model's own measurements
    (:func:`model_measurements`) join the metrics. With ``eval.plots``, PNGs go to
    ``<output_dir>/plots`` (``history`` gives the training curves).
    """
    start = time.perf_counter()
    encoder = evaluation_encoder(model, cfg.eval.encoder, model_name=name).to(device)
    features, reused = load_or_extract(encoder, datamodule, device, cache_file)
    features_s = time.perf_counter() - start
    result = evaluate_features(features, datamodule, cfg.eval, device, encoder)
    add_finetune_result(result, encoder, datamodule, cfg.eval, device)
    result.metrics.update(model_measurements(model, datamodule, output_dir, device))
    eval_s = time.perf_counter() - start
    baselines, baseline_s = evaluate_baselines(cfg, datamodule, device)
    weights = OmegaConf.select(cfg, "eval.weights", default=None)
    results = results_document(
        method=name,
        dataset=datamodule.name,
        backbone=OmegaConf.select(cfg, "backbone._target_", default=None),
        encoder=cfg.eval.encoder,
        features=(
            f"{cfg.eval.encoder} backbone{f' ({weights} weights)' if weights else ''}, "
            "pooled, frozen"
        ),
        protocol=result.protocol,
        metrics=result.metrics,
        per_class=result.per_class,
        class_names=datamodule.class_names,
        baselines=baselines,
        timings={
            **timings,
            "eval_features_s": features_s,
            "eval_s": eval_s,
            "total_s": timings.get("pretrain_s", 0.0) + eval_s,
            "baselines": baseline_s,
            **{f"eval_{k}_s": v for k, v in result.timings.items()},
        },
        checkpoint=checkpoint,
        feature_cache={"file": str(cache_file), "reused": reused} if cache_file else None,
        versions={
            "sslkit": sslkit.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    write_json_atomic(output_dir / RESULTS_FILE, results)
    log_summary(logger, result.metrics)
    print(f"\n{results_table(results)}\n\nresults: {output_dir / RESULTS_FILE}")
    if cfg.eval.plots:
        plots = write_plots(
            output_dir / "plots",
            features=features,
            scores=result.scores,
            datamodule=datamodule,
            history=history,
            knn=result.knn_index,
            max_points=cfg.eval.plot_points,
            seed=cfg.seed,
        )
        attention = plot_attention(encoder, datamodule, output_dir / "plots" / "attention.png")
        if attention is not None:
            plots["attention"] = attention
        print(f"plots: {', '.join(str(path) for path in plots.values())}")
    log_media(logger, output_dir)
    return results
