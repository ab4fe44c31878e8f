"""Nothing lost: how every command treats what is already on disk where it writes.

One rule for every command with an output (train-rm, ppo, pipeline, demo, robot train and
study, eval-rm, convert):

1. An output folder that holds an earlier run is refused (``check_output_folder``, a
   ``ConfigError`` naming the flag) unless the user passes ``--overwrite true`` or resumes
   that run; an existing output file likewise (``check_output_file``). The check runs with
   the other input checks, before anything is loaded or written.
2. With ``--overwrite true`` the earlier run is deleted whole (``start_output_folder``),
   but only once the new run has checked its inputs: a run refused for a bad input
   leaves the earlier one exactly as it was.
3. Files are written under a temporary name and renamed into place (``atomic_path``), so
   a run that fails half-way leaves either the old file or the new one, never a part.
4. A resumed run cuts its step log back to the checkpoint's step (``cut_log``), so the
   steps it runs again are in the log once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from rlhf.config import ConfigError


def _check_writable(path: Path, flag: str) -> None:
    """Refuse a path whose nearest existing folder cannot be written into (read-only
    folder, /sys, ...): found now rather than after training. The probe file is removed."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists():
        folder = folder.parent
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".rlhf-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(flag, f"cannot write into {folder} ({err.strerror}); expected a writable folder") from None


def check_output_folder(path: str | Path, flag: str, overwrite: bool = False, resume: bool = False,
                        resume_flag: str | None = None) -> None:
    """Refuse an output folder the run would spoil: a file in its place, an earlier run
    (a non-empty folder) without ``overwrite`` or ``resume``, or a folder that cannot be
    written. ``resume_flag`` is the command's way to continue a run (named in the message).
    Writes nothing."""
    path = Path(path)
    if overwrite and resume:
        raise ConfigError("--overwrite", f"expected either --overwrite true or {resume_flag or 'a resume'}, not both")
    if path.exists() and not path.is_dir():
        raise ConfigError(flag, f"{path} is a file; expected a folder")
    if path.is_dir() and any(path.iterdir()) and not (overwrite or resume):
        ways = "pass --overwrite true to replace it" + (f", or {resume_flag} to continue it" if resume_flag else "")
        raise ConfigError(flag, f"{path} holds an earlier run; expected a new or empty folder ({ways})")
    _check_writable(path, flag)


def check_output_file(path: str | Path, flag: str, overwrite: bool = False) -> None:
    """Refuse an output file path that is a folder, an existing file without ``overwrite``
    (the command's own input included), or a place that cannot be written. Writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(flag, f"{path} is a folder; expected a file path")
    if path.exists() and not overwrite:
        raise ConfigError(flag, f"{path} already exists; expected a new file (pass --overwrite true to replace it)")
    _check_writable(path, flag)


def start_output_folder(path: str | Path, overwrite: bool = False) -> Path:
    """Make the output folder, deleting an earlier run first when ``overwrite`` (call it
    once the inputs are checked: a refused run must leave the earlier one as it was)."""
    path = Path(path)
    if overwrite and path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name next to ``path`` to write a file (or folder) to: renamed onto
    ``path`` when the block succeeds, deleted when it fails, so ``path`` is never half
    written and no temporary file is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():  # os.replace cannot replace a non-empty folder
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def cut_log(path: str | Path, last_step: int) -> None:
    """Keep the rows of a JSONL step log with ``"step" <= last_step``: a run resumed from
    the checkpoint of step ``last_step`` logs the later steps again, each once."""
    path = Path(path)
    if not path.exists():
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= last_step]
    write_text(path, "".join(line + "\n" for line in rows))
