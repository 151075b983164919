"""A misspelt key stops the command with the closest existing key, before Hydra runs."""

from __future__ import annotations

import pytest

from sslkit.config import exit_on_unknown_keys


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["method.temprature=0.2"], "did you mean method.temperature?"),
        (["experiment=byol_convnet_synthetic", "method.tau_bse=0.9"], "method.tau_base?"),
        (["-m", "seed=0,1", "trainer.max_epoch=3"], "trainer.max_epochs"),
        (
            ["method.foo.bar=1"],
            "the settings of method (sslkit.methods.SimCLR) are: _target_, hidden_dim",
        ),
    ],
)
def test_misspelt_keys_get_the_closest_existing_one(argv: list[str], suggestion: str) -> None:
    with pytest.raises(SystemExit, match="is not a setting") as stop:
        exit_on_unknown_keys("train", argv)
    assert suggestion in str(stop.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["method.temperature=0.2", "+trainer.max_time=null", "hydra.run.dir=x"],
        ["data=imagefolder", "data.source.root=/data"],  # a key whose default is ???
        ["-m", "method=simclr,byol", "method.tau_base=0.9"],  # keys depend on the swept group
        ["method=nonexistent", "method.temperature=0.2"],  # Hydra lists the options itself
    ],
)
def test_valid_or_undecidable_overrides_pass(argv: list[str]) -> None:
    exit_on_unknown_keys("train", argv)


def test_eval_keys_are_checked_against_the_eval_config() -> None:
    with pytest.raises(SystemExit, match="did you mean eval.encoder"):
        exit_on_unknown_keys("eval", ["ckpt_path=x.ckpt", "eval.encodr=teacher"])
