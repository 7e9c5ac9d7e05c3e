"""The figures of one ``scripts/gpu_check.sh`` run, as the lines the README and docs/BENCHMARKS.md quote."""

import csv
import json
import sys
from pathlib import Path

MIB = 2**20


def perf_lines(out: Path) -> None:
    perf = json.loads((out / "perf.json").read_text())
    for s in perf["sections"]:
        if "cpt_ratio" not in s:
            continue
        print(
            f"perf {s['device']} ({s.get('model')}, batch {s.get('batch_size')}): CPT step ÷ plain "
            f"{s['cpt_ratio']:.3f} ({s['cpt_step_s'] * 1e3:.1f} vs {s['plain_step_s'] * 1e3:.1f} ms; δ form "
            f"{s['cpt_delta_ratio']:.3f}); anchored ÷ plain on {s['anchored_images']} images {s['anchored_ratio']:.3f}; "
            f"peak memory ÷ plain {s['memory_ratio']:.3f} ({s['cpt_peak_bytes'] / MIB:.0f} vs "
            f"{s['plain_peak_bytes'] / MIB:.0f} MiB; δ form {s['memory_ratio_delta_form']:.3f}); evaluation ÷ bare "
            f"{s['evaluate_ratio']:.3f} ({s['evaluate_images_per_s']:.0f} images/s); streamed from disk ÷ bare "
            f"{s['streamed_ratio']:.3f}"
        )


def run_lines(out: Path, times: dict) -> None:
    for run in sorted(p.name for p in out.iterdir() if p.is_dir() and (p / "metrics.json").is_file()):
        m = json.loads((out / run / "metrics.json").read_text())
        b, a = m["before"], m["after"]
        peak = out / f"{run}.peak.json"
        mem = f", peak {json.loads(peak.read_text())['peak_bytes'] / MIB:.0f} MiB" if peak.is_file() else ""
        with (out / run / "history.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        loop = float(rows[-1]["elapsed_s"]) if rows else 0.0  # the last step of the repair's own loop
        print(
            f"{run}: {m['device']}, λ {m['strength']}, {m['steps']} steps ({m['stop_reason']}), "
            f"{loop:.1f} s tuning loop, {m['seconds']:.1f} s repair (auto's trials and both evaluations included, "
            f"decoding not), {float(times.get(run, 'nan')):.1f} s whole command{mem}; accuracy "
            f"{b['accuracy']:.3f} → {a['accuracy']:.3f}, worst group {b['worst_group_accuracy']:.3f} → "
            f"{a['worst_group_accuracy']:.3f}, kept decisions {m['kept_decisions']:.3f}"
        )


def evaluation_lines(out: Path, times: dict) -> None:
    for name in sorted(p.stem for p in out.glob("evaluate10k_*.json") if not p.name.endswith(".peak.json")):
        ev = json.loads((out / f"{name}.json").read_text())
        peak = out / f"{name}.peak.json"
        mem = f", peak {json.loads(peak.read_text())['peak_bytes'] / MIB:.0f} MiB" if peak.is_file() else ""
        print(
            f"{name}: {ev.get('n', '?')} images in {float(times.get(name, 'nan')):.1f} s (process start included"
            f"{mem}); accuracy {ev['accuracy']:.4f}"
        )


def main(out: Path) -> None:
    times = dict(line.split("\t") for line in (out / "times.tsv").read_text().splitlines()[1:])
    if (out / "perf.json").is_file():
        perf_lines(out)
    run_lines(out, times)
    evaluation_lines(out, times)
    default, auto = times.get("repair_default_r50"), times.get("repair_auto_r50")
    if default and auto:
        print(f"auto ÷ default repair, ResNet-50 (whole command): {float(auto) / float(default):.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
