"""From config to objects: the datamodule, backbone, method, logger, trainer and its callbacks,
and the trained objects a checkpoint holds.

Both entry points build through these functions, so a checkpoint evaluated later is rebuilt
exactly as its training run built it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from sslkit.eval import KNNProtocol
from sslkit.eval.monitor import KNNMonitor, MetricHistory
from sslkit.methods.base import SSLMethod
from sslkit.models.backbones import Backbone, describe, load_torchvision_weights
from sslkit.run.host import warn_if_bf16_emulated
from sslkit.run.resume import (
    CONFIG_HASH_KEY,
    AtomicCheckpointIO,
    DamagedCheckpointError,
    RandomState,
    StepCheckpoint,
    config_hash,
    read_checkpoint,
)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The DataModule of ``cfg.data`` with the view pipeline of ``cfg.augment``."""
    return instantiate(cfg.data, augment=instantiate(cfg.augment))


def build_backbone(cfg: DictConfig, in_channels: int) -> Backbone:
    """The backbone of ``cfg.backbone``; input channels follow the dataset."""
    return instantiate(cfg.backbone, in_channels=in_channels)


_SAMPLES = {2: "images (B, C, H, W)", 3: "volumes or clips (B, C, D, H, W)"}


def check_dimensions(backbone: Backbone, datamodule: Any, cfg: DictConfig) -> None:
    """Refuse a backbone whose dimensionality is not the data's (a 2-D one on volumes)."""
    data_dims = getattr(datamodule, "spatial_dims", 2)
    if backbone.spatial_dims == data_dims:
        return
    data = OmegaConf.select(cfg, "data.source._target_") or type(datamodule).__name__
    raise ValueError(
        f"backbone {cfg.backbone._target_} is a {backbone.spatial_dims}-D backbone for "
        f"{_SAMPLES.get(backbone.spatial_dims, '?')}, but data {data} gives "
        f"{data_dims}-D samples, {_SAMPLES.get(data_dims, '?')}; choose a {data_dims}-D "
        f"backbone (conf/backbone/) or {backbone.spatial_dims}-D data."
    )


def build_random_backbone(cfg: DictConfig, datamodule: Any) -> Backbone:
    """The backbone of ``cfg.backbone`` at its random init, seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg, datamodule.in_channels)
    check_dimensions(backbone, datamodule, cfg)
    return backbone


def build_bare_backbone(cfg: DictConfig, datamodule: Any) -> Backbone:
    """``cfg.backbone`` with ``eval.weights``: its seeded random init, or torchvision weights."""
    backbone = build_random_backbone(cfg, datamodule)
    if cfg.eval.weights != "random":
        load_torchvision_weights(backbone, cfg.eval.weights)
    return backbone


def build_method(cfg: DictConfig, datamodule: Any) -> SSLMethod:
    """The method of ``cfg.method`` around a fresh backbone, with optimiser and schedule."""
    backbone = build_backbone(cfg, datamodule.in_channels)
    check_dimensions(backbone, datamodule, cfg)
    return instantiate(
        cfg.method,
        backbone=backbone,
        optimizer=instantiate(cfg.optim),
        schedule=instantiate(cfg.schedule) if cfg.get("schedule") else None,
        num_classes=datamodule.num_classes,
        multilabel=datamodule.multilabel,
        batch_size=cfg.data.batch_size,
    )


def build_logger(cfg: DictConfig) -> Any:
    """The logger of ``cfg.logger`` (None for ``logger=none``)."""
    return instantiate(cfg.logger) if cfg.get("logger") else None


def resolve_device(name: str, fallback: torch.device | None = None) -> torch.device:
    """``auto`` -> the trainer's device (or CUDA when present); anything else as given."""
    if name != "auto":
        return torch.device(name)
    if fallback is not None:
        return fallback
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------- trainer


class StoreConfig(Callback):
    """Keep the resolved run config (and its hash, for resuming) inside every checkpoint, so
    it can be evaluated alone."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.hash = config_hash(self.config)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint["sslkit_config"] = self.config
        checkpoint[CONFIG_HASH_KEY] = self.hash


def check_trainer(trainer: DictConfig) -> None:
    """Refuse trainer settings that cannot run here or would train nothing."""
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={trainer.accelerator} (from trainer=gpu or trainer=ddp, or the "
            "preset) but this machine has no CUDA GPU; add trainer=cpu to run on the CPU, or run "
            "it on a GPU machine."
        )
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise ValueError(
                f"trainer.{key}=0 trains nothing, so the results would describe the untrained "
                f"encoder under the method's name. Set trainer.{key} to at least 1; to evaluate "
                "an untrained backbone use the random_init baseline (in every results.json) or "
                "sslkit-eval backbone=<name> data=<name> eval.weights=random."
            )


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
    monitor = KNNMonitor(every, knn=knn, encoder=cfg.eval.encoder, history=history)
    return [monitor, history], history


def build_trainer(
    cfg: DictConfig, output_dir: Path, *, logger: Any, store_config: StoreConfig
) -> tuple[pl.Trainer, MetricHistory]:
    """The trainer of ``cfg.trainer`` with sslkit's callbacks, and the metric history it fills.

    Checkpoints go to ``<output_dir>/checkpoints``: ``epochNNN.ckpt`` and ``last.ckpt`` at every
    epoch end (and ``last.ckpt`` every ``checkpoint_every_n_steps`` steps), written atomically,
    with the run config, its hash and the random states inside.
    """
    checkpoints = output_dir / "checkpoints"
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_last=True,
            # last.ckpt is also written by StepCheckpoint: overwrite it, never add last-v1.
            enable_version_counter=False,
            # After every epoch-end callback, so the checkpoint holds the epoch's history.
            save_on_train_epoch_end=True,
        ),
        store_config,
        RandomState(),
    ]
    if cfg.checkpoint_every_n_steps:
        callbacks.append(StepCheckpoint(checkpoints / "last.ckpt", cfg.checkpoint_every_n_steps))
    monitors, history = build_monitor_callbacks(cfg)
    callbacks.extend(monitors)
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    warn_if_bf16_emulated(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = instantiate(
        cfg.trainer,
        logger=logger or False,
        callbacks=callbacks,
        default_root_dir=str(output_dir),
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, history


# ------------------------------------------------------------------------------ checkpoints


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``sslkit-train``, refusing files it did not write."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint {file} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = read_checkpoint(file)
    except DamagedCheckpointError as exc:
        raise DamagedCheckpointError(
            f"{exc}. Pass an intact one, e.g. a checkpoints/epochNNN.ckpt of the same run."
        ) from None
    if "sslkit_config" not in checkpoint:
        raise ValueError(f"{file} holds no sslkit run config; was it written by sslkit-train?")
    return checkpoint


#: Data keys that describe the encoder's input rather than the dataset: an evaluation on other
#: data keeps the training run's values unless it sets its own.
INPUT_KEYS = {"input_size": None, "standardize": False}


#: Modules that moved, by their old dotted prefix: targets stored in older checkpoints.
MOVED_TARGETS = {"sslkit.loggers.": "sslkit.run.loggers.", "sslkit.sweep.": "sslkit.run.failures."}


def _moved_targets(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _moved_targets(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_moved_targets(value) for value in node]
    if isinstance(node, str):
        for old, new in MOVED_TARGETS.items():
            if node.startswith(old):
                return new + node[len(old) :]
    return node


def stored_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The run config a checkpoint holds, in today's keys and module paths: checkpoints written
    before the per-sample standardisation became a data step (``data.standardize``) held it as
    the ConvNet's ``backbone.standardize_input``, and named the loggers in ``sslkit.loggers``."""
    config = OmegaConf.create(_moved_targets(checkpoint["sslkit_config"]))
    backbone = config.get("backbone")
    if isinstance(backbone, DictConfig) and "standardize_input" in backbone:
        with open_dict(config):
            standardize = bool(backbone.pop("standardize_input"))
            if isinstance(config.get("data"), DictConfig):
                config.data.standardize = bool(config.data.get("standardize")) or standardize
    return config


def run_config(cfg: DictConfig, checkpoint: dict[str, Any]) -> DictConfig:
    """The training run's config, with this evaluation's data, backbone, eval, seed, baselines."""
    merged = stored_config(checkpoint)
    trained_data = merged.get("data")
    with open_dict(merged):
        for key in ("data", "backbone"):
            if cfg.get(key) is not None:
                merged[key] = cfg[key]
        if cfg.get("data") is not None and isinstance(trained_data, DictConfig):
            for key, default in INPUT_KEYS.items():
                if merged.data.get(key, default) == default and key in trained_data:
                    merged.data[key] = trained_data[key]
        merged.eval = cfg.eval
        merged.seed = cfg.seed
        merged.baselines = cfg.baselines
    return merged


def stored_history(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The per-epoch metric curves a training run kept in its checkpoint, if any."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("MetricHistory"):
            return state["history"]
    return None


def check_backbone(method: SSLMethod, checkpoint: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint whose backbone architecture differs from the configured one."""
    expected = checkpoint.get("sslkit_backbone")
    configured = describe(method.backbone)
    if expected is not None and configured != expected:
        raise ValueError(
            f"the checkpoint {path} holds a {_architecture(expected)} but the configured "
            f"backbone is a {_architecture(configured)}; drop the backbone= (and data=) "
            "override to use the checkpoint's own, or pass the architecture it was trained with"
        )


def _architecture(description: dict[str, Any]) -> str:
    return (
        f"{description['class']} ({description['feature_dim']}-d features, output stride "
        f"{description['output_stride']}, {description['num_parameters']:,} parameters)"
    )


def restore_method(
    cfg: DictConfig, checkpoint: dict[str, Any], path: str | Path
) -> tuple[SSLMethod, Any]:
    """The method and datamodule of ``cfg``, with the checkpoint's trained weights."""
    datamodule = build_datamodule(cfg)
    method = build_method(cfg, datamodule)
    check_backbone(method, checkpoint, str(path))
    method.load_state_dict(checkpoint["state_dict"])
    return method, datamodule


class LoadedRun(NamedTuple):
    """A trained method (in eval mode), the datamodule it was trained on and its run config."""

    method: SSLMethod
    datamodule: Any
    config: DictConfig


def load_method(ckpt_path: str | Path) -> LoadedRun:
    """Load a checkpoint written by ``sslkit-train`` for analysis (notebooks, scripts).

    Builds the method and data from the config stored in the checkpoint, the same way
    ``sslkit-eval`` does.
    """
    checkpoint = load_checkpoint(ckpt_path)
    config = stored_config(checkpoint)
    method, datamodule = restore_method(config, checkpoint, ckpt_path)
    return LoadedRun(method.eval(), datamodule, config)
