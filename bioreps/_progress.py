"""Progress bars for long work (tqdm), switched off with ``BIOREPS_PROGRESS=0`` or ``progress=False``.

With bars off, long work still reports: one line on stderr at most every :data:`LINE_INTERVAL_S`
seconds, and one at the end if the work took that long (``readout: 12/20 epochs, 61.2 s
elapsed``), so short runs (tests, quick library calls) print nothing.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

__all__ = ["LINE_INTERVAL_S", "progress_bar", "progress_enabled"]

LINE_INTERVAL_S = 30.0


def progress_enabled(progress: bool | None = None) -> bool:
    """``progress`` wins when given; otherwise ``$BIOREPS_PROGRESS`` (default on)."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("BIOREPS_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def progress_bar(iterable=None, *, progress: bool | None = None, **kwargs):
    """A tqdm bar (``disable`` follows :func:`progress_enabled`); extra kwargs go to tqdm.

    With bars off, a :class:`_LineProgress` with the same methods (iteration, ``update``,
    ``set_postfix``, ``set_postfix_str``, ``close``, ``n``, ``with``) prints occasional lines instead.
    """
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    if progress_enabled(progress):
        return tqdm(iterable, disable=False, **kwargs)
    return _LineProgress(iterable, **kwargs)


class _LineProgress:
    """Counts like a tqdm bar and prints ``<desc>: n/total units, t s elapsed`` on stderr at most
    every ``interval`` seconds (``time.monotonic``) and, for work that lasted that long, at close
(unless the last line already gave the final count)."""

    disable = True

    def __init__(self, iterable=None, *, desc=None, total=None, unit="it", initial=0,
                 interval=None, **_tqdm_only):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.desc, self.total, self.unit, self.n = desc or "progress", total, unit, initial
        self.interval = LINE_INTERVAL_S if interval is None else float(interval)
        self.postfix = ""
        self.start_t = self.last_t = time.monotonic()
        self.last_n = None          # the count at the last line printed
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self):
        return self.total if self.total is not None else len(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last_t >= self.interval:
            self._emit(now)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in items.items())

    def set_postfix_str(self, s="", refresh=True):
        self.postfix = str(s)

    def set_description(self, desc=None, refresh=True):
        self.desc = desc or self.desc

    def refresh(self, *args, **kwargs):
        pass

    def close(self):
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if now - self.start_t >= self.interval and self.n != self.last_n:
            self._emit(now)

    def _emit(self, now):
        self.last_t, self.last_n = now, self.n
        unit = self.unit if self.unit in ("it", "B") or self.unit.endswith("s") else self.unit + "s"
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        line = f"{self.desc}: {count} {unit}, {now - self.start_t:.1f} s elapsed"
        if self.postfix:
            line += f" ({self.postfix})"
        print(line, file=sys.stderr, flush=True)
