"""Self-supervised losses: pure functions on embedding tensors.

Each loss states its formula in its docstring and knows nothing of Lightning, configs or
devices, so methods can share them and tests can check them against references.
"""

from sslkit.losses.byol import byol_loss
from sslkit.losses.info_nce import info_nce
from sslkit.losses.masked_mse import masked_mse

__all__ = ["byol_loss", "info_nce", "masked_mse"]
