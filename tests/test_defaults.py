"""Every default is written once: in the signature of the code that uses it.

The typed schemas are derived from those signatures, the YAML files set only what differs, and
``--help`` offers only real choices.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from sslkit.config import (
    TrainerSchema,
    check_merges_schema,
    config_dir,
    derived_schema,
    option_schemas,
)
from sslkit.eval import KNNProtocol, LinearProtocol
from tests.conftest import compose_config

CONF = Path(config_dir())
GROUPS = ("augment", "backbone", "data", "logger", "method", "optim", "schedule")


def _schemas() -> dict[str, object]:
    return {option.name: derived_schema(option) for option in option_schemas()}


def _options() -> list[Path]:
    return [path for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def _merged_schemas(raw) -> list[tuple[object, str | None]]:
    """The schemas an option file merges (``/<name>@<package>`` entries of its defaults)."""
    found = []
    for entry in raw.get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/"):
            name, _, package = entry[1:].partition("@")
            found.append((_schemas()[name], None if package == "_here_" else package))
    return found


@pytest.mark.parametrize("path", _options(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_option_files_set_only_what_differs_from_the_code(path: Path) -> None:
    raw = OmegaConf.load(path)
    schemas = _merged_schemas(raw)
    if raw.get("_target_") is not None:  # `logger=none` instantiates nothing
        assert schemas, f"{path} merges no schema derived from its _target_"
    for schema, package in schemas:
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        node = OmegaConf.to_container(raw.get(package) if package else raw)
        for key, value in node.items():
            if key in ("defaults", "_target_", "_partial_") or isinstance(value, dict):
                continue
            assert key in defaults, f"{path}: {key} is not a parameter of the target"
            assert value != defaults[key], f"{path}: {key}={value!r} repeats the code's default"


@pytest.mark.parametrize("path", _options(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_keys_an_option_leaves_out_hold_the_code_defaults(path: Path) -> None:
    group, raw = path.parent.name, OmegaConf.load(path)
    composed = compose_config("train", [f"{group}={path.stem}"])[group]
    pairs = [(composed, raw)]
    if group == "data":
        pairs.append((composed.source, raw.source))
    for node, written in pairs:
        if not node or "_target_" not in node:  # logger=none: nothing to instantiate
            continue
        values = OmegaConf.to_container(node)
        signature = inspect.signature(get_object(node._target_)).parameters
        for key, value in values.items():
            if key in written or key not in signature:
                continue
            default = signature[key].default
            if default is inspect.Parameter.empty:  # required: no default to hold
                assert value == "???", key
                continue
            assert value == (list(default) if isinstance(default, tuple) else default), key


def test_protocol_defaults_are_the_runtime_classes_own() -> None:
    cfg = compose_config("train", [])
    assert OmegaConf.to_container(cfg.eval.knn) == {"_target_": "sslkit.eval.KNNProtocol"} | {
        "k": KNNProtocol().k,
        "temperature": KNNProtocol().temperature,
    }
    linear = {key: value for key, value in cfg.eval.linear.items() if key != "_target_"}
    assert {**linear, "seed": 0} == {key: getattr(LinearProtocol(), key) for key in linear}


@pytest.mark.parametrize("path", sorted((CONF / "trainer").glob("*.yaml")), ids=lambda p: p.stem)
def test_trainer_options_set_only_what_differs_from_the_trainer_schema(path: Path) -> None:
    defaults = OmegaConf.to_container(OmegaConf.structured(TrainerSchema))
    for key, value in OmegaConf.to_container(OmegaConf.load(path)).items():
        if key == "defaults":  # another trainer option it builds on
            continue
        assert value != defaults[key], f"{path}: {key}={value!r} repeats TrainerSchema's default"


def test_primary_configs_set_no_run_level_values() -> None:
    for name in ("train", "eval"):
        raw = OmegaConf.load(CONF / f"{name}.yaml")
        assert set(raw) == {"defaults"}, f"{name}.yaml sets {sorted(set(raw) - {'defaults'})}"


def test_help_offers_only_real_choices(tmp_path: Path, run_in_process) -> None:
    done = run_in_process([sys.executable, "-m", "sslkit.train", "--help"], cwd=tmp_path)
    groups = done.stdout.split("== Config ==")[0]
    assert "optim: adamw, lars, sgd\n" in groups
    assert "schema" not in groups and "local:" not in groups


def test_every_option_with_a_target_gets_its_schema_and_merges_it() -> None:
    options = {option.name: option for option in option_schemas()}
    assert options["backbone_convnet_schema"].target == "sslkit.models.ConvNet"
    assert options["data_synthetic_source_schema"].key == "source"
    assert options["optim_sgd_schema"].partial
    assert set(options["optim_sgd_schema"].include) == {
        "lr",
        "momentum",
        "weight_decay",
        "nesterov",
    }
    for option in options.values():
        check_merges_schema(option)  # raises for a file that does not


def test_an_option_that_does_not_merge_its_schema_fails_registration(tmp_path: Path) -> None:
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "tiny.yaml").write_text(
        "defaults:\n  - _self_\n_target_: sslkit.models.ConvNet\nwidths: [8]\n"
    )
    [option] = option_schemas(tmp_path)
    assert option.name == "backbone_tiny_schema"
    with pytest.raises(
        ValueError, match=r"tiny\.yaml.*sslkit\.models\.ConvNet.*/backbone_tiny_schema@_here_"
    ):
        check_merges_schema(option)


def test_a_declared_runtime_argument_is_not_a_key() -> None:
    options = {option.name: option for option in option_schemas()}
    keys = set(OmegaConf.structured(derived_schema(options["method_simclr_schema"])))
    assert "temperature" in keys and not keys & {"backbone", "optimizer", "num_classes"}
    views = set(OmegaConf.structured(derived_schema(options["augment_simclr_schema"])))
    assert {"min_scale", "cj_strength"} <= views  # shared with view_spec
    assert not views & {"image_size", "mean", "std", "in_channels", "suffix"}


def test_a_key_the_target_does_not_take_names_the_key_and_the_class(
    tmp_path: Path, run_in_process
) -> None:
    done = run_in_process(
        [sys.executable, "-m", "sslkit.train", "backbone=convnet", "backbone.small_input=false"],
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert (
        "backbone.small_input is not a setting of backbone (sslkit.models.ConvNet)" in done.stderr
    )
