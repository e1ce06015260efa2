"""edgedistill: distill, prune, quantize and export models for phones and edge devices."""

from edgedistill.version import __version__


def compress(*args, **kwargs) -> dict:
    """edgedistill.api.compress: the whole pipeline from Python (imported on first use: `import edgedistill`
    stays light)."""
    from edgedistill.api import compress as run

    return run(*args, **kwargs)


__all__ = ["compress", "__version__"]
