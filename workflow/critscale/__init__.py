"""critscale: critical inverse-temperature scaling of softmax attention."""

__version__ = "0.1.0"
