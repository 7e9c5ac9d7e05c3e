"""The ``scale`` section of ``python -m core perf --scale``: the Ray backend against the local one, as ratios.

Measured in one process on the demo suite's real images, one torch thread per task on both sides
(a Ray task asks for one CPU; perf sets one thread for the local side):

* **auto**: automatic strength (:func:`core.engine.strength.choose_strength`) on 16 counterexamples,
  local vs Ray, as the user gets it (early exit on both) and as the full sweep (every λ × fold).
* **grid**: a benchmark grid (``--scale-seeds`` draws × ``--scale-shots`` sizes × default CPT and auto),
  local vs Ray, gathered into the same rows.
* **parallel efficiency** = (local seconds ÷ Ray seconds) ÷ CPUs of the Ray instance; target ≥ 0.7 for
  grids of 8 tasks or more. The Ray instance is started, and its workers warmed by one task each
  (torch imported), before timing (that one-off start is shown on its own line). The first Ray
  measurement still includes each worker's one fetch of the shared data.
* **scheduling overhead**: 32 trivial tasks, (Ray seconds − local seconds) ÷ 32.
* **results equal**: the largest difference of any metric between the two backends' rows, and
  whether auto chose the same λ.

Each side is timed once (these runs take minutes, so they are not interleaved as the step ratios
are); the 1-minute load average is printed with them, since a shared machine moves them most.
"""

from __future__ import annotations

import operator
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.bench.benchmark import draw_counterexamples, run_benchmark
from core.bench.suites import load_suite, prepare_suite_data
from core.engine.backends import LocalBackend, RayBackend
from core.engine.configs import make_config
from core.engine.strength import choose_strength

TRIVIAL_TASKS = 32
TARGET_EFFICIENCY = 0.7
METRIC_COLUMNS = ("accuracy", "worst_group", "kept_decisions", "changed_predictions", "strength")


def add_arguments(p) -> None:
    p.add_argument(
        "--scale",
        action="store_true",
        help="also measure the Ray backend against the local one (starts a local Ray instance unless RAY_ADDRESS "
        "is set)",
    )
    p.add_argument("--scale-cpus", type=int, default=2, help="CPUs of the local Ray instance for --scale")
    p.add_argument("--scale-seeds", type=int, default=3, help="draws of the --scale benchmark grid")
    p.add_argument("--scale-shots", type=int, nargs="+", default=[4, 8], help="sizes of the --scale grid")
    p.add_argument(
        "--scale-max-steps",
        type=int,
        default=None,
        help="cap every --scale run at this many steps (default: each method's own); a smaller cap measures the "
        "same code paths in less time",
    )


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def scale_figures(args, workdir: Path, suite=None) -> tuple[dict, list[str]]:
    """Run the scale measurements on the demo suite (``suite``: one already loaded, e.g. on a demo already built;
    default: built in ``workdir``); returns the JSON section and the printed lines."""
    suite = suite or load_suite("demo", workdir / "suites")
    suite.load_pixels()
    ray_backend, start_s = _timed(lambda: RayBackend(num_cpus=args.scale_cpus))
    cpus = ray_backend.cluster_cpus()
    # One task per CPU whose shared value is a tensor: every worker is up and has imported torch.
    _, warm_s = _timed(lambda: ray_backend.map(operator.add, [1] * int(cpus), torch.zeros(1)))
    load_before = _load()
    t = _Timings(**_measure(args, suite, LocalBackend(), ray_backend))
    load_after = _load()
    diffs = [
        float(np.nanmax(np.abs(t.grid_local[c].astype(float).to_numpy() - t.grid_ray[c].astype(float).to_numpy())))
        if t.grid_local[c].notna().any()
        else 0.0
        for c in METRIC_COLUMNS
    ]

    def eff(local_s, ray_s):
        return (local_s / ray_s) / cpus

    section = {
        "section": "scale",
        "ray": ray_backend.describe(),
        "ray_cpus": cpus,
        "ray_start_s": start_s,
        "ray_warm_s": warm_s,
        "load_average_1min": [load_before, load_after],
        "auto_local_s": t.auto_local_s,
        "auto_ray_s": t.auto_ray_s,
        "auto_runs": t.auto_local.runs,
        "auto_efficiency": eff(t.auto_local_s, t.auto_ray_s),
        "auto_full_local_s": t.full_local_s,
        "auto_full_ray_s": t.full_ray_s,
        "auto_full_tasks": t.full_local.runs,
        "auto_full_efficiency": eff(t.full_local_s, t.full_ray_s),
        "grid_tasks": len(t.grid_local),
        "grid_local_s": t.grid_local_s,
        "grid_ray_s": t.grid_ray_s,
        "grid_efficiency": eff(t.grid_local_s, t.grid_ray_s),
        "overhead_per_task_s": (t.trivial_ray_s - t.trivial_local_s) / TRIVIAL_TASKS,
        "max_metric_difference": max(diffs),
        "auto_same_choice": t.auto_local.chosen == t.auto_ray.chosen and t.full_local.chosen == t.full_ray.chosen,
        "grid_same_rows": list(t.grid_local["method"]) == list(t.grid_ray["method"])
        and list(t.grid_local["steps"]) == list(t.grid_ray["steps"]),
    }
    return section, _lines(args, section, t)


@dataclass
class _Timings:
    """What :func:`_measure` ran on each side, and how long it took."""

    auto_local: object
    auto_local_s: float
    auto_ray: object
    auto_ray_s: float
    full_local: object
    full_local_s: float
    full_ray: object
    full_ray_s: float
    grid_local: object
    grid_local_s: float
    grid_ray: object
    grid_ray_s: float
    trivial_local_s: float
    trivial_ray_s: float


def _measure(args, suite, local, ray_backend) -> dict:
    """Automatic strength (early exit and full sweep), a benchmark grid and trivial tasks, locally and on Ray."""
    cpu = torch.device("cpu")
    data = prepare_suite_data(suite, draw_counterexamples(suite, 16, 0))
    max_steps = getattr(args, "scale_max_steps", None)
    cfg = make_config("cpt", {"max_steps": max_steps, "min_steps": min(10, max_steps)} if max_steps else {})

    def auto(backend, early_exit: bool):
        return _timed(
            lambda: choose_strength(suite.bundle, data, "cpt", cfg, cpu, seed=0, early_exit=early_exit, backend=backend)
        )

    def grid(backend):
        return _timed(
            lambda: run_benchmark(
                suite, sorted(set(args.scale_shots)), args.scale_seeds, ["cpt"], auto=True, device="cpu",
                max_steps=max_steps, log=lambda s: None, sweep=False, paper=False, backend=backend,
            )
        )  # fmt: skip

    out = {}
    for name, (value, seconds) in (
        ("auto_local", auto(local, True)),
        ("auto_ray", auto(ray_backend, True)),
        ("full_local", auto(local, False)),
        ("full_ray", auto(ray_backend, False)),
        ("grid_local", grid(local)),
        ("grid_ray", grid(ray_backend)),
    ):
        out[name], out[f"{name}_s"] = value, seconds
    tasks = list(range(TRIVIAL_TASKS))
    out["trivial_local_s"] = _timed(lambda: local.map(operator.sub, tasks, 0))[1]
    out["trivial_ray_s"] = _timed(lambda: ray_backend.map(operator.sub, tasks, 0))[1]
    return out


def _lines(args, s: dict, t: _Timings) -> list[str]:
    """The printed table of the scale section."""
    load_before, load_after = s["load_average_1min"]
    return [
        "",
        f"## scale: Ray ({s['ray']}) vs local, demo suite, one thread per task",
        f"Ray started in {s['ray_start_s']:.1f} s, its workers up with torch imported {s['ray_warm_s']:.1f} s later "
        f"(once; not in the ratios). 1-min load average {load_before:.2f} before, "
        f"{load_after:.2f} after: on a shared machine these ratios move with it.",
        "| work | tasks | local | Ray | speed-up | ÷ CPUs (efficiency) | target |",
        "|---|---|---|---|---|---|---|",
        f"| auto, early exit (as used) | {s['auto_runs']} read | {t.auto_local_s:.1f} s | {t.auto_ray_s:.1f} s | "
        f"{t.auto_local_s / t.auto_ray_s:.2f} | {s['auto_efficiency']:.2f} | — |",
        f"| auto, full sweep | {s['auto_full_tasks']} | {t.full_local_s:.1f} s | {t.full_ray_s:.1f} s | "
        f"{t.full_local_s / t.full_ray_s:.2f} | {s['auto_full_efficiency']:.2f} | — |",
        f"| benchmark grid ({args.scale_seeds} seeds × shots {' '.join(map(str, sorted(set(args.scale_shots))))} × "
        f"cpt, auto) | {s['grid_tasks']} | {t.grid_local_s:.1f} s | {t.grid_ray_s:.1f} s | "
        f"{t.grid_local_s / t.grid_ray_s:.2f} | {s['grid_efficiency']:.2f} | ≥ {TARGET_EFFICIENCY} |",
        f"| {TRIVIAL_TASKS} trivial tasks: overhead per task | {TRIVIAL_TASKS} | {t.trivial_local_s * 1e3:.2f} ms | "
        f"{t.trivial_ray_s * 1e3:.0f} ms | {s['overhead_per_task_s'] * 1e3:.1f} ms per task | | |",
        f"Results equal: auto chose the same λ on both: {s['auto_same_choice']}; grid rows in the same order with the "
        f"same steps: {s['grid_same_rows']}; largest metric difference {s['max_metric_difference']:.2e}.",
    ]
