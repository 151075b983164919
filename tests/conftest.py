"""Shared fixtures: compose the real configs, shrunk to run in seconds on a CPU."""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sslkit.config import config_dir, register_configs

# Tiny synthetic data and a tiny convnet: a full pretrain + evaluate cycle in a few seconds.
TINY = [
    "data=synthetic",
    "data.source.num_train=128",
    "data.source.num_test=64",
    "data.source.image_size=16",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "backbone=convnet",
    "backbone.widths=[8,16]",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
    "eval.knn.k=[5,20]",
    "eval.linear.epochs=5",
    "eval.plots=false",
]


def compose_config(
    name: str, overrides: Sequence[str], output_dir: Path | None = None
) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides, as ``sslkit-train`` would (Hydra settings too)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
    return cfg


@pytest.fixture
def hydra_run(tmp_path: Path) -> Iterator[callable]:
    """Compose a config into ``tmp_path`` and make it the current Hydra run."""

    def make(name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
        cfg = compose_config(name, overrides, tmp_path)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra
        return cfg

    yield make
    GlobalHydra.instance().clear()


# --------------------------------------------------------------------- methods and presets
#
# The method tests read what to run from conf/: every conf/method/<name>.yaml is a method, and
# every conf/experiment/*_synthetic*.yaml preset is a preset on generated data of the method
# its defaults choose (named <method>_..._synthetic*). A new method and its presets get the
# learning guard, training-step, distributed and resume tests without a test edit.

CONF_DIR = Path(config_dir())

#: The smallest data of each kind of generated data, for tests of a few training steps.
TINY_DATA = {
    "synthetic": ["data.source.num_train=64", "data.source.num_test=32", "data.source.image_size=16"],
    "synthetic_volumes": [
        "data.source.num_train=64", "data.source.num_test=32", "data.source.image_size=12",
    ],
    "synthetic_video": [
        "data.source.num_train=64", "data.source.num_test=32", "data.source.image_size=16",
    ],
}  # fmt: skip


def method_names() -> list[str]:
    """Every method: the options of ``conf/method/``."""
    return sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml"))


def synthetic_presets() -> list[str]:
    """Every preset on generated data: ``conf/experiment/*_synthetic*.yaml``."""
    return sorted(path.stem for path in (CONF_DIR / "experiment").glob("*_synthetic*.yaml"))


def preset_comment(preset: str, key: str) -> str | None:
    """The text of the preset's ``# <key>: <text>`` comment line; None without one."""
    text = (CONF_DIR / "experiment" / f"{preset}.yaml").read_text()
    match = re.search(rf"^#\s*{re.escape(key)}:\s*(.*?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def tiny_overrides(preset: str) -> list[str]:
    """The preset's ``# tiny: <overrides>`` line: what the tests on the smallest data (a few
    steps on 64 samples, batches of 16, 6 samples a process) need on top, e.g. a queue that fits
    64 training images (``# tiny: method.queue_size=48``); [] without one."""
    line = preset_comment(preset, "tiny")
    return line.split() if line else []


@functools.cache
def preset_choices(preset: str) -> dict[str, str | None]:
    """The option every config group takes in the composed preset (``method``, ``data``, ...)."""
    choices = compose_config("train", [f"experiment={preset}"]).hydra.runtime.choices
    return {str(group): option for group, option in choices.items()}


def presets_of(method: str) -> list[str]:
    """The presets on generated data of ``method``: named after it and composing it."""
    return [
        preset
        for preset in synthetic_presets()
        if preset.startswith(f"{method}_") and preset_choices(preset)["method"] == method
    ]


def missing_preset_message(method: str) -> str:
    return (
        f"the method {method!r} (conf/method/{method}.yaml) has no preset on generated data: "
        f"a method needs conf/experiment/{method}_<backbone>_synthetic.yaml (choosing "
        f"method: {method}), which its learning guard, training-step and resume tests run."
    )


BIN = Path(sys.executable).parent


def run_cli(
    args: Sequence[str | Path], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a console script as a user would (W&B off unless ``env`` says otherwise)."""
    environ = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    environ.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )


def _console_script(args: Sequence[str | Path]) -> tuple[Callable[[], object], list[str]]:
    """The entry point a command line runs and the ``sys.argv`` it sees."""
    from sslkit import evaluate, report, train

    mains = {"sslkit-train": train.main, "sslkit-eval": evaluate.main, "sslkit-report": report.main}
    modules = {"sslkit.train": train.main, "sslkit.evaluate": evaluate.main}
    words = [str(a) for a in args]
    if Path(words[0]).name in mains:
        return mains[Path(words[0]).name], [Path(words[0]).name, *words[1:]]
    if words[1:2] == ["-m"] and words[2] == "sslkit.report":
        return (lambda: report.main(words[3:])), words[2:]
    if words[1:2] == ["-m"] and words[2] in modules:
        return modules[words[2]], words[2:]
    raise ValueError(f"not an sslkit command: {words[:3]}")


def run_console_script(
    args: Sequence[str | Path],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    capfd: pytest.CaptureFixture[str] | None = None,
) -> subprocess.CompletedProcess:
    """``run_cli`` without a new interpreter: the command's ``main`` runs in this process, and its
    exit status and output are what the console script would give (a ``SystemExit`` message is
    printed to stderr with status 1, an uncaught exception as a traceback with status 1). The
    output is returned when ``capfd`` captures it. Hydra's global state, the environment, the
    working directory and the logging handlers a run installs are restored afterwards."""
    main, argv = _console_script(args)
    if capfd is not None:
        capfd.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "argv", argv)
        patch.setenv("WANDB_MODE", "disabled")
        patch.delenv("HYDRA_FULL_ERROR", raising=False)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        GlobalHydra.instance().clear()
        try:
            status = main()
            returncode = status if isinstance(status, int) else 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                returncode = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                returncode = 1
        except Exception:
            traceback.print_exc()
            returncode = 1
        finally:
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)
                    handler.close()
            for handler in handlers:
                if handler not in root.handlers:
                    root.addHandler(handler)
            root.setLevel(level)
    out, err = capfd.readouterr() if capfd is not None else ("", "")
    return subprocess.CompletedProcess(argv, returncode, out, err)


@pytest.fixture
def run_in_process(capfd: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """``run_in_process(args, cwd, env=None)``: ``run_console_script`` with this test's capture."""

    def run(
        args: Sequence[str | Path], cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return run_console_script(args, cwd, env, capfd)

    return run


#: The studies' folder: benchmark scripts the tests run with ``run_script``.
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def run_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``run_script(path, *args) -> (exit status, stdout, stderr)`` of ``experiments/<path>``,
    run as ``__main__`` in this process (``runpy``: no new interpreter and its seconds of
    imports), a ``SystemExit`` giving the status and message the interpreter would; the search
    path, the modules the script imported from experiments/ and torch's thread count are
    restored afterwards."""

    def run(script: str, *args: str) -> tuple[int, str, str]:
        path = EXPERIMENTS / script
        monkeypatch.setattr(sys, "argv", [str(path), *args])
        monkeypatch.setattr(sys, "path", list(sys.path))
        modules, threads = set(sys.modules), torch.get_num_threads()
        status = 0
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                status = exit_.code or 0
            else:  # a message, which the interpreter would print to stderr
                print(exit_.code, file=sys.stderr)
                status = 1
        finally:
            torch.set_num_threads(threads)
            for name in set(sys.modules) - modules:
                if (getattr(sys.modules[name], "__file__", None) or "").startswith(
                    str(EXPERIMENTS)
                ):
                    del sys.modules[name]
        out, err = capsys.readouterr()
        return status, out, err

    return run


@dataclass(frozen=True)
class TinyRun:
    """A finished ``sslkit-train`` run: its folder and what the command printed."""

    dir: Path
    stdout: str

    def copy(self, destination: Path) -> Path:
        """A copy of the run folder (file times kept), for a test that changes or adds files."""
        return Path(shutil.copytree(self.dir, destination))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """One tiny SimCLR run through the console script, shared by the tests that read its files
    (results.json with both baselines, epoch001.ckpt and last.ckpt, the CSV log, .hydra/).
    Tests that write into a run folder work on a ``copy``."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    done = run_cli(
        [BIN / "sslkit-train", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return TinyRun(run_dir, done.stdout)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2x2 local multirun (temperature x learning rate) of tiny runs, shared by tests (in this
    process: Hydra's basic launcher runs the jobs one after another in the sweep's process)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "multirun"
    done = run_console_script(
        [
            BIN / "sslkit-train",
            "-m",
            *TINY,
            "baselines=[]",
            "method.temperature=0.1,0.5",
            "optim.lr=0.1,0.3",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=sweep_dir.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir


def _in_process_group(
    rank: int, port: int, world_size: int, out_dir: str, worker: Callable[[int, Path], None]
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        worker(rank, Path(out_dir))
    finally:
        dist.destroy_process_group()


def spawn_ranks(
    worker: Callable[[int, Path], None], world_size: int, out_dir: Path, timeout_s: float
) -> None:
    """Run ``worker(rank, out_dir)`` in ``world_size`` fresh processes joined in one gloo process
    group; fail the test if they do not end within ``timeout_s``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(
        _in_process_group,
        args=(port, world_size, str(out_dir), worker),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers did not finish within {timeout_s} s")


#: The suite's two-process workers (``two_process_worker``), run one after another in one process
#: group: starting two interpreters costs about 12 s of CPU in imports alone, once per group.
TWO_PROCESS_WORKERS: dict[str, Callable[[int, Path], None]] = {}
#: How long the shared group may take, all its workers together.
TWO_PROCESS_TIMEOUT_S = 600


def two_process_worker(worker: Callable[[int, Path], None]) -> Callable[[int, Path], None]:
    """Register ``worker(rank, out_dir)`` (a function at a test module's top level) to run in the
    suite's shared two-process gloo group; a test reads what it wrote from
    ``two_process_dir(two_process_runs, worker)``."""
    TWO_PROCESS_WORKERS[f"{worker.__module__}.{worker.__qualname__}"] = worker
    return worker


def two_process_dir(runs: Path, worker: Callable[[int, Path], None]) -> Path:
    """The folder ``worker`` wrote its files to in the shared group's run ``runs``."""
    return runs / f"{worker.__module__}.{worker.__qualname__}"


def _run_workers(rank: int, out_dir: Path, workers: Sequence[Callable[[int, Path], None]]) -> None:
    for worker in workers:
        directory = two_process_dir(out_dir, worker)
        directory.mkdir(exist_ok=True)
        try:
            worker(rank, directory)
        except Exception as error:
            raise RuntimeError(
                f"two-process worker {directory.name} failed on rank {rank}"
            ) from error


@pytest.fixture(scope="session")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one run of every registered two-process worker, in one process group."""
    out_dir = tmp_path_factory.mktemp("two_processes")
    workers = [TWO_PROCESS_WORKERS[key] for key in sorted(TWO_PROCESS_WORKERS)]
    run = functools.partial(_run_workers, workers=workers)
    spawn_ranks(run, 2, out_dir, TWO_PROCESS_TIMEOUT_S)
    return out_dir


# ----------------------------------------------------------------------------- test tiers
#
# `make test-fast` runs the unit and contract tests: everything not marked `integration`. A test
# is marked when it, a fixture it uses or a helper of its module reaches one of the entry points
# below (a pretraining, an evaluation, a Lightning fit, another process); a test that is slow for
# another reason carries an explicit @pytest.mark.integration.

INTEGRATION = "integration"


def _integration_entry_points() -> set[object]:
    import nbclient
    import pytorch_lightning as pl

    from sslkit.evaluate import evaluate
    from sslkit.train import train

    return {
        train,
        evaluate,
        pl.Trainer,
        run_cli,
        run_console_script,
        spawn_ranks,
        subprocess.run,
        subprocess.Popen,
        nbclient.NotebookClient,
        mp.start_processes,
    }


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code of the functions, lambdas and comprehensions defined inside it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _reaches(function: object, entry_points: set[object], seen: set[int]) -> bool:
    """Whether ``function`` calls an entry point, itself or through functions of a tests module."""
    function = inspect.unwrap(getattr(function, "__func__", function))
    code = getattr(function, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    namespace = getattr(function, "__globals__", {})
    names = {name for c in _code_objects(code) for name in c.co_names}
    for name in names:
        value = namespace.get(name)
        if value is None:
            continue
        if any(value is entry for entry in entry_points):
            return True
        if isinstance(value, types.ModuleType):
            # e.g. subprocess.run, pl.Trainer: an attribute of the module named in the body
            if any(getattr(value, attr, None) is entry for attr in names for entry in entry_points):
                return True
        elif (
            inspect.isfunction(value)
            and value.__module__.startswith("tests.")
            and _reaches(value, entry_points, seen)
        ):
            return True
    return False


# First: xdist's worker reads the xdist_group marks in its own hook of this name (its plugin is
# registered after this file, so without tryfirst it would run before the marks exist).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    entry_points = _integration_entry_points()
    verdicts: dict[int, bool] = {}  # by function id: a fixture or test shared by many items

    def reaches(function: object) -> bool:
        key = id(function)
        if key not in verdicts:
            verdicts[key] = _reaches(function, entry_points, set())
        return verdicts[key]

    for item in items:
        if item.get_closest_marker(INTEGRATION) or not isinstance(item, pytest.Function):
            continue
        fixtures = [
            definition.func
            for definitions in item._fixtureinfo.name2fixturedefs.values()
            for definition in definitions
            if getattr(definition.func, "__module__", "").startswith("tests.")
        ]
        if any(reaches(function) for function in (item.function, *fixtures)):
            item.add_marker(INTEGRATION)
    _group_module_fixtures(items)


# ------------------------------------------------------------------ two workers (pytest-xdist)
#
# `make test` and `make test-fast` run on two worker processes (`-n 2 --dist loadgroup`), each with one
# torch thread, so two tests share the 2 cores instead of one test's two threads idling in
# Python code. A module-scoped fixture (e.g. the losses of every method on a batch) would be
# computed by each worker that gets one of its tests, so its tests stay on one worker; so do all
# the tests of the shared two-process group (two_process_runs), which starts once.

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # also for the commands a test starts
    torch.set_num_threads(1)


def _group_module_fixtures(items: list[pytest.Item]) -> None:
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if "two_process_runs" in info.names_closure:  # the group starts once, on one worker
            item.add_marker(pytest.mark.xdist_group("two_process_runs"))
            continue
        scopes = {d.scope for defs in info.name2fixturedefs.values() for d in defs}
        if "module" in scopes or "class" in scopes:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
