"""The analysis notebooks are stored without outputs and run on tiny runs (nbclient).

The executions share one kernel (its first start and imports take most of a notebook's time):
before each, the kernel's namespace is reset (``%reset -f``) and the notebook's environment
variables and working directory are set, so a notebook sees no name another one defined."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

from sslkit.train import train
from tests.conftest import TINY

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: The environment variables the notebooks read.
SETTINGS = ("SSLKIT_RUNS", "SSLKIT_X", "SSLKIT_CKPT", "SSLKIT_INPAINT_CKPT")


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelManager]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    yield manager
    manager.shutdown_kernel(now=True)


def execute(
    name: str, cwd: Path, kernel: KernelManager, env: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """Run every cell of ``notebooks/<name>.ipynb`` (an error fails the test) in ``kernel``, with
    a fresh namespace, ``cwd`` as working directory and only ``env`` of the notebooks' settings;
    return its text and Markdown output and the number of images it showed."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    settings = {key: (env or {}).get(key) for key in SETTINGS}
    prepare = (
        "import os\n"
        f"os.chdir({str(cwd)!r})\n"
        f"for key, value in {settings!r}.items():\n"
        "    if value is None:\n"
        "        os.environ.pop(key, None)\n"
        "    else:\n"
        "        os.environ[key] = value\n"
        "get_ipython().run_line_magic('reset', '-f')"
    )
    cells = notebook.cells
    notebook.cells = [nbformat.v4.new_code_cell(prepare), *cells]
    client = NotebookClient(notebook, km=kernel, timeout=300, kernel_name="python3")
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    outputs = [output for cell in notebook.cells[1:] for output in cell.get("outputs", [])]
    text = "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in outputs
    )
    return text, sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("name", ["compare_runs", "embeddings", "inpainting"])
def test_notebook_is_stored_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_compare_runs_on_a_tiny_sweep(tiny_sweep: Path, tmp_path: Path, kernel) -> None:
    env = {"SSLKIT_RUNS": str(tiny_sweep), "SSLKIT_X": "method.temperature"}
    output, images = execute("compare_runs", tmp_path, kernel, env)
    assert "4 runs (0 failed), 4 distinct configs" in output
    assert "| method.temperature | optim.lr | seeds | knn/top1@5 | knn/top1@20 |" in output
    assert images == 4, "one plot per metric: kNN top-1 at k=5 and 20, linear top-1 and F1"


def test_inpainting_shows_the_reconstructions_of_a_tiny_checkpoint(
    hydra_run, tmp_path: Path, kernel
) -> None:
    preset = ["experiment=inpainting_convnet_synthetic", "baselines=[]"]
    train(hydra_run("train", [*TINY, *preset, "method.target=pixels"]))
    env = {"SSLKIT_INPAINT_CKPT": str(tmp_path / "checkpoints" / "last.ckpt")}
    output, images = execute("inpainting", tmp_path, kernel, env)
    assert "inpainting/masked_mse: " in output and "inpainting/psnr: " in output
    assert "reconstructions.png" in output and images == 1


def test_inpainting_skips_a_checkpoint_without_pixel_targets(
    hydra_run, tmp_path: Path, kernel
) -> None:
    train(hydra_run("train", [*TINY, "experiment=inpainting_convnet_synthetic", "baselines=[]"]))
    env = {"SSLKIT_INPAINT_CKPT": str(tmp_path / "checkpoints" / "last.ckpt")}
    output, images = execute("inpainting", tmp_path, kernel, env)
    assert "predicts hog targets, not pixels" in output and "Skipping." in output
    assert images == 0


def test_inpainting_skips_without_a_checkpoint(tmp_path: Path, kernel) -> None:
    output, _ = execute("inpainting", tmp_path, kernel)
    assert "No inpainting checkpoint given" in output and "Skipping." in output


def test_embeddings_of_a_tiny_checkpoint(tiny_sweep: Path, tmp_path: Path, kernel) -> None:
    env = {"SSLKIT_CKPT": str(tiny_sweep / "0" / "checkpoints" / "last.ckpt")}
    output, images = execute("embeddings", tmp_path, kernel, env)
    assert "SimCLR, student encoder, synthetic test: 64 images -> 16-d features" in output
    assert images == 2, "the 2-D map and the nearest-neighbour grid"


def test_inpainting_skips_a_method_without_reconstructions(
    tiny_sweep: Path, tmp_path: Path, kernel
) -> None:
    env = {"SSLKIT_INPAINT_CKPT": str(tiny_sweep / "0" / "checkpoints" / "last.ckpt")}
    output, images = execute("inpainting", tmp_path, kernel, env)
    assert images == 0
    assert "SimCLR does not inpaint" in output
