"""Temporary folders named after the process that made them, and the sweep of those a dead process left.

A dataset zip is unpacked into a temporary folder (:mod:`core.formats.datasets`), and a transformers
model's weights are written to one while the library loads them (:mod:`core.formats.libraries`); both are
removed when their command ends, however it ends, except when the process is killed outright
(``kill -9``, out of memory), which runs no clean-up. Such a folder is named
``biasrepair-<kind>-<pid>-<random>`` in the system's temporary folder, so the next start of the CLI or a
worker (:func:`sweep_stale`) can tell it is an orphan: its process is gone and it is older than
:data:`STALE_AFTER_S` (the age guards against a process in another pid namespace sharing the folder,
whose pid means nothing here). Only folders of the current user are touched.

Versions before the pid was in the name called them ``biasrepair-dataset-<random>`` and ``biasrepair_hf_<random>``;
with no pid to ask, such a folder is taken for an orphan once it is :data:`OLD_STALE_AFTER_S` old (a day).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "biasrepair-"
STALE_AFTER_S = 3600.0
_NAME = re.compile(r"biasrepair-[a-z]+-(\d+)-[A-Za-z0-9_]+")
_OLD_NAME = re.compile(r"biasrepair-dataset-[A-Za-z0-9_]{8}|biasrepair_hf_[A-Za-z0-9_]{8}")  # tempfile's 8 characters
OLD_STALE_AFTER_S = 86400.0


def prefix(kind: str) -> str:
    """The ``prefix`` for :func:`tempfile.mkdtemp` of a temporary folder of this process."""
    return f"{PREFIX}{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except OSError:
        return True


def sweep_stale(folder: str | Path | None = None, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary folders left by processes that are gone; returns those removed."""
    root = Path(folder or tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match, old = _NAME.fullmatch(path.name), _OLD_NAME.fullmatch(path.name)
        if not match and not old:
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
            continue
        age = time.time() - st.st_mtime
        if match and (age < older_than_s or _alive(int(match.group(1)))):
            continue
        if not match and age < max(older_than_s, OLD_STALE_AFTER_S):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
