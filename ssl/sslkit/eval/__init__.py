"""Evaluation of frozen encoders: feature extraction, weighted kNN, linear probe, metrics.

The protocols are fixed and named (see :mod:`sslkit.eval.protocol`) so that numbers from
different methods and runs are comparable; everything exported here works on cached feature
tensors and knows nothing of Hydra or Lightning. Around them: :mod:`sslkit.eval.cache`
(features extracted once, kept next to a checkpoint), :mod:`sslkit.eval.monitor` (Lightning
callbacks: kNN monitor and metric history while pretraining), :mod:`sslkit.eval.plots` and
:mod:`sslkit.eval.inpainting` (reconstruction error and images of a model that inpaints). Every
measurement, image and index of a run is made here, for any encoder, with or without a method.
"""

from sslkit.data.subsets import holdout_split, label_fraction_subset
from sslkit.eval.features import extract_features
from sslkit.eval.knn import WeightedKNN, knn_predict
from sslkit.eval.linear import LinearProbe, fit_linear_probe, select_probe_settings
from sslkit.eval.metrics import classification_metrics, confusion_matrix, multilabel_metrics
from sslkit.eval.protocol import KNNProtocol, LinearProtocol, ProtocolResult, run_protocols
from sslkit.run.results import fraction_label

__all__ = [
    "KNNProtocol",
    "LinearProbe",
    "LinearProtocol",
    "ProtocolResult",
    "WeightedKNN",
    "classification_metrics",
    "confusion_matrix",
    "extract_features",
    "fit_linear_probe",
    "fraction_label",
    "holdout_split",
    "knn_predict",
    "label_fraction_subset",
    "multilabel_metrics",
    "run_protocols",
    "select_probe_settings",
]
