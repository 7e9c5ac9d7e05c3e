"""Stand-ins for the runs worker's ``execute_run``, for tests/test_backends.py.

A Ray worker imports a task's function by its module name, and pytest imports a test file under a
name the workers cannot import; these live here, importable as ``tests.ray_helpers``.
"""

from __future__ import annotations

import os
import time


def die_in_worker(store, run) -> str:
    """The Ray worker process dies mid-run, as under the out-of-memory killer."""
    os._exit(3)


def ignore_cancel(store, run) -> str:
    """A run that never looks at its cancel flag (stuck in one long step)."""
    time.sleep(3600)
    return "done"
