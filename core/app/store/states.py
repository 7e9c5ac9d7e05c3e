"""The closed sets of values the store's rows hold: run and task states, queues, dataset roles, model kinds.

Each is a ``StrEnum``: a member is the text stored in its column and compares equal to it, so a row
read back (``run["status"] == RunStatus.DONE``) and a literal in older code agree. The groups of
states that several modules ask about (is a run still active? can it be cancelled? has it ended?)
are named here once.
"""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """Where a repair run is: ``preparing`` (its page writes its inputs; invisible to workers),
    ``queued``, ``running``, or one of the final states."""

    PREPARING = "preparing"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


ACTIVE_RUN_STATES = (RunStatus.PREPARING, RunStatus.QUEUED, RunStatus.RUNNING)  # not ended yet
IN_QUEUE_RUN_STATES = (RunStatus.QUEUED, RunStatus.RUNNING)  # a worker will see it: a cancel request, its death
FINISHED_RUN_STATES = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)
ENDED_WITHOUT_RESULT = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.CANCELLED)


class TaskStatus(enum.StrEnum):
    """Where a short task of the task queue is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


ACTIVE_TASK_STATES = (TaskStatus.QUEUED, TaskStatus.RUNNING)
FINISHED_TASK_STATES = (TaskStatus.DONE, TaskStatus.FAILED)


class Queue(enum.StrEnum):
    """The two job queues; each is served by its own worker process and is the table of the same name."""

    RUNS = "runs"  # repairs
    TASKS = "tasks"  # the short model computations pages wait for


class DatasetRole(enum.StrEnum):
    """What a project's dataset is for."""

    EVAL = "eval"
    POOL = "pool"
    UPLOADS = "uploads"  # single images a curator uploaded
    REFERENCE = "reference"  # typical images without labels, which a repair keeps answering as before


class ModelKind(enum.StrEnum):
    BASE = "base"
    REPAIRED = "repaired"


def sql_list(values: tuple[enum.StrEnum, ...]) -> str:
    """``('a', 'b')``: a tuple of states as an SQL list, for an ``IN`` test written into a statement."""
    return "(" + ", ".join(f"'{v.value}'" for v in values) + ")"
