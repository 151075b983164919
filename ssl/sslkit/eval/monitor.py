"""Watching the representation while it trains: a kNN monitor and per-epoch metric curves.

The online linear probe (``val/online_top1``, on the test split every epoch) is cheap but
trained alongside the encoder; the kNN monitor measures the frozen features with the kNN
protocol itself every few epochs, so its last value is the kNN number the run ends with, and
logs their RankMe, which needs no label, so a collapsing representation shows as it happens.
:class:`MetricHistory` keeps every epoch-level metric in memory and in the checkpoints, so
curves can be plotted whatever the logger and survive a resumed run.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from sslkit.eval.cache import evaluation_encoder, extract_split_features
from sslkit.eval.protocol import KNNProtocol, run_protocols_on_splits
from sslkit.eval.rankme import rankme
from sslkit.run.results import RANKME


class KNNMonitor(Callback):
    """Weighted kNN of the frozen encoder every ``every_n_epochs`` epochs, logged as a curve.

    At the end of every ``every_n_epochs``-th training epoch the un-augmented train and test
    splits of the trainer's DataModule are encoded, in eval mode (the training mode is restored
    afterwards), by the method's evaluation encoder called ``encoder``
    (:func:`~sslkit.eval.cache.evaluation_encoder`, the one the final evaluation encodes), and
    the test split is classified by the kNN protocol
    (:func:`~sslkit.eval.protocol.run_protocols`) with the first k and the temperature of
    ``knn``. Logged as ``monitor/knn_top1@{k}`` (``monitor/knn_mAP@{k}`` for multi-label data),
    with the effective rank of the train features (:func:`~sslkit.eval.rankme.rankme`, the
    final evaluation's ``rankme``) as ``monitor/rankme``, and recorded into ``history`` when
    given.
    Runs on the global-zero process only; the others wait for it at the next collective.
    """

    def __init__(
        self,
        every_n_epochs: int,
        *,
        knn: KNNProtocol,
        encoder: str,
        history: MetricHistory | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"eval.monitor_every must be >= 1 to monitor, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.k = knn.k[0]
        self.temperature = knn.temperature
        self.encoder = encoder
        self.history = history

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        encoder = evaluation_encoder(pl_module, self.encoder)
        features = extract_split_features(encoder, datamodule, pl_module.device)
        knn = KNNProtocol(k=[self.k], temperature=self.temperature)
        result = run_protocols_on_splits(features, datamodule, knn=knn, linear=None)
        name = "mAP" if datamodule.multilabel else "top1"
        train = features.train_features
        values = {
            f"monitor/knn_{name}@{self.k}": result.metrics[f"knn/{name}@{self.k}"],
            # NaN features (diverged weights) are logged as NaN; the final evaluation says why.
            f"monitor/{RANKME}": rankme(train) if torch.isfinite(train).all() else math.nan,
        }
        for key, value in values.items():
            pl_module.log(key, value, rank_zero_only=True)
            if self.history is not None:
                self.history.record(key, trainer.current_epoch + 1, value)


class MetricHistory(Callback):
    """Epoch-level value of every logged metric, per epoch, kept in checkpoints.

    ``history`` maps a metric name to ``[[epoch, value], ...]`` (epochs counted from 1). Values
    logged during training are read at the end of each training epoch (a metric logged per
    step and per epoch by its epoch value), ``val/*`` metrics at the end of each validation
    run, and callbacks such as :class:`KNNMonitor` add theirs with :meth:`record`, so a
    metric computed every few epochs is not repeated in between.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[list[float]]] = {}

    def record(self, name: str, epoch: int, value: float) -> None:
        """Add one point (a repeated epoch replaces the previous value of that epoch)."""
        value = float(value)
        if not math.isfinite(value):
            return
        series = self.history.setdefault(name, [])
        if series and series[-1][0] == epoch:
            series.pop()
        series.append([epoch, value])

    def _record_logged(self, trainer: pl.Trainer, validation: bool) -> None:
        metrics = trainer.callback_metrics
        for name, value in metrics.items():
            if name.endswith("_step") or f"{name}_epoch" in metrics:
                continue
            if name.startswith("monitor/") or name.startswith("val/") != validation:
                continue
            self.record(name.removesuffix("_epoch"), trainer.current_epoch + 1, value)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._record_logged(trainer, validation=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._record_logged(trainer, validation=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {
            name: [list(point) for point in points]
            for name, points in state_dict["history"].items()
        }
