"""probscale-edge: probe, select, prune, recover, convert and run small language models on the edge.

Importing this package is lean: it imports neither torch nor transformers. Stages import their
heavy dependencies when they are called.
"""

__version__ = "0.1.0"

from probscale_edge.errors import BundleError, ProbscaleError  # noqa: E402

__all__ = ["__version__", "ProbscaleError", "BundleError", "build"]


def build(*args, **kwargs):
    """Run the whole pipeline. See :func:`probscale_edge.pipeline.build`."""
    from probscale_edge.pipeline import build as _build

    return _build(*args, **kwargs)
