"""Files the package writes: temporary names, atomic replacement, stale temporaries, a write
probe and the lock of an output folder. One home for these chores.

Temporary files
---------------
A file is written to ``.{name}.tmp-{host}-{pid}-{token}{suffix}`` beside its target (:func:`temp_path`)
and renamed into place by :func:`commit` (fsync the file, ``os.replace``, fsync the folder). Every
writer of the package goes through here: :func:`atomic_path` (a context manager for any writer that
takes a file name: torch checkpoints, IDX files, figures through :func:`bioreps.plots.save_figure`),
:func:`write_text_atomic`, :func:`write_json_atomic`; :class:`bioreps.io.Writer` and the dataset
downloads (``.part``) use :func:`temp_path` and :func:`commit`. A process killed with SIGKILL leaves
its temporary behind; :func:`remove_stale_temps` deletes those of a given target whose writer is
gone: the host in the name is this host and no process with that pid exists (:func:`atomic_path`
calls it for its target). Temporaries of another host, of a live pid (possibly reused) or in an
unknown naming are left alone, so an in-use file is never removed.

A writer that is itself atomic (:class:`bioreps.io.Writer`) may be handed a temporary name, as
the experiment runner and the study units do (export into the temporary of ``model.h5``, add the
readout, commit). :func:`temp_path` of a temporary of this process is then named for the final
target (``.model.h5.tmp-...``), not nested (``..model.h5.tmp-....h5.tmp-...``), so a process
killed meanwhile leaves a temporary that the next writer of the target recognises. Nested names
left by older versions are recognised too: stale when every writer named in them is gone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the lock is a no-op
    fcntl = None

__all__ = ["FolderLockedError", "FolderLock", "atomic_path", "check_writable", "commit", "fsync",
           "remove_stale_temps", "temp_path", "temp_target", "write_json_atomic", "write_text_atomic"]

_TEMP_RE = re.compile(r"\.tmp-(?P<host>[^-/]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)(?:\.[A-Za-z0-9]+)?")
# a temporary name: "." + the name it stands for + _TEMP_RE (greedy: the outermost level of a nest)
_NESTED_RE = re.compile(r"\.(?P<inner>.+)" + _TEMP_RE.pattern)
LOCK_NAME = ".bioreps.lock"


def _host() -> str:
    """This host's name with every character but letters, digits, ``.`` and ``_`` replaced by
    ``_`` (no ``-``, so the temporary names parse unambiguously)."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname() or "localhost")


def _temp_levels(name: str) -> list[tuple[str, str, int]]:
    """``[(target, host, pid), ...]`` of a temporary name, outermost level first: one level for
    ``.{target}.tmp-{host}-{pid}-{token}{suffix}``, more for a temporary of a temporary; ``[]``
    for any other name."""
    levels = []
    while (m := _NESTED_RE.fullmatch(name)) is not None:
        levels.append((m["inner"], m["host"], int(m["pid"])))
        name = m["inner"]
    return levels


def temp_target(name: str) -> str | None:
    """The final target a temporary file name (possibly nested) stands for; None if ``name`` is
    not a temporary name."""
    levels = _temp_levels(name)
    return levels[-1][0] if levels else None


def temp_path(path, suffix: str = "") -> Path:
    """A fresh temporary name beside ``path``: ``.{name}.tmp-{host}-{pid}-{token}{suffix}``.

    When ``path`` is itself a temporary of this process (an atomic writer handed the temporary
    of another), the name is that of the final target, not a temporary of a temporary."""
    path = Path(path)
    name, host, pid = path.name, _host(), os.getpid()
    levels = _temp_levels(name)
    if levels and all(h == host and p == pid for _, h, p in levels):
        name = levels[-1][0]
    return path.with_name(f".{name}.tmp-{host}-{pid}-{secrets.token_hex(4)}{suffix}")


def fsync(path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory`` a folder's entries) to the disk."""
    flags = os.O_RDONLY if directory else os.O_RDWR | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp, path, *, overwrite: bool = True) -> Path:
    """Move the finished temporary file ``tmp`` to ``path``: fsync it, rename it into place
    (``os.replace``, atomic within a folder), then fsync the folder where the platform can.

    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` and ``tmp`` stays
    (the caller deletes it)."""
    tmp, path = Path(tmp), Path(path)
    fsync(tmp)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} appeared while writing; not replacing it (overwrite=False)")
    os.replace(tmp, path)
    try:   # make the rename durable too; not every platform can fsync a folder
        fsync(path.parent, directory=True)
    except OSError:
        pass
    return path


@contextmanager
def atomic_path(path, suffix: str = "", *, overwrite: bool = True):
    """Yield a temporary name beside ``path`` to write to; on a normal exit :func:`commit` it to
    ``path``, on any exception delete it and leave an existing ``path`` untouched.

    ``suffix`` ends the temporary name (e.g. ``".png"``, for writers that choose the format by
    the extension). Stale temporaries of ``path`` left by killed processes are removed first
    (:func:`remove_stale_temps`)::

        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    remove_stale_temps(path.parent, [path.name])
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        commit(tmp, path, overwrite=overwrite)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file renamed into place."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return path


def write_json_atomic(path, payload, *, indent: int = 2) -> Path:
    """Write ``payload`` as JSON (``indent``, a final newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=indent) + "\n")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temps(folder, names) -> list[Path]:
    """Delete the stale temporary files of targets ``names`` in ``folder``; return them.

    Stale: named by :func:`temp_path` for one of ``names`` (directly, or a temporary of such a
    temporary), on this host, by pids that no longer exist (every pid a nested name holds).
    Anything else is kept.
    """
    folder = Path(folder)
    host = _host()
    names = set(names)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        levels = _temp_levels(entry.name)
        if not any(target in names for target, _, _ in levels):
            continue
        if any(h != host or _pid_alive(p) for _, h, p in levels):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            pass
    return removed


def check_writable(folder) -> None:
    """Create and remove a file in ``folder``; raise ``PermissionError`` with one line saying why
    not (works for root on a read-only file system, where permission bits say nothing)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".bioreps-write-probe-")
    except OSError as exc:
        raise PermissionError(f"cannot write in the folder {folder}: "
                              f"{exc.strerror or exc}") from None
    os.close(fd)
    os.remove(name)


class FolderLockedError(RuntimeError):
    """Another run holds the lock of an output folder."""


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.bioreps.lock`` for one run.

    The file holds JSON about the holder (pid, host, start time, config). A second
    :meth:`acquire` while it is held raises :class:`FolderLockedError` naming the holder. The
    lock is released (and the file removed) by :meth:`release`, or by the system when the
    process dies, so a crashed run never blocks the next one.
    """

    def __init__(self, folder, **info):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.info = info
        self._fd = None

    def acquire(self) -> FolderLock:
        if fcntl is None:  # pragma: no cover
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder(fd)
                os.close(fd)
                raise FolderLockedError(
                    f"the output folder {self.folder} is in use by another bioreps run ({holder}); "
                    f"wait for it to finish or choose another output folder") from None
            except BaseException:
                os.close(fd)
                raise
            # the previous holder may have removed the file between our open and flock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **self.info}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        self._fd = fd
        return self

    @staticmethod
    def _read_holder(fd) -> str:
        try:
            info = json.loads(os.pread(fd, 1 << 16, 0).decode())
            parts = [f"pid {info['pid']} on {info.get('host', '?')}", f"started {info.get('started', '?')}"]
            if info.get("config"):
                parts.append(f"config {info['config']}")
            return ", ".join(parts)
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown: it is starting up"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding the lock (see acquire)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
