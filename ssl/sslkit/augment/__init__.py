"""View pipelines: a factory per recipe, called with the dataset's size and statistics."""

from sslkit.augment.views import (
    ConvertMode,
    ImageTransform,
    ViewFactory,
    ViewTransform,
    byol_views,
    eval_transform,
    image_mode,
    no_views,
    simclr_views,
)

__all__ = [
    "ConvertMode",
    "ImageTransform",
    "ViewFactory",
    "ViewTransform",
    "byol_views",
    "eval_transform",
    "image_mode",
    "no_views",
    "simclr_views",
]
