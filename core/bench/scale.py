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


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def scale_figures(args, workdir: Path) -> tuple[dict, list[str]]:
    """Run the scale measurements; returns the JSON section and the printed lines."""
    m = _measure(args, workdir)
    section = _section(m)
    return section, _lines(args, m, section)


def _measure(args, workdir: Path) -> dict:
    """Every timing and result of the scale section, each side timed once (see the module docstring)."""
    cpu = torch.device("cpu")
    suite = load_suite("demo", workdir / "suites")
    suite.load_pixels()
    data = prepare_suite_data(suite, draw_counterexamples(suite, 16, 0))
    cfg = make_config("cpt", {})
    local = LocalBackend()

    ray_backend, start_s = _timed(lambda: RayBackend(num_cpus=args.scale_cpus))
    cpus = ray_backend.cluster_cpus()
    # One task per CPU whose shared value is a tensor: every worker is up and has imported torch.
    _, warm_s = _timed(lambda: ray_backend.map(operator.add, [1] * int(cpus), torch.zeros(1)))

    def auto(backend, early_exit: bool):
        return _timed(
            lambda: choose_strength(suite.bundle, data, "cpt", cfg, cpu, seed=0, early_exit=early_exit, backend=backend)
        )

    m = {"ray": ray_backend, "cpus": cpus, "start_s": start_s, "warm_s": warm_s, "load_before": _load()}
    (m["auto_local"], m["auto_local_s"]), (m["auto_ray"], m["auto_ray_s"]) = auto(local, True), auto(ray_backend, True)
    (m["full_local"], m["full_local_s"]), (m["full_ray"], m["full_ray_s"]) = (
        auto(local, False),
        auto(ray_backend, False),
    )

    def grid(backend):
        return _timed(
            lambda: run_benchmark(
                suite, sorted(set(args.scale_shots)), args.scale_seeds, ["cpt"], auto=True, device="cpu",
                log=lambda s: None, sweep=False, paper=False, backend=backend,
            )
        )  # fmt: skip

    (m["grid_local"], m["grid_local_s"]), (m["grid_ray"], m["grid_ray_s"]) = grid(local), grid(ray_backend)
    tasks = list(range(TRIVIAL_TASKS))
    _, m["trivial_local_s"] = _timed(lambda: local.map(operator.sub, tasks, 0))
    _, m["trivial_ray_s"] = _timed(lambda: ray_backend.map(operator.sub, tasks, 0))
    m["load_after"] = _load()
    return m


def _section(m: dict) -> dict:
    """The JSON section of the measurements: efficiencies, overhead and whether the answers are equal."""
    grid_local, grid_ray, cpus = m["grid_local"], m["grid_ray"], m["cpus"]
    diffs = [
        float(np.nanmax(np.abs(grid_local[c].astype(float).to_numpy() - grid_ray[c].astype(float).to_numpy())))
        if grid_local[c].notna().any()
        else 0.0
        for c in METRIC_COLUMNS
    ]

    def eff(local_s, ray_s):
        return (local_s / ray_s) / cpus

    auto_local, auto_ray, full_local, full_ray = m["auto_local"], m["auto_ray"], m["full_local"], m["full_ray"]
    return {
        "section": "scale",
        "ray": m["ray"].describe(),
        "ray_cpus": cpus,
        "ray_start_s": m["start_s"],
        "ray_warm_s": m["warm_s"],
        "load_average_1min": [m["load_before"], m["load_after"]],
        "auto_local_s": m["auto_local_s"],
        "auto_ray_s": m["auto_ray_s"],
        "auto_runs": auto_local["runs"],
        "auto_efficiency": eff(m["auto_local_s"], m["auto_ray_s"]),
        "auto_full_local_s": m["full_local_s"],
        "auto_full_ray_s": m["full_ray_s"],
        "auto_full_tasks": full_local["runs"],
        "auto_full_efficiency": eff(m["full_local_s"], m["full_ray_s"]),
        "grid_tasks": len(grid_local),
        "grid_local_s": m["grid_local_s"],
        "grid_ray_s": m["grid_ray_s"],
        "grid_efficiency": eff(m["grid_local_s"], m["grid_ray_s"]),
        "overhead_per_task_s": (m["trivial_ray_s"] - m["trivial_local_s"]) / TRIVIAL_TASKS,
        "max_metric_difference": max(diffs),
        "auto_same_choice": auto_local["chosen"] == auto_ray["chosen"] and full_local["chosen"] == full_ray["chosen"],
        "grid_same_rows": list(grid_local["method"]) == list(grid_ray["method"])
        and list(grid_local["steps"]) == list(grid_ray["steps"]),
    }


def _lines(args, m: dict, s: dict) -> list[str]:
    """The printed table of the scale section."""
    auto_local_s, auto_ray_s, full_local_s, full_ray_s = (
        m["auto_local_s"], m["auto_ray_s"], m["full_local_s"], m["full_ray_s"],
    )  # fmt: skip
    grid_local_s, grid_ray_s = m["grid_local_s"], m["grid_ray_s"]
    return [
        "",
        f"## scale: Ray ({s['ray']}) vs local, demo suite, one thread per task",
        f"Ray started in {m['start_s']:.1f} s, its workers up with torch imported {m['warm_s']:.1f} s later (once; "
        f"not in the ratios). 1-min load average {m['load_before']:.2f} before, "
        f"{m['load_after']:.2f} after: on a shared machine these ratios move with it.",
        "| work | tasks | local | Ray | speed-up | ÷ CPUs (efficiency) | target |",
        "|---|---|---|---|---|---|---|",
        f"| auto, early exit (as used) | {s['auto_runs']} read | {auto_local_s:.1f} s | {auto_ray_s:.1f} s | "
        f"{auto_local_s / auto_ray_s:.2f} | {s['auto_efficiency']:.2f} | — |",
        f"| auto, full sweep | {s['auto_full_tasks']} | {full_local_s:.1f} s | {full_ray_s:.1f} s | "
        f"{full_local_s / full_ray_s:.2f} | {s['auto_full_efficiency']:.2f} | — |",
        f"| benchmark grid ({args.scale_seeds} seeds × shots {' '.join(map(str, sorted(set(args.scale_shots))))} × "
        f"cpt, auto) | {s['grid_tasks']} | {grid_local_s:.1f} s | {grid_ray_s:.1f} s | "
        f"{grid_local_s / grid_ray_s:.2f} | {s['grid_efficiency']:.2f} | ≥ {TARGET_EFFICIENCY} |",
        f"| {TRIVIAL_TASKS} trivial tasks: overhead per task | {TRIVIAL_TASKS} | {m['trivial_local_s'] * 1e3:.2f} ms | "
        f"{m['trivial_ray_s'] * 1e3:.0f} ms | {s['overhead_per_task_s'] * 1e3:.1f} ms per task | | |",
        f"Results equal: auto chose the same λ on both: {s['auto_same_choice']}; grid rows in the same order with the "
        f"same steps: {s['grid_same_rows']}; largest metric difference {s['max_metric_difference']:.2e}.",
    ]
