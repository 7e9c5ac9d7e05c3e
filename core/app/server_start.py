"""What a server process does when it starts serving a store (app.py calls :func:`started` at the top of
every script run, so on the first page it serves):

* **the audit log's hash chain is verified** (``Store.audit_chain_break``): a break, or a missing or
  damaged audit table, is logged as an error and kept, and every page shows admins an alarm
  (:func:`start_alarm`) for as long as this server runs. The Admin and History pages verify it again
  each time they are shown.
* **queued repairs resume** (:func:`core.app.runs.resume_queued`), and the **workers' supervisor**
  starts (:func:`core.app.jobs.start_supervisor`): from then on a dead worker's work is ended and the
  queues move with no page open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.app import history, jobs, runs
from core.app.i18n import translator
from core.app.store import Store
from core.app.store.audit_log import ChainBreak

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_found: dict[str, ChainBreak | None] = {}  # store folder -> what the check at start found


def started(store: Store) -> None:
    """Called at the top of every script run: the audit chain verified once per process and store; queued
    repairs resumed and the workers' supervisor running (both cheap when nothing is to do)."""
    key = str(store.home)
    with _lock:
        first = key not in _found
        if first:
            broken = _found[key] = store.audit_chain_break()
    if first and broken is not None:
        _log.error("AUDIT LOG BROKEN in %s: %s", store.db_path, history.break_text(broken, translator("en")))
    runs.resume_queued(store)
    jobs.start_supervisor(store)


def chain_break_at_start(store: Store) -> ChainBreak | None:
    """What the check at this process's start found for ``store`` (None: the chain held, or not checked)."""
    return _found.get(str(store.home))


def start_alarm(store: Store, t: Callable[..., str]) -> str | None:
    """The alarm for admins when the audit chain was broken at start, in the language of ``t``; else None."""
    text = history.break_text(chain_break_at_start(store), t)
    return t("audit_chain_at_start", alarm=text) if text else None
