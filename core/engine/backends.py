"""Where independent pieces of work run: in this process (``local``) or as tasks on a Ray cluster (``ray``).

One setting chooses it: ``--backend`` on the CLI, else ``BIASREPAIR_BACKEND=local|ray``, else ``local``.
``local`` is the default and needs no Ray at all (``ray`` is imported only by :class:`RayBackend`).
``ray`` connects to ``RAY_ADDRESS`` when it is set (``ray://host:10001`` for a remote cluster, ``auto``
for one started on this machine with ``ray start``), and otherwise starts a private local instance.

A backend does one thing: :meth:`map` a module-level function over a list of tasks and return the
results **in the order of the tasks**, so callers gather rows exactly as the sequential loop would.
Data every task needs (a model, prepared tensors, a suite) is passed once as ``shared``: Ray puts it
in the object store once, and each worker process fetches and unpickles it once and keeps it for the
next task of the same map (:func:`_call`), so the frozen base model is loaded once per worker, not
once per task. Who uses it: automatic strength (:mod:`core.engine.strength`, every (λ, fold) trial a
task), the benchmark grid and ``sweep`` (a task per cell), sharded evaluation (:func:`predict_sharded`)
and the workbench's runs worker (a Ray task per repair, :mod:`core.app.worker`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from core import settings
from core.errors import UserError

BACKENDS = ("local", "ray")
ENV_BACKEND = settings.BACKEND.name
REPO_ROOT = Path(__file__).resolve().parents[2]
_KEEP_SHARED = 2  # shared values a Ray worker keeps (two maps may alternate on one worker)
_shared_cache: dict[str, object] = {}  # in a Ray worker process: map key → its shared value


def backend_name(name: str | None = None) -> str:
    """The backend asked for: ``name`` (a CLI flag), else ``$BIASREPAIR_BACKEND``, else ``local``."""
    chosen = (name or settings.BACKEND.get() or "local").strip().lower()
    if chosen not in BACKENDS:
        raise UserError(
            f"unknown backend {chosen!r}; choose one of {', '.join(BACKENDS)}",
            "backend_unknown",
            name=chosen,
            choices=", ".join(BACKENDS),
        )
    return chosen


def add_backend_argument(parser) -> None:
    """The ``--backend`` option of the commands that can fan out (tune, sweep, benchmark, perf)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help=f"where independent runs go: local (this process) or ray (RAY_ADDRESS, else a local Ray instance); "
        f"default ${ENV_BACKEND} or local",
    )


def get_backend(name: str | None = None, num_cpus: int | None = None):
    """A backend object for ``name`` (see :func:`backend_name`)."""
    return RayBackend(num_cpus=num_cpus) if backend_name(name) == "ray" else LocalBackend()


class LocalBackend:
    """Everything in this process, one task after another."""

    name = "local"
    parallel = False

    def map(self, fn: Callable, tasks: Sequence, shared=None, num_gpus: float = 0) -> list:
        return [fn(shared, t) for t in tasks]

    def start(self, fn: Callable, tasks: Sequence, shared=None, num_gpus: float = 0) -> Pending:
        """Nothing runs until a result is asked for: task ``i`` runs when ``get(i)`` is first called."""
        done: dict[int, object] = {}

        def get(i: int):
            if i not in done:
                done[i] = fn(shared, tasks[i])
            return done[i]

        return Pending(get, lambda: None)

    def cluster_gpus(self) -> float:
        return 0.0  # tasks run in this process, on its own device choice

    def describe(self) -> str:
        return "local (this process)"


class RayBackend:
    """Tasks on a Ray cluster: ``RAY_ADDRESS`` when set, else a local Ray instance with ``num_cpus`` CPUs.

    Each task asks for one CPU, or ``num_gpus`` GPUs (the callers ask for one when the cluster has
    GPUs). Workers get this repository's ``core`` package: on a local instance through PYTHONPATH, on
    a remote cluster shipped with the job (``runtime_env`` ``py_modules``); the packages of
    requirements.txt must be installed on every node (see the README)."""

    name = "ray"
    parallel = True

    def __init__(self, num_cpus: int | None = None):
        ray = _ray()
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            if address:
                ray.init(address=address, runtime_env={"py_modules": [str(REPO_ROOT / "core")]})
            else:
                start_local_ray(num_cpus)
        self._remote = ray.remote(_call)

    def cluster_gpus(self) -> float:
        return float(_ray().cluster_resources().get("GPU", 0.0))

    def cluster_cpus(self) -> float:
        return float(_ray().cluster_resources().get("CPU", 0.0))

    def describe(self) -> str:
        return f"ray ({self.cluster_cpus():g} CPUs, {self.cluster_gpus():g} GPUs)"

    def map(self, fn: Callable, tasks: Sequence, shared=None, num_gpus: float = 0) -> list:
        if not tasks:
            return []
        pending = self.start(fn, tasks, shared, num_gpus)
        try:
            return _ray().get(pending.refs)
        finally:
            pending.cancel()  # after an error: the tasks still running are not wanted any more

    def start(self, fn: Callable, tasks: Sequence, shared=None, num_gpus: float = 0) -> Pending:
        """Submit every task now (Ray runs them roughly in this order as CPUs free up); ``get(i)`` waits
        for task ``i``. ``cancel()`` drops the tasks whose results are not wanted (an early exit)."""
        ray = _ray()
        key = uuid.uuid4().hex
        boxed = [ray.put(shared)]  # in a list, so that Ray hands the task the reference, not the value
        opts = {"num_cpus": 1, "num_gpus": num_gpus, "max_retries": 0}
        refs = [self._remote.options(**opts).remote(fn, boxed, key, t) for t in tasks]

        def cancel() -> None:
            unfinished = set(refs) - set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0])
            for r in refs:
                if r in unfinished:
                    ray.cancel(r)

        pending = Pending(lambda i: ray.get(refs[i]), cancel)
        pending.refs = refs
        return pending

    # -- one task at a time, for the workbench's runs worker (core.app.rayruns) --
    def submit(self, fn: Callable, task, num_gpus: float = 0):
        """Start ``fn(None, task)`` as a task; returns its reference."""
        return self._remote.options(num_cpus=1, num_gpus=num_gpus, max_retries=0).remote(fn, [None], "", task)

    def finished(self, refs: list, timeout: float) -> list:
        """Those of ``refs`` that have ended (waiting up to ``timeout`` seconds for the first)."""
        if not refs:
            return []
        ready, _ = _ray().wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)
        return ready

    def result(self, ref):
        """The task's return value; raises what it raised, or why it died or was cancelled."""
        return _ray().get(ref)

    def cancel(self, ref, force: bool = False) -> None:
        """Interrupt a task (KeyboardInterrupt in it; ``force``: kill its worker process), or drop it from
        the queue when it has not started."""
        _ray().cancel(ref, force=force)


class Pending:
    """The results of started tasks: ``get(i)`` is task ``i``'s (waiting for it), ``cancel()`` gives up the rest."""

    def __init__(self, get: Callable[[int], object], cancel: Callable[[], None]):
        self.get, self.cancel = get, cancel
        self.refs: list = []


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a private Ray instance on this machine whose workers can import ``core``."""
    ray = _ray()
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def _call(fn: Callable, boxed: list, key: str, task):
    """Run ``fn(shared, task)`` in a Ray worker, fetching the map's shared value once per worker."""
    if not key:  # a single submitted task: nothing shared
        return fn(None, task)
    if key not in _shared_cache:
        while len(_shared_cache) >= _KEEP_SHARED:
            _shared_cache.pop(next(iter(_shared_cache)))
        _shared_cache[key] = _ray().get(boxed[0])
    return fn(_shared_cache[key], task)


def _ray():
    try:
        import ray
    except ImportError as exc:  # the local backend never gets here
        raise UserError(
            "the ray backend needs the 'ray' package: pip install -r requirements.txt", "backend_no_ray"
        ) from exc
    return ray
