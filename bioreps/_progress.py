"""Progress bars for long work (tqdm), switched off with ``BIOREPS_PROGRESS=0`` or ``progress=False``."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled"]


def progress_enabled(progress: bool | None = None) -> bool:
    """``progress`` wins when given; otherwise ``$BIOREPS_PROGRESS`` (default on)."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("BIOREPS_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def progress_bar(iterable=None, *, progress: bool | None = None, **kwargs):
    """A tqdm bar (``disable`` follows :func:`progress_enabled`); extra kwargs go to tqdm."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not progress_enabled(progress), **kwargs)
