"""Evaluation of frozen encoders: feature extraction, weighted kNN, linear probe, metrics.

The protocols are fixed and named (see :mod:`sslkit.eval.protocol`) so that numbers from
different methods and runs are comparable; everything here works on cached feature tensors
and knows nothing of Hydra or Lightning.
"""

from sslkit.eval.features import extract_features
from sslkit.eval.knn import WeightedKNN, knn_predict
from sslkit.eval.linear import LinearProbe, fit_linear_probe
from sslkit.eval.metrics import classification_metrics, multilabel_metrics
from sslkit.eval.protocol import KNNProtocol, LinearProtocol, ProtocolResult, run_protocols

__all__ = [
    "KNNProtocol",
    "LinearProbe",
    "LinearProtocol",
    "ProtocolResult",
    "WeightedKNN",
    "classification_metrics",
    "extract_features",
    "fit_linear_probe",
    "knn_predict",
    "multilabel_metrics",
    "run_protocols",
]
