"""Typed schemas of the configs, derived from the code, and where the configs live.

Every default is written once, in the signature of the class or function that uses it.
:func:`schema_of` turns such a signature into a structured config with the same defaults. When
the configs are registered, every option file ``conf/<group>/<option>.yaml`` that names a
``_target_`` gets the schema of that target as ``<group>_<option>_schema`` (and each nested
target, such as ``data.source``, ``<group>_<option>_<key>_schema``); the file merges it first in
its defaults list and sets only the values that differ. What a signature does not say (the
arguments the builders pass at run time, keys a recipe fixes) is declared on the target with
:func:`sslkit.configurable.configurable`; an option that offers only some keys of its target
lists them in a ``# schema keys: a, b, c`` comment line. Run-level keys that no single class takes
(``seed``, ``resume``, ``eval.encoder``, ...) are defined by :class:`TrainSchema` and
:class:`EvalRunSchema`, and the trainer's by :class:`TrainerSchema`. Hydra validates every
override against these schemas while composing, so a typo (``trainer.max_epoch=5``), a key the
target does not take (``backbone.small_input`` with ``backbone=convnet``) or a wrong type
(``data.batch_size=big``) stops the run with a message naming the key and the class.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import re
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

from sslkit.configurable import declaration


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
    schema = dataclasses.make_dataclass(name or f"{obj.__name__}Schema", fields)
    # Importable as sslkit.config.<name>, so that a config pickled into another process (a
    # submitit job) refers to it by name.
    schema.__module__ = __name__
    globals().setdefault(schema.__name__, schema)
    return schema


# ------------------------------------------------------------------------------ the schemas

#: Config groups whose options are not derived from a ``_target_`` (the trainer's keys are
#: :class:`TrainerSchema`, the protocols' are :class:`KNNSchema` / :class:`LinearSchema`) or are
#: not options at all (presets, sweeps, launchers, site settings).
_UNDERIVED_GROUPS = ("experiment", "sweep", "hydra", "local", "trainer", "eval")
#: A comment line of an option file that offers only some keys of its target, e.g.
#: ``# schema keys: lr, momentum, weight_decay, nesterov`` (torch's SGD takes more).
_KEYS_LINE = re.compile(r"^#\s*schema keys:\s*(?P<keys>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class OptionSchema:
    """The schema of one config node that names a ``_target_``: a whole option file
    (``key`` None) or one of its nested targets (``data.source``, ``method.mask``)."""

    name: str  # as stored in the ConfigStore and named in the option's defaults list
    path: Path
    key: str | None
    target: str
    partial: bool
    include: tuple[str, ...] | None

    @property
    def entry(self) -> str:
        """The defaults-list entry that merges it."""
        return f"/{self.name}@{self.key or '_here_'}"


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def option_schemas(root: str | Path | None = None) -> list[OptionSchema]:
    """Every option file's schemas, read off the files: ``conf/<group>/<option>.yaml`` naming a
    ``_target_`` gets ``<group>_<option>_schema``, and each top-level key of it that names a
    ``_target_`` of its own gets ``<group>_<option>_<key>_schema``."""
    found = []
    for path in sorted(Path(root or config_dir()).glob("*/*.yaml")):
        group, option = path.parent.name, path.stem
        if group in _UNDERIVED_GROUPS:
            continue
        text = path.read_text()
        raw = OmegaConf.to_container(OmegaConf.create(text), resolve=False) if text.strip() else {}
        if not isinstance(raw, dict) or raw.get("_target_") is None:
            continue  # a variant of another option (its defaults name it) or `logger=none`
        lines = _KEYS_LINE.findall(text)
        include = tuple(k for k in re.split(r"[,\s]+", lines[0]) if k) if lines else None
        found.append(
            OptionSchema(
                f"{group}_{option}_schema", path, None, str(raw["_target_"]),
                bool(raw.get("_partial_", False)), include,
            )
        )  # fmt: skip
        for key, value in raw.items():
            if isinstance(value, dict) and value.get("_target_") is not None:
                found.append(
                    OptionSchema(
                        f"{group}_{option}_{key}_schema", path, str(key), str(value["_target_"]),
                        bool(value.get("_partial_", False)), None,
                    )
                )  # fmt: skip
    return found


def check_merges_schema(option: OptionSchema) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(option.path), resolve=False)
    entries = [e for e in raw.get("defaults", []) if isinstance(e, str)]
    if option.entry not in entries and option.entry[1:] not in entries:
        where = f"its `{option.key}` ({option.target})" if option.key else option.target
        raise ValueError(
            f"{option.path}: the defaults list must merge the schema derived from {where}: "
            f"add `- {option.entry}` before `- _self_`."
        )


#: Schema classes by what they are derived from, so that options with the same target share one.
_DERIVED: dict[tuple[Any, ...], type] = {}


def derived_schema(option: OptionSchema) -> type:
    """The structured config of ``option``'s target, as its class declares it
    (:func:`sslkit.configurable.configurable`), limited to the option's ``# schema keys:`` line if any."""
    try:
        obj = get_object(option.target)
    except Exception as error:
        raise ValueError(
            f"{option.path}: _target_ {option.target} cannot be imported ({error})"
        ) from error
    declared = declaration(obj) or {}
    spec = {
        "exclude": tuple(declared.get("exclude", ())),
        "include": option.include,
        "shared": declared.get("shared"),
        "partial": option.partial,
    }
    cache_key = (option.target, *(tuple(v) if isinstance(v, list) else v for v in spec.values()))
    if cache_key not in _DERIVED:
        name, count = f"{_camel(obj.__name__)}Schema", 1
        while name in globals():  # another subset of the same target's keys
            name, count = (
                f"{_camel(obj.__name__)}Subset{count if count > 1 else ''}Schema",
                count + 1,
            )
        _DERIVED[cache_key] = schema_of(obj, name=name, **spec)
    return _DERIVED[cache_key]


KNNSchema = schema_of("sslkit.eval.KNNProtocol", name="KNNSchema")
LinearSchema = schema_of("sslkit.eval.LinearProtocol", name="LinearSchema")
FinetuneSchema = schema_of("sslkit.eval.finetune.FinetuneProtocol", name="FinetuneSchema")


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
    finetune: FinetuneSchema | None = None  # type: ignore[valid-type]


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
    data: Any = MISSING
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


_registered = False


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent); call before composing.

    The option schemas are derived from the option files found under :func:`config_dir`; an
    option file whose defaults list does not merge its schema is an error here."""
    global _registered
    if _registered:
        return
    import sslkit.optim  # noqa: F401  (declarations of the optimisers torch and lightly ship)

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(name="eval_schema", node=EvalRunSchema)
    for option in option_schemas():
        check_merges_schema(option)
        cs.store(name=option.name, node=derived_schema(option))
    _registered = True


def __getattr__(name: str) -> Any:
    """Derived schema classes by name (``sslkit.config.ConvNetSchema``), so that a config
    pickled into another process (a submitit job) finds its class there."""
    if name.endswith("Schema") and not name.startswith("_"):
        register_configs()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            if parent and node.get("_target_") is not None:
                where += f" ({node._target_})"
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
