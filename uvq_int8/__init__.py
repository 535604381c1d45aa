"""uvq-int8: quantized TFLite backends for UVQ 1.5, chosen by configuration.

The public API is small: ``score`` (a video -> upstream's result dict),
``get_backend``/``discover`` (the registry) and ``resolve`` (configuration).
Heavy modules load on first use; importing this package never imports torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["score", "get_backend", "discover", "resolve", "__version__"]


def score(path, backend: str | None = None, fps: Any = 1, **kwargs: Any) -> dict:
    """Score a video; same dict as ``uvq VIDEO --output_all_stats``. ``fps``: frames per
    second to sample, whole or not (1, 0.5, "1/4", ``Fraction(1, 3)``), or -1 for every
    frame."""
    from uvq_int8.runtime.scoring import score as _score

    return _score(path, backend=backend, fps=fps, **kwargs)


def get_backend(spec: str):
    from uvq_int8.backends import get_backend as _get

    return _get(spec)


def discover():
    from uvq_int8.backends import discover as _discover

    return _discover()


def resolve(**flags: Any):
    from uvq_int8.config import resolve as _resolve

    return _resolve(**flags)
