"""Typed schemas of the configs, derived from the code, and where the configs live.

Every default is written once, in the signature of the class or function that uses it.
:func:`schema_of` turns such a signature into a structured config with the same defaults;
each config group option merges the schema of its ``_target_`` (``OPTION_SCHEMAS``) and sets
only the values that differ. Run-level keys that no single class takes (``seed``, ``resume``,
``eval.encoder``, ...) are defined by :class:`TrainSchema` and :class:`EvalRunSchema`, and the
trainer's by :class:`TrainerSchema`. Hydra validates every override against these schemas while
composing, so a typo (``trainer.max_epoch=5``) or a wrong type (``data.batch_size=big``) stops
the run with Hydra's message before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import types
import typing
from collections import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.utils import get_object
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


# ------------------------------------------------------------------ schemas from signatures

_PLAIN = (int, float, bool, str)


def _config_type(annotation: Any, default: Any) -> Any:
    """The type OmegaConf checks a value against: the annotation where OmegaConf supports it
    (plain types, ``list[...]`` of them, optional ones), else that of a plain default, else Any."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _PLAIN:
        return annotation
    if origin is typing.Literal and all(isinstance(a, str) for a in args):
        return str
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        plain = [a for a in rest if a in _PLAIN]
        inner = _config_type(rest[0], None) if len(rest) == 1 else Any
        if len(rest) > 1 and len(plain) == 1:  # e.g. torch's `lr: float | Tensor`
            inner = plain[0]
        if inner is Any or len(rest) == len(args):
            return inner
        return Optional[inner]  # noqa: UP045 (OmegaConf needs it)
    if origin in (list, abc.Sequence) and len(args) == 1 and args[0] in _PLAIN:
        return list[args[0]]
    if isinstance(default, _PLAIN):
        return type(default)
    if isinstance(default, list | tuple) and default:
        kinds = {type(v) for v in default}
        if len(kinds) == 1 and kinds <= set(_PLAIN):
            return list[kinds.pop()]
    return Any


def _parameters(target: Callable[..., Any]) -> list[inspect.Parameter]:
    """Keyword parameters of ``target``; for a class, also those its ``**kwargs`` pass on to
    the ``__init__`` of its bases."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if not isinstance(target, type) or dataclasses.is_dataclass(target):
        parameters = inspect.signature(target).parameters.values()
        return [p for p in parameters if p.kind not in variadic]
    found: dict[str, inspect.Parameter] = {}
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        for parameter in parameters:
            if parameter.kind not in variadic:
                found.setdefault(parameter.name, parameter)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return list(found.values())


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    owners = target.__mro__[::-1] if isinstance(target, type) else [target]
    for owner in owners:
        init = owner if not isinstance(owner, type) or dataclasses.is_dataclass(owner) else None
        init = init or vars(owner).get("__init__")
        if init is None:
            continue
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # annotations that do not resolve outside their module: untyped
            continue
    return hints


def schema_of(
    target: str | Callable[..., Any],
    *,
    name: str | None = None,
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    partial: bool = False,
    shared: str | None = None,
    bases: Sequence[str | type] = (),
) -> type:
    """A structured config of ``target``'s keyword parameters, with its own defaults.

    This is how every typed schema is made, so that a default is written in the code only and a
    YAML file sets only what differs. ``target`` is a class, function or dataclass (or its
    dotted path); its parameters become typed fields (see :func:`_config_type`) whose defaults
    are the code's, and a parameter without a default is required (``???``).

    Args:
        name: The class name (default ``<target>Schema``).
        exclude: Parameters the builders pass at run time.
        include: Only these parameters (the keys the configs offer).
        partial: Add ``_partial_: true`` (a factory completed at run time).
        shared: The function ``target``'s ``**kwargs`` go to; its optional parameters join the
            schema (e.g. the view keys every recipe shares, :func:`~sslkit.augment.views.view_spec`).
        bases: Schemas (or their dotted paths) it extends, for a field typed by one of them
            (``data`` is a :class:`DataSchema`, so a DataModule subclass's schema extends it).
    """
    path = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
    obj = get_object(target) if isinstance(target, str) else target
    hints = _hints(obj)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=path))]
    if partial:
        fields.append(("_partial_", bool, dataclasses.field(default=True)))
    factories = (
        {f.name: f.default_factory for f in dataclasses.fields(obj)}
        if dataclasses.is_dataclass(obj)
        else {}
    )
    parameters = _parameters(obj)
    if shared is not None:
        shared_obj = get_object(shared)
        hints = {**_hints(shared_obj), **hints}
        known = {p.name for p in parameters}
        parameters += [
            p
            for p in _parameters(shared_obj)
            if p.name not in known and p.default is not inspect.Parameter.empty
        ]
    for parameter in parameters:
        if parameter.name in exclude or (include is not None and parameter.name not in include):
            continue
        default = parameter.default
        if factories.get(parameter.name, dataclasses.MISSING) is not dataclasses.MISSING:
            default = factories[parameter.name]()
        kind = _config_type(hints.get(parameter.name, Any), default)
        if default is inspect.Parameter.empty:
            value = dataclasses.field(default=MISSING)
        elif isinstance(default, list | tuple):
            value = dataclasses.field(default_factory=functools.partial(list, default))
        elif isinstance(default, Path):
            value = dataclasses.field(default=str(default))
        else:
            value = dataclasses.field(default=default)
        fields.append((parameter.name, kind, value))
    parents = tuple(get_object(base) if isinstance(base, str) else base for base in bases)
    schema = dataclasses.make_dataclass(name or f"{obj.__name__}Schema", fields, bases=parents)
    # Importable as sslkit.config.<name>, so that a config pickled into another process (a
    # submitit job) refers to it by name.
    schema.__module__ = __name__
    globals().setdefault(schema.__name__, schema)
    return schema


# ------------------------------------------------------------------------------ the schemas

#: Arguments the builders pass at run time, never set in a config.
_METHOD_ARGS = (
    "backbone", "optimizer", "schedule", "num_classes", "multilabel", "batch_size",
    "base_batch_size",
)  # fmt: skip
_VIEW_ARGS = ("image_size", "mean", "std", "in_channels", "suffix")
_SCHEDULE_ARGS = ("optimizer", "total_steps", "steps_per_epoch")
#: Where the view factories' ``**shared`` keys go.
_VIEW = "sslkit.augment.views.view_spec"
_VOLUME_VIEW = "sslkit.augment.volumes.volume_view_spec"

#: Schemas of the config group options, derived from what each instantiates. An option file
#: merges its schema first (``defaults: [/<name>@_here_, _self_]``) and sets only what differs.
#: Stored under top-level names, so that they are not offered as group options.
OPTION_SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "method_simclr_schema": ("sslkit.methods.SimCLR", {"exclude": _METHOD_ARGS}),
    "method_byol_schema": ("sslkit.methods.BYOL", {"exclude": _METHOD_ARGS}),
    "method_pairwise_schema": ("sslkit.methods.PairwiseContrastive", {"exclude": _METHOD_ARGS}),
    "method_triplet_schema": ("sslkit.methods.Triplet", {"exclude": _METHOD_ARGS}),
    "method_supervised_schema": ("sslkit.methods.Supervised", {"exclude": _METHOD_ARGS}),
    "method_inpainting_schema": ("sslkit.methods.MaskedInpainting", {"exclude": _METHOD_ARGS}),
    "mask_schema": ("sslkit.augment.MaskGenerator", {}),
    "backbone_convnet_schema": ("sslkit.models.ConvNet", {"exclude": ("in_channels",)}),
    "backbone_resnet_schema": ("sslkit.models.ResNet", {"exclude": ("in_channels",)}),
    "backbone_conv3d_schema": ("sslkit.models.ConvNet3d", {"exclude": ("in_channels",)}),
    "backbone_video_resnet_schema": ("sslkit.models.VideoResNet", {"exclude": ("in_channels",)}),
    "augment_simclr_schema": (
        "sslkit.augment.simclr_views",
        {"exclude": (*_VIEW_ARGS, "sigmas", "solarization"), "partial": True, "shared": _VIEW},
    ),
    # One mild view (inpainting, supervised): SimCLR's factory with its crop and flip keys.
    "augment_mild_schema": (
        "sslkit.augment.simclr_views",
        {
            "include": (
                "num_views",
                "min_scale",
                "cj_prob",
                "random_gray_scale",
                "gaussian_blur",
                "hf_prob",
                "vf_prob",
                "rr_prob",
                "backend",
            ),
            "partial": True,
            "shared": _VIEW,
        },
    ),  # fmt: skip
    "augment_byol_schema": (
        "sslkit.augment.byol_views",
        {"exclude": (*_VIEW_ARGS, "rr_degrees"), "partial": True, "shared": _VIEW},
    ),
    "augment_volumes_schema": (
        "sslkit.augment.simclr_volume_views",
        {"exclude": _VIEW_ARGS, "partial": True, "shared": _VOLUME_VIEW},
    ),
    "augment_byol_volumes_schema": (
        "sslkit.augment.byol_volume_views",
        {"exclude": _VIEW_ARGS, "partial": True, "shared": _VOLUME_VIEW},
    ),
    "augment_none_schema": ("sslkit.augment.no_views", {"exclude": _VIEW_ARGS, "partial": True}),
    # Clip views: an image recipe (``views``, a partial) applied per clip of a video.
    "augment_clips_schema": (
        "sslkit.augment.clip_views",
        {"exclude": (*_VIEW_ARGS, "frames", "stride"), "partial": True},
    ),
    "schedule_warmup_cosine_schema": (
        "sslkit.optim.warmup_cosine",
        {"exclude": _SCHEDULE_ARGS, "partial": True},
    ),
    "schedule_constant_schema": (
        "sslkit.optim.constant",
        {"exclude": _SCHEDULE_ARGS, "partial": True},
    ),
    "optim_sgd_schema": (
        "torch.optim.SGD",
        {"include": ("lr", "momentum", "weight_decay", "nesterov"), "partial": True},
    ),
    "optim_lars_schema": (
        "lightly.utils.lars.LARS",
        {"include": ("lr", "momentum", "weight_decay", "trust_coefficient"), "partial": True},
    ),
    "optim_adamw_schema": (
        "torch.optim.AdamW",
        {"include": ("lr", "betas", "weight_decay"), "partial": True},
    ),
    "logger_wandb_schema": ("sslkit.loggers.wandb_logger", {}),
    "logger_csv_schema": (
        "sslkit.loggers.ResumableCSVLogger",
        {"include": ("save_dir", "name", "version")},
    ),
    "source_synthetic_schema": ("sslkit.data.SyntheticShapes", {}),
    "source_fashion_mnist_schema": ("sslkit.data.FashionMNIST", {}),
    "source_cifar_schema": ("sslkit.data.CIFAR10", {}),
    "source_stl10_schema": ("sslkit.data.STL10", {}),
    "source_imagefolder_schema": ("sslkit.data.ImageFolder", {}),
    "source_synthetic_video_schema": ("sslkit.data.SyntheticClips", {}),
    "source_videofolder_schema": ("sslkit.data.VideoFolder", {}),
    "data_video_schema": (
        "sslkit.data.VideoDataModule",
        {"exclude": ("augment",), "bases": ("sslkit.config.DataSchema",)},
    ),
    "source_synthetic_volumes_schema": ("sslkit.data.SyntheticVolumes", {}),
    "source_volume_folder_schema": ("sslkit.data.VolumeFolder", {}),
}

DataSchema = schema_of("sslkit.data.SSLDataModule", name="DataSchema", exclude=("augment",))
KNNSchema = schema_of("sslkit.eval.KNNProtocol", name="KNNSchema")
LinearSchema = schema_of("sslkit.eval.LinearProtocol", name="LinearSchema")
#: The option schemas by name, as classes of this module.
_OPTION_CLASSES = {
    name: schema_of(target, name="".join(part.title() for part in name.split("_")), **options)
    for name, (target, options) in OPTION_SCHEMAS.items()
}


@dataclass
class TrainerSchema:
    """``trainer.*``: the Lightning Trainer arguments sslkit offers, with sslkit's defaults."""

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
class EvalSchema:
    """``eval.*``: run-level evaluation settings, defined here (no single class takes them)."""

    # Which encoder of the method is evaluated (methods with a teacher also offer `teacher`).
    encoder: str = "student"
    # Device for feature extraction and probes: auto = the trainer's device.
    device: str = "auto"
    # kNN monitor (first k and T of eval.knn) every n epochs while pretraining; 0 = off.
    monitor_every: int = 0
    # PNGs in <run dir>/plots (curves, confusion matrix, t-SNE/UMAP map, retrieval grid).
    plots: bool = True
    # Test points in the 2-D embedding map (a seeded subsample keeps t-SNE cheap).
    plot_points: int = 1000
    # sslkit-eval: features of a checkpoint are kept in <ckpt dir>/features/ and reused.
    cache: bool = True
    # sslkit-eval without ckpt_path: random (seeded init) or a torchvision weights name, e.g.
    # ResNet18_Weights.IMAGENET1K_V1 (with backbone.small_input=false).
    weights: str | None = None
    knn: KNNSchema | None = None  # type: ignore[valid-type]
    linear: LinearSchema | None = None  # type: ignore[valid-type]


@dataclass
class RunSchema:
    """What ``sslkit-train`` and ``sslkit-eval`` runs share."""

    task_name: str = MISSING
    seed: int = 0
    # Metric returned to sweepers (e.g. Optuna) as the run's objective.
    # None: the kNN top-1 at the first eval.knn.k (mAP if multi-label; without kNN linear/top1).
    objective: str | None = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    logger: Any = None
    local: Any = None


@dataclass
class TrainSchema(RunSchema):
    """``sslkit-train``'s run-level keys."""

    task_name: str = "pretrain"
    # Continue from <run dir>/checkpoints/last.ckpt when the run dir holds one written by the
    # same config (hash of the resolved config without logger/eval/local keys); otherwise start
    # fresh and keep the old checkpoints in checkpoints.<hash>/.
    resume: bool = True
    # Also write last.ckpt every n optimiser steps (0: only at the end of each epoch), so an
    # interrupted long epoch resumes where it stopped instead of from its beginning.
    checkpoint_every_n_steps: int = 0
    # Reference rows evaluated with the same protocol: flattened pixels and an untrained encoder.
    baselines: list[str] = field(default_factory=lambda: ["raw_pixels", "random_init"])
    data: DataSchema = field(default_factory=DataSchema)  # type: ignore[valid-type]
    augment: Any = MISSING
    backbone: Any = MISSING
    method: Any = MISSING
    optim: Any = MISSING
    schedule: Any = None


@dataclass
class EvalRunSchema(RunSchema):
    """``sslkit-eval``'s run-level keys: data and backbone come from the checkpoint."""

    task_name: str = "eval"
    ckpt_path: str | None = None
    baselines: list[str] = field(default_factory=list)
    data: Any = None
    backbone: Any = None
    augment: Any = None


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent); call before composing."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(name="eval_schema", node=EvalRunSchema)
    # Every data option merges it first (also under sslkit-eval, whose `data` is untyped).
    cs.store(name="data_schema", node=DataSchema)
    for name, schema in _OPTION_CLASSES.items():
        cs.store(name=name, node=schema)


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
