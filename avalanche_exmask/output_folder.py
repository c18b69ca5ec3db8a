"""The output folder of a run: checked before work is spent, and cleared of stale temporary files.

A run writes its results file and its checkpoint through temporary files in the same folder,
renamed into place (:func:`avalanche_exmask.experiment_results.save_results`,
:func:`avalanche_exmask.checkpoint.save_checkpoint`). :func:`check_output_folder` makes sure,
before the first experience trains, that the folder can be created, written to and has room;
:func:`remove_stale_temporaries` removes the temporary files a killed run left behind (called
by the run that holds the run's lock, so no live writer owns them).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["OutputFolderError", "RESULTS_RESERVE_NBYTES", "check_output_folder", "remove_stale_temporaries"]

#: Free space a results file needs, in bytes (results files are tens of kilobytes).
RESULTS_RESERVE_NBYTES = 4 * 2**20


class OutputFolderError(OSError):
    """An output folder that cannot be created or written, or lacks space; the message names it."""


def check_output_folder(folder: str | os.PathLike, need_nbytes: int = RESULTS_RESERVE_NBYTES) -> Path:
    """Create ``folder`` (with its parents) if missing, write and remove a probe file in it, and
    check that it has ``need_nbytes`` bytes free.

    :return: the folder.
    :raises OutputFolderError: naming the folder (and the bytes needed and free).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe.", suffix=".tmp") as probe:
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise OutputFolderError(f"{folder}: output folder is not writable ({error.strerror or error})") from None
    free = shutil.disk_usage(folder).free
    if free < need_nbytes:
        raise OutputFolderError(f"{folder}: output folder has {free} bytes free; the run needs {need_nbytes}")
    return folder


def remove_stale_temporaries(results: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> list[Path]:
    """Remove the temporary files an interrupted run left beside its results file
    (``<results>.tmp``) and checkpoint (``.<checkpoint name>.<random>.tmp``).

    Call it only while holding the run's lock (:class:`~avalanche_exmask.run_lock.RunLock`).

    :return: the files removed.
    """
    results = Path(results)
    candidates = [results.with_name(results.name + ".tmp")]
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        candidates += sorted(checkpoint.parent.glob(f".{checkpoint.name}.*.tmp"))
    removed = []
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed
