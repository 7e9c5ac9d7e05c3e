"""Errors that carry a message meant for a person.

Every problem caused by a user's input (a bad upload, a wrong flag, a missing file) is raised as
:class:`UserError`. The CLI prints its message on one line and exits with status 2; the workbench
shows it in the page. Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input, explained in one sentence that names what is wrong."""
