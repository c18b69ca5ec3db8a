"""A per-run lock: one process at a time writes a run's results and checkpoint.

The lock of a run whose results go to ``<name>.json`` is the file ``<name>.json.lock`` beside it,
held with an exclusive ``flock`` for the life of the run and holding the holder's process id. The
kernel releases a ``flock`` when its holder dies (even by SIGKILL), so a killed run leaves no
stale lock: the next run takes it. A second process asking for a held lock is refused at once,
with the holder's pid. A released lock file is removed; a process that locked a file just removed
by its holder notices (the path no longer names the file it locked) and tries again.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["RunLockedError", "RunLock", "lock_path"]


class RunLockedError(RuntimeError):
    """The run's lock is held by another process; the message names the lock file and its pid."""


def lock_path(results: str | os.PathLike) -> Path:
    """The lock file of the run writing ``results``."""
    results = Path(results)
    return results.with_name(results.name + ".lock")


class RunLock:
    """Exclusive locks on the runs writing ``results`` files, taken all or none.

    Use as a context manager (or :meth:`acquire` / :meth:`release`)::

        with RunLock([out / "a.json", out / "b.json"]):
            ...  # write a.json, b.json and their checkpoints

    :param results: the runs' results files (their folders are created if missing).
    """

    def __init__(self, results: Iterable[str | os.PathLike]) -> None:
        self.paths = [lock_path(path) for path in results]
        self._held: list[tuple[Path, int]] = []

    def acquire(self) -> RunLock:
        """Take every lock, or none.

        :raises RunLockedError: naming the first lock held elsewhere and its holder's pid.
        :raises OSError: if a lock file cannot be created.
        """
        try:
            for path in self.paths:
                self._held.append((path, _lock(path)))
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Remove the lock files and release the locks (idempotent)."""
        while self._held:
            path, descriptor = self._held.pop()
            try:
                if _same_file(path, descriptor):
                    path.unlink()
            finally:
                os.close(descriptor)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _same_file(path: Path, descriptor: int) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _holder(descriptor: int) -> str | None:
    """The pid written in an open lock file, if any."""
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return text or None


def _lock(path: Path) -> int:
    """Open, ``flock`` and stamp ``path`` with this pid; the open descriptor.

    :raises RunLockedError: naming ``path`` and the holder's pid if another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise RunLockedError(
                f"{path}: another process (pid {holder or 'unknown'}) is writing this run; refused"
            ) from None
        if _same_file(path, descriptor):  # else its holder removed it between our open and flock
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return descriptor
