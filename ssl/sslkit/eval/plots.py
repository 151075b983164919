"""Plots of a run, for the people who would rather look than read ``results.json``.

- ``curves.png``: training loss and the monitors (online probe, kNN monitor) per epoch.
- ``confusion_linear.png``: confusion matrix of the linear probe on the test split
  (single-label data; row-normalised, so the diagonal is the per-class recall).
- ``embedding_tsne.png`` (or ``embedding_umap.png`` when ``umap-learn`` is installed): a 2-D
  map of test features coloured by class (by the first label for multi-label data),
  on a seeded subsample so it stays cheap on large test sets.
- ``retrieval.png``: test queries with their nearest training images by cosine similarity
  (green frame: the neighbour shares the query's class).

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: no display and
no global pyplot state, so plotting is safe inside training jobs and threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torch import Tensor

from sslkit.eval.knn import WeightedKNN
from sslkit.eval.metrics import confusion_matrix

History = Mapping[str, Sequence[Sequence[float]]]


def plot_curves(history: History, path: Path) -> Path | None:
    """Loss curves (left) and monitor curves (right) against the epoch; None without data.

    Learning rates (``lr-*``, from Lightning's LearningRateMonitor) are left out.
    """
    curves = {k: v for k, v in history.items() if v and not k.startswith("lr-")}
    losses = {k: v for k, v in curves.items() if "loss" in k}
    monitors = {k: v for k, v in curves.items() if "loss" not in k}
    panels = [
        (title, series) for title, series in (("loss", losses), ("monitors", monitors)) if series
    ]
    if not panels:
        return None
    figure = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for ax, (title, series) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for name, points in sorted(series.items()):
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o" if len(points) < 30 else None, label=name)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(figure, path)


def plot_confusion_matrix(
    scores: Tensor, targets: Tensor, class_names: Sequence[str], path: Path, title: str
) -> Path:
    """Row-normalised confusion matrix of argmax predictions, counts written when readable."""
    num_classes = len(class_names)
    counts = confusion_matrix(scores.argmax(dim=1), targets, num_classes)
    rates = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(14.0, 2.5 + 0.45 * num_classes)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label="fraction of the true class")
    if num_classes <= 30:
        ticks = range(num_classes)
        ax.set_xticks(ticks, class_names, rotation=90, fontsize="small")
        ax.set_yticks(ticks, class_names, fontsize="small")
    if num_classes <= 15:
        for (row, column), count in np.ndenumerate(counts.numpy()):
            colour = "white" if rates[row, column] > 0.5 else "black"
            ax.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(figure, path)


_EXACT_TSNE_POINTS = 200


def embed_2d(features: Tensor, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D map of ``features``: UMAP when ``umap-learn`` is installed, else t-SNE."""
    data = torch.nn.functional.normalize(features.float(), dim=1).numpy()
    try:
        import umap
    except ImportError:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(data) - 1) / 3)))
        # Exact gradients are cheaper than Barnes-Hut's per-iteration overhead on few points.
        method = "exact" if len(data) <= _EXACT_TSNE_POINTS else "barnes_hut"
        tsne = TSNE(
            n_components=2, perplexity=perplexity, init="pca", method=method, random_state=seed
        )
        return tsne.fit_transform(data), "tsne"
    neighbours = min(15, len(data) - 1)
    return umap.UMAP(n_neighbors=neighbours, random_state=seed).fit_transform(data), "umap"


def plot_embedding(
    features: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    directory: Path,
    *,
    max_points: int,
    seed: int = 0,
) -> Path:
    """2-D map of at most ``max_points`` features (seeded subsample), coloured by class."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(features), generator=generator)[:max_points].sort().values
    points, method = embed_2d(features[chosen], seed=seed)
    colour = _first_label(labels[chosen]).numpy()
    figure = Figure(figsize=(7.5, 6), layout="constrained")
    ax = figure.subplots()
    palette = "tab10" if len(class_names) <= 10 else "tab20"
    for index, name in enumerate(class_names):
        members = colour == index
        if members.any():
            ax.scatter(
                *points[members].T, s=6, color=_colour(palette, index), label=name, alpha=0.8
            )
    ax.set(title=f"test embeddings ({method}, {len(chosen)} points)", xticks=[], yticks=[])
    if len(class_names) <= 20:
        ax.legend(fontsize="small", markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(figure, directory / f"embedding_{method}.png")


def plot_retrieval(
    knn: WeightedKNN,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    train_image: Callable[[int], Image.Image],
    test_image: Callable[[int], Image.Image],
    path: Path,
    num_queries: int = 8,
    k: int = 6,
    seed: int = 0,
) -> Path:
    """Seeded test queries (rows) next to their ``k`` most cosine-similar training images.

    ``knn`` is the kNN protocol's index of the training features; ``train_image(i)`` /
    ``test_image(i)`` return the image of the i-th feature row. A green frame marks a
    neighbour of the query's class (sharing a label, for multi-hot labels).
    """
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randperm(len(test_features), generator=generator)[:num_queries]
    similarities, neighbours = knn.neighbours(test_features[queries], k=k)
    query_labels = test_labels[queries].to(knn.train_labels.dtype).unsqueeze(1)
    neighbour_labels = knn.train_labels[neighbours]
    if knn.multilabel:
        same_class = ((query_labels > 0) & (neighbour_labels > 0)).any(dim=2)
    else:
        same_class = neighbour_labels == query_labels
    rows = []
    for row, query in enumerate(queries.tolist()):
        tiles = [_tile(test_image(query), _FRAMES["query"])]
        for column, neighbour in enumerate(neighbours[row].tolist()):
            frame = _FRAMES["same" if same_class[row, column] else "other"]
            tiles.append(_tile(train_image(neighbour), frame))
        rows.append(np.concatenate(tiles, axis=1))
    mosaic = np.concatenate(rows, axis=0)
    columns = 1 + neighbours.shape[1]
    figure = Figure(figsize=(1.0 * columns + 0.4, 1.0 * len(queries) + 0.6))
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.88))
    ax.imshow(mosaic)
    ax.set_axis_off()
    for row in range(len(queries)):
        for column in range(neighbours.shape[1]):
            ax.text(
                (column + 1.5) * _TILE,
                (row + 1) * _TILE - 4,
                f"{similarities[row, column]:.2f}",
                ha="center",
                va="bottom",
                fontsize=6,
                color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
            )
    figure.suptitle(
        "test queries (black) and nearest training images\n(green: same class)", fontsize=9
    )
    return _save(figure, path)


_TILE = 64
_FRAMES = {"query": (0, 0, 0), "same": (44, 160, 44), "other": (214, 39, 40)}


def _tile(image: Image.Image, frame: tuple[int, int, int], border: int = 3) -> np.ndarray:
    """``image`` as RGB, resized into a ``_TILE`` square with a coloured frame."""
    inner = _TILE - 2 * border
    tile = np.empty((_TILE, _TILE, 3), dtype=np.uint8)
    tile[:] = frame
    smaller = min(image.size) < inner
    resample = Image.Resampling.NEAREST if smaller else Image.Resampling.BILINEAR
    resized = image.convert("RGB").resize((inner, inner), resample)
    tile[border:-border, border:-border] = np.asarray(resized)
    return tile


def write_plots(
    directory: Path,
    *,
    features: Any,
    scores: Mapping[str, Tensor],
    datamodule: Any,
    history: History | None = None,
    knn: WeightedKNN | None = None,
    max_points: int,
    seed: int = 0,
) -> dict[str, Path]:
    """Every plot that the inputs allow, as PNGs in ``directory``; logged to W&B if used.

    ``features`` is a :class:`~sslkit.eval.cache.SplitFeatures` of the evaluated encoder and
    ``scores`` the test scores of the protocols (``ProtocolResult.scores``); ``knn`` is the
    kNN protocol's index (``ProtocolResult.knn_index``), built here when it did not run. Returns
    ``{plot name: path}``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    class_names = list(datamodule.class_names)
    written: dict[str, Path | None] = {}
    if history:
        written["curves"] = plot_curves(history, directory / "curves.png")
    if "linear" in scores and not datamodule.multilabel:
        written["confusion_linear"] = plot_confusion_matrix(
            scores["linear"],
            features.test_labels,
            class_names,
            directory / "confusion_linear.png",
            title="linear probe, test split",
        )
    if len(features.test_features) >= 5:
        written["embedding"] = plot_embedding(
            features.test_features,
            features.test_labels,
            class_names,
            directory,
            max_points=max_points,
            seed=seed,
        )
    if knn is None:  # the kNN protocol did not run
        knn = WeightedKNN(
            features.train_features, features.train_labels, num_classes=datamodule.num_classes
        )
    written["retrieval"] = plot_retrieval(
        knn,
        features.test_features,
        features.test_labels,
        train_image=_image_getter(datamodule, "train"),
        test_image=_image_getter(datamodule, "test"),
        path=directory / "retrieval.png",
        seed=seed,
    )
    paths = {name: path for name, path in written.items() if path is not None}
    return paths


@torch.no_grad()
def plot_attention(encoder: Any, datamodule: Any, path: Path, *, count: int = 6) -> Path | None:
    """The last block's class-token attention of a ViT encoder (an object with
    ``attention_maps``, see :meth:`sslkit.models.vit.ViT.attention_maps`) on the first
    ``count`` test images: one row per image, the image then the mean over heads and each head,
    upsampled to the image. None when the encoder has no attention maps."""
    if not hasattr(encoder, "attention_maps"):
        return None
    images, _ = next(iter(datamodule.eval_dataloader("test")))
    images = images[:count]
    device = next(encoder.parameters()).device
    maps = encoder.attention_maps(images.to(device)).float().cpu()
    maps = torch.cat([maps.mean(dim=1, keepdim=True), maps], dim=1)
    maps = torch.nn.functional.interpolate(maps, size=images.shape[-2:], mode="nearest")
    heads = maps.shape[1] - 1
    get_image = _image_getter(datamodule, "test")
    figure = Figure(figsize=(1.4 * (heads + 2), 1.4 * len(images)))
    axes = figure.subplots(len(images), heads + 2, squeeze=False)
    for row in range(len(images)):
        axes[row, 0].imshow(get_image(row), cmap="gray")
        for column in range(heads + 1):
            axes[row, column + 1].imshow(maps[row, column].numpy(), cmap="inferno")
        for axis in axes[row]:
            axis.set_axis_off()
    axes[0, 1].set_title("mean", fontsize=8)
    for head in range(heads):
        axes[0, head + 2].set_title(f"head {head}", fontsize=8)
    figure.suptitle("last block: attention of the class token to the patches", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def _image_getter(datamodule: Any, split: str) -> Callable[[int], Image.Image]:
    """Image of the i-th item of ``eval_dataloader(split)``, i.e. of the i-th feature row."""
    dataset = datamodule.dataset(split)
    indices = datamodule.labelled_indices(split)
    return lambda index: preview_image(dataset[int(indices[index])][0])


def preview_image(sample: Image.Image | Tensor) -> Image.Image:
    """A picture of one item: an image as it is; a uint8 volume or clip ``(C, D, H, W)`` as its
    middle slice (frame) along D. One or three channels are shown as they are, others by
    their first channel."""
    if isinstance(sample, Image.Image):
        return sample
    while sample.ndim > 3:
        sample = sample.select(1, sample.shape[1] // 2)
    pixels = sample.to(torch.uint8).cpu()
    if pixels.shape[0] == 3:
        return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())
    return Image.fromarray(pixels[0].contiguous().numpy())


def _first_label(labels: Tensor) -> Tensor:
    """Class ids as they are; for multi-hot rows the first present label (0 for none)."""
    return labels.long().argmax(dim=1) if labels.ndim == 2 else labels.long()


def _colour(palette: str, index: int) -> Any:
    from matplotlib import colormaps

    colours = colormaps[palette]
    return colours(index % colours.N)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path
