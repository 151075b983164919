"""Typed schemas for the config groups whose values matter, and where the configs live.

Hydra validates every override against these dataclasses while composing, so a typo
(``trainer.max_epoch=5``) or a wrong type (``data.batch_size=big``) stops the run with Hydra's
message before anything is built. Groups whose keys differ per option (methods, sources,
schedules) stay untyped but are still closed: unknown keys are refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import MISSING, DictConfig, OmegaConf


def config_dir() -> str:
    """Directory of the Hydra configs: inside the installed package, else the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"sslkit's configs were not found in {here / 'conf'} nor {here.parents[1] / 'conf'}; "
        "reinstall the package (pip install sslkit) or run from a source checkout."
    )


@dataclass
class DataSchema:
    _target_: str = "sslkit.data.SSLDataModule"
    source: Any = MISSING
    batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 2
    drop_last: bool = True
    imbalance_warn_ratio: float = 10.0
    max_train: int | None = None
    max_test: int | None = None
    subset_seed: int = 0


@dataclass
class TrainerSchema:
    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    check_val_every_n_epoch: int | None = 1
    val_check_interval: Any = None
    log_every_n_steps: int = 10
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: Any = False
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    fast_dev_run: Any = False


@dataclass
class KNNSchema:
    _target_: str = "sslkit.eval.KNNProtocol"
    k: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07


@dataclass
class LinearSchema:
    _target_: str = "sslkit.eval.LinearProtocol"
    epochs: int = 100
    batch_size: int = 512
    lr: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    label_fractions: list[float] = field(default_factory=lambda: [1.0])
    lr_grid: list[float] = field(default_factory=list)
    weight_decay_grid: list[float] = field(default_factory=list)
    val_fraction: float = 0.1


@dataclass
class EvalSchema:
    encoder: str = "student"
    device: str = "auto"
    monitor_every: int = 0
    plots: bool = True
    plot_points: int = 1000
    cache: bool = True
    weights: str | None = None
    knn: KNNSchema | None = None
    linear: LinearSchema | None = None


@dataclass
class PathsSchema:
    output_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class TrainSchema:
    task_name: str = "pretrain"
    seed: int = 0
    resume: bool = True
    # Also write last.ckpt every n optimiser steps (0: only at the end of each epoch), so an
    # interrupted long epoch resumes where it stopped instead of from its beginning.
    checkpoint_every_n_steps: int = 0
    objective: str = "knn/top1@20"
    baselines: list[str] = field(default_factory=lambda: ["raw_pixels", "random_init"])
    data: DataSchema = field(default_factory=DataSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    augment: Any = MISSING
    backbone: Any = MISSING
    method: Any = MISSING
    optim: Any = MISSING
    schedule: Any = None
    logger: Any = None
    local: Any = None


@dataclass
class EvalRunSchema:
    task_name: str = "eval"
    seed: int = 0
    ckpt_path: str | None = None
    objective: str = "knn/top1@20"
    baselines: list[str] = field(default_factory=list)
    data: Any = None
    backbone: Any = None
    augment: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    logger: Any = None
    local: Any = None


@dataclass
class SGDSchema:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = MISSING
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False


@dataclass
class LARSSchema:
    _target_: str = "lightly.utils.lars.LARS"
    _partial_: bool = True
    lr: float = MISSING
    momentum: float = 0.9
    weight_decay: float = 1e-6
    trust_coefficient: float = 0.001


@dataclass
class AdamWSchema:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = MISSING
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.05


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent); call before composing."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(name="eval_schema", node=EvalRunSchema)
    cs.store(group="optim", name="sgd_schema", node=SGDSchema)
    cs.store(group="optim", name="lars_schema", node=LARSSchema)
    cs.store(group="optim", name="adamw_schema", node=AdamWSchema)


def unknown_key_message(config: Any, key: str) -> str | None:
    """Why ``key`` (dotted) is not in ``config``, with the closest existing keys; None if it is."""
    node, path = config, []
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return None
        known = sorted(map(str, node.keys()))  # `in` is False for a key whose value is ???
        if part not in known:
            parent = ".".join(path)
            where = f"of {parent}" if parent else "at the top level"
            close = difflib.get_close_matches(part, known, n=3, cutoff=0.6)
            prefix = f"{parent}." if parent else ""
            hint = (
                f"did you mean {' or '.join(prefix + c for c in close)}?"
                if close
                else f"the settings {where} are: {', '.join(known)}."
            )
            return f"{key} is not a setting {where}; {hint}"
        node, path = OmegaConf.select(node, part, throw_on_missing=False), [*path, part]
    return None


def exit_on_unknown_keys(config_name: str, argv: Sequence[str]) -> None:
    """Stop with one line naming the closest existing key when an override misspells a key.

    Hydra's own message for ``method.temprature=0.2`` suggests adding the key with ``+``, which
    then fails inside the class. Checked on the config composed from the command's group choices
    (``experiment=``, ``method=``, ...); commands that sweep over a group are left to Hydra.
    """
    texts = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(texts)
    except Exception:  # Hydra reports syntax errors itself
        return
    settings = [
        o
        for o in overrides
        if o.type == OverrideType.CHANGE
        and "." in o.key_or_group
        and not o.key_or_group.startswith("hydra.")
    ]
    if not settings:
        return
    base = [
        o.input_line
        for o in overrides
        if o not in settings
        and not o.is_sweep_override()
        and not o.key_or_group.startswith("hydra")
    ]
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            config = compose(config_name, overrides=base)
    except Exception:  # a wrong group name: Hydra's message lists the options
        return
    finally:
        GlobalHydra.instance().clear()
    swept_groups = [
        o
        for o in overrides
        if o.is_sweep_override() and isinstance(config.get(o.key_or_group), DictConfig)
    ]
    if swept_groups:  # the keys depend on the group choice of each job
        return
    problems = [m for o in settings if (m := unknown_key_message(config, o.key_or_group))]
    if problems:
        raise SystemExit("error: " + " ".join(problems))
