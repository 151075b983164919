"""The ``results.json`` document and its tables, without torch (``sslkit-report`` reads them).

One document per finished job: what ran, on what, under which protocol, and the numbers. Both
entry points write it through :func:`results_document`; :func:`read_document` is how every
reader (``sslkit-report``, the set-aside of an earlier job's results) opens one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: A finished job's outputs: the metrics and the config they were measured with.
RESULTS_FILE = "results.json"
#: The metric key of the effective rank of the train features (:mod:`sslkit.eval.rankme`).
RANKME = "rankme"
#: The baseline of the backbone at its seeded random init (one table row per backbone).
RANDOM_INIT = "random_init"
#: A kNN protocol metric, e.g. ``knn/top1@20``; group 1 is its k.
_KNN_METRIC = re.compile(r"knn/[^@/]+@(\d+)")


def fraction_label(fraction: float) -> str:
    """``0.01 -> "1%"``, ``0.1 -> "10%"``, ``0.125 -> "12.5%"``: the suffix of low-shot keys."""
    return f"{100 * fraction:g}%"


def results_document(
    *,
    method: str,
    dataset: str,
    backbone: str | None,
    encoder: str,
    features: str,
    protocol: Mapping[str, Any],
    metrics: Mapping[str, float],
    per_class: Mapping[str, Any],
    class_names: Sequence[str],
    baselines: Mapping[str, Mapping[str, float]],
    timings: Mapping[str, Any],
    checkpoint: str | None,
    feature_cache: Mapping[str, Any] | None,
    versions: Mapping[str, str],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``results.json`` document; ``features`` describes what the protocols measured."""
    return {
        "method": method,
        "dataset": dataset,
        "backbone": backbone,
        "encoder": encoder,
        "protocol": {**protocol, "features": features},
        "metrics": dict(metrics),
        "per_class": dict(per_class),
        "class_names": list(class_names),
        "baselines": dict(baselines),
        "timings": dict(timings),
        "checkpoint": checkpoint,
        "feature_cache": dict(feature_cache) if feature_cache else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": dict(versions),
        "config": dict(config),
    }


def read_document(file: str | Path) -> dict[str, Any]:
    """A ``results.json`` (or ``failed.json``) document; ValueError when it holds no config."""
    document = json.loads(Path(file).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ValueError("it holds no run config")
    return document


def knn_ks(documents: Sequence[Mapping[str, Any]]) -> list[int]:
    """The k values the documents' kNN protocol ran with, in the configured order.

    Read from ``protocol.knn.k``; a document without it (kNN off, or written before the
    protocol was recorded) contributes the k of its ``knn/<metric>@<k>`` metrics, smallest first.
    """
    ks: list[int] = []
    for doc in documents:
        knn = doc.get("protocol", {}).get("knn") or {}
        found = [int(k) for k in knn.get("k", [])]
        if not found:
            names = [*doc.get("metrics", {})]
            names += [name for metrics in doc.get("baselines", {}).values() for name in metrics]
            found = sorted(
                {int(m.group(1)) for name in names if (m := _KNN_METRIC.fullmatch(name))}
            )
        ks += [k for k in found if k not in ks]
    return ks


def results_table(
    results: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None = None,
    *,
    markdown: bool = False,
) -> str:
    """A comparison table: one row per baseline, then one per evaluated encoder.

    Accepts one ``results.json`` document or several (e.g. the rows of a study); the baseline
    rows come from each document that holds baselines, once per baseline name. Columns: kNN
    top-1 at each k of the kNN protocol (``eval.knn.k``, see :func:`knn_ks`), linear top-1 and
    macro-F1, linear top-1 at each label fraction below 1 (in %), fine-tuned top-1 at each of
    its label fractions when a document was fine-tuned, RankMe (the effective
    rank of the train features, when the results hold it) and wall time; multi-label results
    show mAP (and micro-F1) instead of top-1.
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
        (f"kNN@{k} {title}" if multilabel else f"kNN@{k}", f"knn/{score}@{k}")
        for k in knn_ks(documents)
    ]
    columns += [
        (f"linear {title}", f"linear/{score}"),
        ("linear micro-F1", "linear/micro_f1")
        if multilabel
        else ("linear macro-F1", "linear/macro_f1"),
    ]
    for fraction in protocol.get("linear", {}).get("label_fractions", []):
        if fraction < 1.0:
            label = fraction_label(fraction)
            columns.append((f"linear {title} @{label}", f"linear/{score}@{label}"))
    finetune = next((doc["protocol"]["finetune"] for doc in documents
                     if doc.get("protocol", {}).get("finetune")), None)  # fmt: skip
    if finetune is not None:  # fine-tuned top-1 at each of its label fractions
        for fraction in finetune.get("label_fractions", []):
            suffix = "" if fraction == 1.0 else f"@{fraction_label(fraction)}"
            label = "" if fraction == 1.0 else f" @{fraction_label(fraction)}"
            columns.append((f"fine-tuned {title}{label}", f"finetune/{score}{suffix}"))
    rows: list[tuple[str, Mapping[str, Any], float | None]] = []
    # The random init is one row per backbone (a study of a ResNet and a ViT has one of each,
    # named by the backbone's class); every other baseline is one row.
    backbones = {
        doc.get("backbone") for doc in documents if RANDOM_INIT in doc.get("baselines", {})
    }
    seen: set[tuple[str, str | None]] = set()
    for doc in documents:
        timings = doc.get("timings", {})
        for name, metrics in doc.get("baselines", {}).items():
            key = (name, doc.get("backbone") if name == RANDOM_INIT else None)
            if key in seen:
                continue
            seen.add(key)
            label = name.replace("_", " ")
            if name == RANDOM_INIT and len(backbones) > 1:
                label += f" ({str(doc.get('backbone')).rsplit('.', 1)[-1]})"
            rows.append((label, metrics, timings.get("baselines", {}).get(name)))
    for name, doc in zip(names, documents, strict=True):
        rows.append((name, doc["metrics"], doc.get("timings", {}).get("total_s")))
    if any(RANKME in metrics for _, metrics, _ in rows):
        columns.append(("RankMe", RANKME))
    header = ["encoder"] + [title for title, _ in columns] + ["wall time"]
    lines = [header]
    for name, metrics, seconds in rows:
        cells = [name]
        for _, key in columns:
            value = metrics.get(key)
            if value is None:
                cells.append("-")
            else:  # accuracies in %, the effective rank as it is
                cells.append(f"{value:.1f}" if key == RANKME else f"{100 * value:.1f}")
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
