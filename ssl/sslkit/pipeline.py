"""The pieces both entry points share: build from config, evaluate, write ``results.json``.

``sslkit-train`` and ``sslkit-eval`` call these same functions, so a checkpoint evaluated later
goes through exactly the protocol its training run ended with.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback
from torch import nn

import sslkit
from sslkit.data import class_counts
from sslkit.eval import KNNProtocol, ProtocolResult, run_protocols
from sslkit.eval.cache import (
    SplitFeatures,
    extract_split_features,
    feature_cache_file,
    load_or_extract,
)
from sslkit.eval.monitor import KNNMonitor, MetricHistory
from sslkit.eval.plots import write_plots
from sslkit.files import RESULTS_FILE, write_json_atomic
from sslkit.loggers import log_media, log_summary
from sslkit.methods.base import SSLMethod
from sslkit.models.backbones import Backbone
from sslkit.results import fraction_label

BASELINES = ("raw_pixels", "random_init")


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The DataModule of ``cfg.data`` with the view pipeline of ``cfg.augment``."""
    return instantiate(cfg.data, augment=instantiate(cfg.augment))


def build_backbone(cfg: DictConfig, in_channels: int) -> Backbone:
    """The backbone of ``cfg.backbone``; input channels follow the dataset."""
    return instantiate(cfg.backbone, in_channels=in_channels)


def build_method(cfg: DictConfig, datamodule: Any) -> SSLMethod:
    """The method of ``cfg.method`` around a fresh backbone, with optimiser and schedule."""
    return instantiate(
        cfg.method,
        backbone=build_backbone(cfg, datamodule.in_channels),
        optimizer=instantiate(cfg.optim),
        schedule=instantiate(cfg.schedule) if cfg.get("schedule") else None,
        num_classes=datamodule.num_classes,
        multilabel=datamodule.multilabel,
        batch_size=cfg.data.batch_size,
    )


def resolve_device(name: str, fallback: torch.device | None = None) -> torch.device:
    """``auto`` -> the trainer's device (or CUDA when present); anything else as given."""
    if name != "auto":
        return torch.device(name)
    if fallback is not None:
        return fallback
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    features: SplitFeatures, datamodule: Any, eval_cfg: DictConfig, device: torch.device
) -> ProtocolResult:
    """The configured protocols on frozen features of the train/test splits."""
    if eval_cfg.get("knn") is None and eval_cfg.get("linear") is None:
        raise ValueError("no evaluation protocol selected: use eval=[knn,linear] (or one of them)")
    for split in ("train", "test"):
        if not torch.isfinite(getattr(features, f"{split}_features")).all():
            raise ValueError(
                f"the encoder gives NaN/inf features on the {split} split: its weights diverged. "
                "Retrain with a lower learning rate (optim.lr) or more warmup "
                "(schedule.warmup_epochs)."
            )
    return run_protocols(
        features.train_features,
        features.train_labels,
        features.test_features,
        features.test_labels,
        num_classes=datamodule.num_classes,
        multilabel=datamodule.multilabel,
        knn=instantiate(eval_cfg.knn) if eval_cfg.get("knn") else None,
        linear=instantiate(eval_cfg.linear) if eval_cfg.get("linear") else None,
        device=str(device),
    )


def evaluate_encoder(
    encoder: nn.Module, datamodule: Any, eval_cfg: DictConfig, device: torch.device
) -> ProtocolResult:
    """Frozen features of the un-augmented train/test splits -> the configured protocols."""
    features = extract_split_features(encoder, datamodule, device)
    return evaluate_features(features, datamodule, eval_cfg, device)


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


def build_monitor_callbacks(cfg: DictConfig) -> tuple[list[Callback], MetricHistory]:
    """The per-epoch metric history and, with ``eval.monitor_every > 0``, the kNN monitor.

    The monitor uses the first k and the temperature of ``eval.knn`` (the kNN protocol run
    at the end), so its last point is comparable with the final ``knn/*`` metric.
    """
    history = MetricHistory()
    every = cfg.eval.monitor_every
    if not every:
        return [history], history
    knn = instantiate(cfg.eval.knn) if cfg.eval.get("knn") else KNNProtocol()
    monitor = KNNMonitor(
        every,
        k=knn.k[0],
        temperature=knn.temperature,
        encoder=cfg.eval.encoder,
        history=history,
    )
    return [monitor, history], history


def baseline_encoder(name: str, cfg: DictConfig, datamodule: Any) -> nn.Module:
    """Reference encoders: flattened pixels, or the same backbone at its seeded random init."""
    if name == "raw_pixels":
        return nn.Flatten()
    if name == "random_init":
        torch.manual_seed(cfg.seed)
        return build_backbone(cfg, datamodule.in_channels)
    raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")


def evaluate_baselines(
    cfg: DictConfig, datamodule: Any, device: torch.device
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Metrics and wall time of every baseline listed in ``cfg.baselines``."""
    metrics, timings = {}, {}
    for name in cfg.get("baselines") or []:
        start = time.perf_counter()
        result = evaluate_encoder(
            baseline_encoder(name, cfg, datamodule), datamodule, cfg.eval, device
        )
        metrics[name] = result.metrics
        timings[name] = time.perf_counter() - start
    return metrics, timings


def build_results(
    cfg: DictConfig,
    *,
    method: str,
    datamodule: Any,
    result: ProtocolResult,
    encoder: str,
    baselines: Mapping[str, Mapping[str, float]],
    timings: Mapping[str, Any],
    checkpoint: str | None,
    feature_cache: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``results.json`` document: what ran, on what, under which protocol, and the numbers."""
    weights = OmegaConf.select(cfg, "eval.weights", default=None)
    source = f" ({weights} weights)" if weights else ""
    return {
        "method": method,
        "dataset": datamodule.name,
        "backbone": OmegaConf.select(cfg, "backbone._target_", default=None),
        "encoder": encoder,
        "protocol": {
            **result.protocol,
            "features": f"{encoder} backbone{source}, pooled, frozen",
        },
        "metrics": result.metrics,
        "per_class": result.per_class,
        "class_names": list(datamodule.class_names),
        "baselines": dict(baselines),
        "timings": {**timings, **{f"eval_{k}_s": v for k, v in result.timings.items()}},
        "checkpoint": checkpoint,
        "feature_cache": dict(feature_cache) if feature_cache else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "sslkit": sslkit.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def evaluate_and_report(
    cfg: DictConfig,
    *,
    method: SSLMethod,
    datamodule: Any,
    output_dir: Path,
    device: torch.device,
    logger: Any,
    timings: Mapping[str, Any],
    checkpoint: str | None,
    history: Mapping[str, Any] | None = None,
    cache_file: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a method's chosen encoder and the baselines, then write and print the results.

    Both entry points end here, so a checkpoint evaluated later goes through exactly the steps
    its training run ended with. The encoder's features are extracted once (or read from
    ``cache_file``, see :mod:`sslkit.eval.cache`) and serve every protocol and plot.
    Method-specific measurements (``SSLMethod.extra_evaluation``, e.g. reconstruction error)
    join the metrics. With ``eval.plots``, PNGs go to ``<output_dir>/plots`` (``history``
    gives the training curves).
    """
    encoders = method.evaluation_encoders()
    if cfg.eval.encoder not in encoders:
        raise ValueError(
            f"eval.encoder={cfg.eval.encoder!r} is not offered by {type(method).__name__}; "
            f"choose from {sorted(encoders)}"
        )
    start = time.perf_counter()
    features, reused = load_or_extract(
        encoders[cfg.eval.encoder].to(device), datamodule, device, cache_file
    )
    features_s = time.perf_counter() - start
    result = evaluate_features(features, datamodule, cfg.eval, device)
    result.metrics.update(method.extra_evaluation(datamodule, output_dir, device))
    eval_s = time.perf_counter() - start
    baselines, baseline_s = evaluate_baselines(cfg, datamodule, device)
    total_s = timings.get("pretrain_s", 0.0) + eval_s
    results = build_results(
        cfg,
        method=type(method).__name__,
        datamodule=datamodule,
        result=result,
        encoder=cfg.eval.encoder,
        baselines=baselines,
        timings={
            **timings,
            "eval_features_s": features_s,
            "eval_s": eval_s,
            "total_s": total_s,
            "baselines": baseline_s,
        },
        checkpoint=checkpoint,
        feature_cache={"file": str(cache_file), "reused": reused} if cache_file else None,
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
            max_points=cfg.eval.plot_points,
            seed=cfg.seed,
        )
        print(f"plots: {', '.join(str(path) for path in plots.values())}")
    log_media(logger, output_dir)
    return results


def results_table(
    results: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None = None,
    *,
    markdown: bool = False,
) -> str:
    """A comparison table: one row per baseline, then one per evaluated encoder.

    Accepts one ``results.json`` document or several (e.g. the rows of a study); the baseline
    rows come from each document that holds baselines, once per baseline name. Columns: kNN
    top-1 at k=20 and 200, linear top-1 and macro-F1, and linear top-1 at each label fraction
    below 1 (in %), and wall time; multi-label results show mAP (and micro-F1) instead of top-1.
    """
    documents = [results] if isinstance(results, Mapping) else list(results)
    names = (
        list(labels)
        if labels is not None
        else [f"{doc['method']} ({doc['encoder']})" for doc in documents]
    )
    if len(names) != len(documents):
        raise ValueError(f"got {len(names)} labels for {len(documents)} results")
    protocol = documents[0].get("protocol", {}) if documents else {}
    multilabel = protocol.get("multilabel", False)
    score, title = ("mAP", "mAP") if multilabel else ("top1", "top-1")
    columns = [
        (f"kNN@20 {title}" if multilabel else "kNN@20", f"knn/{score}@20"),
        (f"kNN@200 {title}" if multilabel else "kNN@200", f"knn/{score}@200"),
        (f"linear {title}", f"linear/{score}"),
        ("linear micro-F1", "linear/micro_f1")
        if multilabel
        else ("linear macro-F1", "linear/macro_f1"),
    ]
    for fraction in protocol.get("linear", {}).get("label_fractions", []):
        if fraction < 1.0:
            label = fraction_label(fraction)
            columns.append((f"linear {title} @{label}", f"linear/{score}@{label}"))
    rows: list[tuple[str, Mapping[str, Any], float | None]] = []
    seen: set[str] = set()
    for doc in documents:
        timings = doc.get("timings", {})
        for name, metrics in doc.get("baselines", {}).items():
            if name not in seen:
                seen.add(name)
                rows.append(
                    (name.replace("_", " "), metrics, timings.get("baselines", {}).get(name))
                )
    for name, doc in zip(names, documents, strict=True):
        rows.append((name, doc["metrics"], doc.get("timings", {}).get("total_s")))
    header = ["encoder"] + [title for title, _ in columns] + ["wall time"]
    lines = [header]
    for name, metrics, seconds in rows:
        cells = [name]
        for _, key in columns:
            value = metrics.get(key)
            cells.append("-" if value is None else f"{100 * value:.1f}")
        cells.append("-" if seconds is None else f"{seconds:.0f} s")
        lines.append(cells)
    if markdown:
        text = ["| " + " | ".join(row) + " |" for row in lines]
        text.insert(1, "|" + "|".join(" --- " for _ in header) + "|")
        return "\n".join(text)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
