"""View pipelines: a factory per recipe, called with the dataset's size and statistics; and
masks that methods draw on device."""

from sslkit.augment.batched import ViewSpec
from sslkit.augment.clips import ClipViews, clip_views
from sslkit.augment.masking import MaskGenerator
from sslkit.augment.views import (
    BACKENDS,
    ConvertMode,
    ImageTransform,
    ViewFactory,
    Views,
    ViewTransform,
    byol_views,
    eval_transform,
    image_mode,
    no_views,
    simclr_views,
)

__all__ = [
    "BACKENDS",
    "ClipViews",
    "ConvertMode",
    "ImageTransform",
    "MaskGenerator",
    "ViewFactory",
    "ViewSpec",
    "ViewTransform",
    "Views",
    "byol_views",
    "clip_views",
    "eval_transform",
    "image_mode",
    "no_views",
    "simclr_views",
]
