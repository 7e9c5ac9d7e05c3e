"""The figures of one ``scripts/gpu_check.sh`` run, as the lines the README and docs/BENCHMARKS.md quote."""

import json
import sys
from pathlib import Path


def main(out: Path) -> None:
    perf = json.loads((out / "perf.json").read_text())
    for s in perf["sections"]:
        if s.get("device", "").startswith("cuda"):
            print(
                f"perf ({s.get('model')}, batch {s.get('batch_size')}): CPT step {s['cpt_step_s'] * 1e3:.1f} ms vs "
                f"plain fine-tuning {s['plain_step_s'] * 1e3:.1f} ms (ratio {s['step_ratio']:.3f}); peak memory "
                f"ratio {s['memory_ratio']:.3f} ({s['cpt_peak_bytes'] / 2**20:.0f} vs "
                f"{s['plain_peak_bytes'] / 2**20:.0f} MiB); evaluation {s['evaluate_images_per_s']:.0f} images/s "
                f"(÷ bare loop {s['evaluate_ratio']:.3f})"
            )
    times = dict(line.split("\t") for line in (out / "times.tsv").read_text().splitlines()[1:])
    ev = {b: json.loads((out / f"evaluate10k_{b}.json").read_text()) for b in ("local", "ray")}
    same = ev["local"]["accuracy"] == ev["ray"]["accuracy"]
    print(
        f"evaluation of {ev['local'].get('n', '?')} images: {float(times['evaluate10k_local']):.1f} s local, "
        f"{float(times['evaluate10k_ray']):.1f} s Ray (process start included); accuracy "
        f"{ev['local']['accuracy']:.4f} local, {ev['ray']['accuracy']:.4f} Ray: {'same' if same else 'DIFFERENT'}"
    )
    for run in sorted(p.name for p in out.iterdir() if p.is_dir() and (p / "metrics.json").is_file()):
        m = json.loads((out / run / "metrics.json").read_text())
        b, a = m["before"], m["after"]
        print(
            f"{run}: {m['device']}, λ {m['strength']}, {m['steps']} steps ({m['stop_reason']}), "
            f"{m['seconds']:.1f} s in the loop ({float(times.get(run, 'nan')):.1f} s whole command); accuracy "
            f"{b['accuracy']:.3f} → {a['accuracy']:.3f}, worst group {b['worst_group_accuracy']:.3f} → "
            f"{a['worst_group_accuracy']:.3f}, kept decisions {m['kept_decisions']:.3f}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
