"""The store's disk budget: an upload or a run that would take the store past it is refused first.

The budget is ``BIASREPAIR_STORE_BUDGET_MB`` (default 20 GB, see :mod:`core.formats.limits`). It
counts every file under the store's folder (the database, uploaded models and datasets, run
folders, evaluations). Each upload and each run submission calls :func:`check_budget` with what it
is about to store *before* it writes anything, so a refusal leaves the store as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from core.app import display
from core.app.store import Store
from core.errors import UserError
from core.formats.limits import store_budget_bytes


def folder_bytes(root: str | Path) -> int:
    """Bytes of the regular files under ``root`` (links are not followed, so nothing is counted twice)."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # a file removed while counting
    return total


def store_usage(store: Store) -> dict:
    """How much of the budget the store uses: ``used`` and ``budget`` in bytes."""
    return {"used": folder_bytes(store.home), "budget": store_budget_bytes()}


REPAIR = "this repair"  # what a run submission is called in the message


class BudgetError(UserError):
    """The store's disk budget would be exceeded; ``values`` fill the page's translated message."""

    def __init__(self, what: str, incoming: int, used: int, budget: int):
        self.values = {
            "what": what,
            "need": display.mebibytes(incoming),
            "used": display.mebibytes(used),
            "budget": display.mebibytes(budget),
        }
        super().__init__(
            f"{what} needs about {display.mebibytes(incoming)} MB, but the workbench's store already uses "
            f"{display.mebibytes(used)} MB of its {display.mebibytes(budget)} MB disk budget "
            "(BIASREPAIR_STORE_BUDGET_MB); nothing was saved. Delete old projects' files or raise the budget"
        )


def check_budget(store: Store, incoming: int, what: str) -> None:
    """Refuse with a :class:`BudgetError` when storing ``incoming`` more bytes for ``what`` (an
    upload's file name, or "this repair") would take the store past its disk budget."""
    usage = store_usage(store)
    if usage["used"] + incoming > usage["budget"]:
        raise BudgetError(what, incoming, usage["used"], usage["budget"])


def explain(exc: UserError, t: Callable[..., str], err: Callable[[BaseException], str] = str) -> str:
    """A refusal's text for a page: the translated budget message for a :class:`BudgetError`, else
    ``err(exc)`` (the page's :func:`core.app.i18n.error_translator`: the error in the page's language,
    naming the file or value at fault)."""
    if isinstance(exc, BudgetError):
        what = t("budget_this_repair") if exc.values["what"] == REPAIR else exc.values["what"]
        return t("budget_exceeded", **{**exc.values, "what": what})
    return err(exc)
