"""edgedistill: distill, prune, quantize and export models for phones and edge devices."""

__version__ = "0.1.0"
