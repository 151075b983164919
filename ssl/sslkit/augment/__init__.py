"""View pipelines: a factory per recipe, called with the dataset's size and statistics (images,
and volumes in :mod:`sslkit.augment.volumes`); and masks that methods draw on device."""

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
    multicrop_views,
    no_views,
    simclr_views,
)
from sslkit.augment.volumes import (
    VolumeViews,
    VolumeViewSpec,
    byol_volume_views,
    simclr_volume_views,
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
    "VolumeViewSpec",
    "VolumeViews",
    "byol_views",
    "byol_volume_views",
    "clip_views",
    "eval_transform",
    "image_mode",
    "multicrop_views",
    "no_views",
    "simclr_views",
    "simclr_volume_views",
]
