"""Errors that carry a message meant for a person.

Every problem caused by a user's input (a bad upload, a wrong flag, a missing file) is raised as
:class:`UserError`. The CLI prints its English message on one line and exits with status 2; the
workbench shows it in the page, in the page's language when the error names a message ``key``:
``UserError("x.zip is not a valid zip file", key="zip_invalid", archive="x.zip")`` is shown through
the translation ``err_zip_invalid`` with ``{archive}`` filled in (:func:`core.app.i18n.error_text`;
tests/test_i18n.py checks that every key raised in core/ has its words and placeholders in both
languages). Anything else is a bug and keeps its traceback.
"""

import errno


class UserError(ValueError):
    """A problem with the user's input, explained in one sentence that names what is wrong.

    ``key`` and ``params`` (plain strings and numbers) let the workbench say the same in another
    language; ``str(error)`` is always the English sentence."""

    def __init__(self, message: str, key: str | None = None, **params):
        super().__init__(message)
        self.key = key
        self.params = params


def is_disk_full(exc: OSError) -> bool:
    """Whether a failed write failed because the disk (or the user's quota) is full: not the input's fault."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
