"""``python -m core <command>``: everything the workbench does, scriptable (docs/DESIGN.md §6).

Exit status 0 on success; 2 with a one-line reason on bad input (a :class:`UserError`), never a
traceback for a user's mistake.

``repair`` repairs a model (``tune`` is its old name and still works, with the same options and
output). The commands that write something a person answers for (``repair``, ``sweep``, ``export``) act as a
named local user: ``--user``, else ``$BIASREPAIR_USER``, else the operating-system login. The name
and the time go into ``made_by.json`` in the run folder (beside the zip for ``export``:
``<name>.made_by.json``). The workbench's own accounts (core/app/accounts.py) are separate: the
command line does not touch the workbench store.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import importlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core import settings
from core.app.demo import build_demo
from core.app.i18n import translator
from core.app.summary import verdict_text
from core.app.verdict import judge
from core.engine.backends import add_backend_argument, get_backend
from core.engine.check_rows import CHECK_SHARE
from core.engine.configs import PENALTIES
from core.engine.events import AutoTrialStarted, ProgressEvent, StepEvent
from core.engine.inference import DiskImages, evaluate_bundle
from core.engine.methods import METHODS, get_method
from core.engine.model_card import CARD_FILE, ModelCard, folder_card
from core.engine.onnx_check import CHECK_FILE, ONNX_FILE, OPSET
from core.engine.onnx_export import export_checked
from core.engine.repair import prepare_data, run_repair, write_run
from core.engine.results import RunMetrics
from core.engine.runfolder import BUNDLE_META, RunFolder
from core.errors import UserError
from core.formats.bundle import load_bundle, load_model_file
from core.formats.datasets import load_dataset, unpacked_zips
from core.formats.libmeta import has_model_meta, model_zip_bytes
from core.formats.scratch import sweep_stale

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module with add_arguments(parser) and run(args), one-line help)
    "demo": ("core.cli", "Write the built-in demo (model, eval, pool, counterexamples) to a folder."),
    "evaluate": ("core.cli", "Evaluate a model bundle on a dataset; write metrics.json."),
    "repair": ("core.cli", "Repair a model on counterexamples; write a run folder."),
    "sweep": ("core.cli", "Repair with several penalty strengths; write one run each and a trade-off table."),
    "export": ("core.cli", "Zip a run's repaired model (or any bundle folder) for hand-off."),
    "benchmark": ("core.bench.benchmark", "Run every method over counterexample sets of several sizes."),
    "perf": ("core.bench.perf", "Measure speed and memory ratios side by side."),
    "discover": ("core.bench.group_recovery", "Find suspected groups the model fails on, without attribute labels."),
}


ALIASES = {"tune": "repair"}  # an old command name → the command it runs
USER_ENV = settings.USER.name


def add_user(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help=f"who is doing this (default: ${USER_ENV}, else your login name)")


def local_user(args) -> str:
    """The named local user this command acts as (see the module docstring)."""
    name = (getattr(args, "user", None) or settings.USER.get()).strip()
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no login name for this uid (a bare container)
            name = ""
    if not name:
        raise UserError(f"say who you are: --user NAME or ${USER_ENV}")
    return name


def write_made_by(path: Path, args, command: str) -> None:
    """Record who made ``path``'s contents, with which command, and when (UTC)."""
    made = {"user": local_user(args), "command": command, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    path.write_text(json.dumps(made, indent=1) + "\n", encoding="utf-8")


# -- demo ---------------------------------------------------------------------------------------
def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write model/, eval/, pool/, counterexamples/ into")
    p.add_argument("--counterexamples", type=int, default=16, help="how many default counterexamples (1-16)")


def run_demo(args) -> int:

    if not 1 <= args.counterexamples <= 16:
        raise UserError("--counterexamples must be between 1 and 16")
    paths = build_demo(args.out, n_counterexamples=args.counterexamples)
    for k, v in paths.items():
        print(f"{k:16s} {v}")
    return 0


# -- evaluate -----------------------------------------------------------------------------------
def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="bundle folder or .zip (or weights file with --meta)")
    p.add_argument("--meta", help="model.json for a bare .pt/.pth/.safetensors weights file")
    p.add_argument("--data", required=True, help="dataset folder or .zip with manifest.csv")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--min-group-count", type=int, default=10)
    add_backend_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress line")


def load_model_noting(path: str, meta_path: str | None):
    """Load a model for a command; say on stderr what was accepted with a change (e.g. fp16 weights)."""
    bundle = load_model_file(path, meta_path)
    for note in bundle.notes:
        print(f"note: {note}", file=sys.stderr)
    return bundle


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """``[#######.......]  120/500 images`` for a progress line."""
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total} images"


def run_evaluate(args) -> int:

    bundle = load_model_noting(args.model, args.meta)
    ds = load_dataset(args.data, bundle.meta.class_names)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\revaluating {progress_bar(done, total)}", end="", file=sys.stderr, flush=True)

    # Images are decoded batch by batch from disk (BIASREPAIR_EVAL_BATCH), never all at once.
    # With --backend ray the set is predicted in shards on the Ray workers (core.engine.inference.predict_sharded).
    res = evaluate_bundle(
        bundle, ds, device=args.device, min_group_count=args.min_group_count, on_batch=progress,
        backend=get_backend(args.backend),
    )  # fmt: skip
    if not args.quiet:
        print(file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res.metrics, indent=2), encoding="utf-8")
    m = res.metrics
    print(
        f"accuracy {m['accuracy']:.3f}  worst-group {m['worst_group_accuracy']:.3f}  "
        f"bias gap {m['bias_gap']:.3f}  (groups with ≥{m['min_group_count']} images)  → {out}"
    )
    return 0


# -- repair -------------------------------------------------------------------------------------
def add_repair(p: argparse.ArgumentParser) -> None:

    p.add_argument("--model", required=True, help="bundle folder or .zip (or weights file with --meta)")
    p.add_argument("--meta", help="model.json for a bare .pt/.pth/.safetensors weights file")
    p.add_argument("--counterexamples", required=True, help="dataset of labelled counterexamples")
    p.add_argument(
        "--eval",
        help="evaluation dataset: its split=val rows are the check split that steers the repair and is never "
        "reported; without such rows a seeded, group-stratified --check-share of it is carved automatically",
    )
    p.add_argument(
        "--check-share",
        type=float,
        default=CHECK_SHARE,
        help=f"share of --eval carved into the check split when it has no split=val rows (default {CHECK_SHARE}; "
        "0: no check split, the repair falls back to the reference images' label-free rule)",
    )
    p.add_argument("--unlabeled", help="dataset of typical unlabelled images (used by some methods and auto)")
    p.add_argument(
        "--reference",
        help="dataset of typical unlabelled images (labels ignored) for CPT's function-space anchor, the 'kept' "
        "stopping rule and auto's kept estimate; default: the --unlabeled images; without either, the anchor and the kept floor are off",
    )
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--method", default="cpt", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--strength", help="penalty strength λ (a number) or 'auto'")
    p.add_argument("--penalty", choices=PENALTIES)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--min-steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--stop-rule", choices=["kept", "paper", "heldout", "none"])
    p.add_argument("--params", help="which weights may change: all, classifier, or name patterns")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other method setting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_backend_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_user(p)


def repair_overrides(args) -> dict:
    """The method settings a repair or sweep command line gives: ``--set`` pairs and the named options."""
    over: dict = {}
    for kv in args.set:
        if "=" not in kv:
            raise UserError(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        over[k.strip().replace("-", "_")] = v.strip()
    if args.strength is not None:
        if args.strength == "auto":
            over["strength"] = "auto"
        else:
            try:
                over["strength"] = float(args.strength)
            except ValueError:
                raise UserError(f"--strength must be a number or 'auto', got {args.strength!r}") from None
    for key in ("penalty", "max_steps", "min_steps", "lr", "stop_rule", "params"):
        val = getattr(args, key)
        if val is not None:
            over[key] = val
    return over


def progress_line(e: ProgressEvent) -> str | None:
    """The terminal's progress line for an event (None: the event shows nothing)."""
    if isinstance(e, AutoTrialStarted):
        return f"\rauto: strength {e.strength:g} ({e.candidate}/{e.candidates}), fold {e.fold}/{e.folds}   "
    if not isinstance(e, StepEvent):
        return None
    line = (
        f"\rstep {e.step:4d}/{e.max_steps}  loss {e.stats.loss:.4f}  penalty {e.stats.penalty:.4f}  "
        f"fixed {e.fixed}/{e.total}"
    )
    if e.heldout_worst_group is not None:
        line += f"  held-out worst-group {e.heldout_worst_group:.3f}"
    if e.backtracked:
        line += f"  undone: reference answers kept {e.reference_agreement:.1%} < floor; retrying with half the step"
    return line


def run_repair_command(args) -> int:
    local_user(args)  # refused before any work if nobody can be named

    get_method(args.method)
    bundle = load_model_noting(args.model, args.meta)
    names = bundle.meta.class_names
    ce = load_dataset(args.counterexamples, names)
    ev = load_dataset(args.eval, names) if args.eval else None
    unl = load_dataset(args.unlabeled, names, keep_good_rows=True) if args.unlabeled else None
    ref = load_dataset(args.reference, names, keep_good_rows=True) if args.reference else None

    def progress(e: ProgressEvent) -> None:
        line = None if args.quiet else progress_line(e)
        if line is not None:
            print(line, end="", file=sys.stderr, flush=True)

    result = run_repair(
        bundle,
        ce,
        ev,
        method=args.method,
        config=repair_overrides(args),
        device=args.device,
        seed=args.seed,
        progress=progress,
        unlabeled=unl,
        reference=ref,
        backend=get_backend(args.backend),  # with strength auto: its (λ, fold) trials as tasks
        check_share=_check_share(args),
    )
    if not args.quiet:
        print(file=sys.stderr)
    out = write_run(result, bundle.meta, args.out, ev)
    write_made_by(RunFolder(out).made_by_file, args, args.command)
    print_summary(result.metrics, out)
    return 0


def print_summary(m: RunMetrics, out: Path) -> None:
    """What a repair did, in a few lines on stdout."""
    print(f"method {m.method}  strength {m.strength}  steps {m.steps}  stop: {m.stop_reason}")
    if m.method == "cpt" and m.reference_agreement is None and m.config.get("anchor", 0) > 0:
        print("note: no reference images (--reference or --unlabeled): the anchor and the kept floor were off")
    print_check(m)
    if m.no_change is not None:
        print(f"no change ({m.no_change.code}): {m.no_change.reason}")
    if m.before is not None:
        b, a = m.before, m.after
        print(
            f"accuracy {b.accuracy:.3f} → {a.accuracy:.3f}   worst-group {b.worst_group_accuracy:.3f} → "
            f"{a.worst_group_accuracy:.3f}   kept decisions {m.comparison.kept_decisions:.3f}   "
            f"changed {m.comparison.changed_predictions}"
        )
    print(f"{m.seconds:.1f} s on {m.device}  → {out}")


def _check_share(args) -> float:
    if not 0.0 <= args.check_share < 1.0:
        raise UserError(f"--check-share must be at least 0 and below 1, got {args.check_share}")
    return args.check_share


_CHECK_SOURCE_WORDS = {"val_rows": "its split=val rows", "carved": "carved automatically", "none": "none"}


def print_check(m: RunMetrics) -> None:
    """One line on the check split (how many rows steered, how many are reported) and what the guard chose."""
    split, check = m.split, m.check
    if split is None:
        return
    line = f"check split: {split.check} rows ({_CHECK_SOURCE_WORDS[split.source]}); reported: {split.reported} rows"
    if check is not None:
        line += (
            f"; guard kept step {check.step} at α {check.alpha:g} (check split: right decisions kept "
            f"{check.score.kept:.3f}, worst group {check.base.worst_group:.3f} → {check.score.worst_group:.3f})"
        )
    print(line)


# -- sweep --------------------------------------------------------------------------------------
def add_sweep(p: argparse.ArgumentParser) -> None:
    add_repair(p)
    p.add_argument("--strengths", nargs="+", type=float, default=[10.0, 100.0, 1000.0, 10000.0], help="λ values to try")


def run_sweep(args) -> int:

    if args.strength is not None:
        raise UserError("sweep takes --strengths (several values), not --strength")
    local_user(args)
    bundle = load_model_noting(args.model, args.meta)
    names = bundle.meta.class_names
    ce = load_dataset(args.counterexamples, names)
    ev = load_dataset(args.eval, names) if args.eval else None
    unl = load_dataset(args.unlabeled, names, keep_good_rows=True) if args.unlabeled else None
    ref = load_dataset(args.reference, names, keep_good_rows=True) if args.reference else None
    # decode images once for every strength
    data = prepare_data(bundle, ce, ev, unlabeled=unl, reference=ref, check_share=_check_share(args))
    out = Path(args.out)
    rows = []
    sweep = _Sweep(bundle, ce, ev, data, args.method, repair_overrides(args), args.device, args.seed)
    backend = get_backend(args.backend)  # ray: one task per strength, the data sent once
    gpus = 1 if backend.parallel and backend.cluster_gpus() >= 1 else 0
    if backend.parallel:
        results = iter(backend.map(_sweep_run, args.strengths, sweep, gpus))
    else:  # one at a time, so each line is printed as its run ends
        results = (_sweep_run(sweep, lam) for lam in args.strengths)
    for lam, result in zip(args.strengths, results, strict=True):
        folder = RunFolder(write_run(result, bundle.meta, out / f"strength_{lam:g}", ev))
        write_made_by(folder.made_by_file, args, "sweep")
        row = _sweep_row(lam, result.metrics)
        rows.append(row)
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    with open(out / "sweep.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"→ {out / 'sweep.csv'}")
    return 0


def _sweep_row(lam: float, m: RunMetrics) -> dict:
    """One line of sweep.csv."""
    row = {"strength": lam, "steps": m.steps, "stop_reason": m.stop_reason, "seconds": round(m.seconds, 2)}
    if m.before is not None:
        row.update(
            accuracy=m.after.accuracy,
            worst_group_accuracy=m.after.worst_group_accuracy,
            kept_decisions=m.comparison.kept_decisions,
            changed_predictions=m.comparison.changed_predictions,
        )
    return row


@dataclass
class _Sweep:
    """What every strength of a sweep needs; sent once to a parallel backend's workers."""

    bundle: object
    counterexamples: object
    eval_set: object
    data: object
    method: str
    overrides: dict
    device: str
    seed: int


def _sweep_run(sweep: _Sweep, lam: float):
    over = {**sweep.overrides, "strength": lam}
    return run_repair(
        sweep.bundle, sweep.counterexamples, sweep.eval_set, method=sweep.method, config=over, device=sweep.device,
        seed=sweep.seed, data=sweep.data,
    )  # fmt: skip


# -- export -------------------------------------------------------------------------------------
def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a run folder (its model/ is exported) or a bundle folder")
    p.add_argument("--out", required=True, help="the .zip to write; with --format onnx a new folder for model.onnx")
    p.add_argument("--format", choices=["zip", "onnx"], default="zip", help="our zip, or ONNX checked against PyTorch")
    p.add_argument("--opset", type=int, default=OPSET, help="the ONNX opset (--format onnx)")
    p.add_argument("--data", help="evaluation dataset: the ONNX graph is checked on its images (else random inputs)")
    add_user(p)


def run_export(args) -> int:

    src = Path(args.run)
    run = RunFolder(src)
    bundle_dir = run.model_dir if run.has_model_meta() else src
    if not has_model_meta(bundle_dir):
        raise UserError(
            f"{src} holds no model bundle ({BUNDLE_META} or a library config.json); was the method mergeable?"
        )
    bundle = load_bundle(bundle_dir)  # validate before handing it on
    out = Path(args.out)
    local_user(args)
    card = _card(run, bundle.meta) if run.has_model_meta() else None
    if args.format == "onnx":
        return _export_onnx(bundle, out, args, card)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model_zip_bytes(bundle_dir, {CARD_FILE: card.render(translator("en"))} if card else None))
    write_made_by(out.with_name(out.name + ".made_by.json"), args, "export")
    print(f"{bundle_dir} → {out}")
    return 0


def _card(run: RunFolder, meta) -> ModelCard | None:
    """The run's model card, with the workbench's verdict on its metrics (in English)."""
    made_by = json.loads(run.made_by_file.read_text(encoding="utf-8")) if run.made_by_file.is_file() else None
    m = run.metrics_json()
    words = verdict_text(judge(m), translator("en")) if m and m.get("before") and m.get("after") else "Not judged."
    return folder_card(run, meta, made_by, words)


def _export_onnx(bundle, out: Path, args, card: ModelCard | None) -> int:
    """``model.onnx``, its check against PyTorch (``onnx_check.json``), the run's model card (README.md) and
    ``made_by.json`` in a new folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} is not an empty folder: give a new folder for the ONNX export")
    ds = load_dataset(args.data, bundle.meta.class_names) if args.data else None
    x = DiskImages.decode(ds, bundle.meta) if ds is not None else []
    # (a refused graph leaves the folder empty: the same command may be run again)
    check = export_checked(bundle.model, list(bundle.meta.input_size), out / ONNX_FILE, x, bool(ds), args.opset)
    (out / CHECK_FILE).write_text(json.dumps(check.to_json(), indent=1) + "\n", encoding="utf-8")
    if card is not None:
        (out / CARD_FILE).write_text(card.render(translator("en")), encoding="utf-8")
    write_made_by(out / "made_by.json", args, "export")
    print(f"{out / ONNX_FILE}: {check.describe()}")
    return 0


LOCAL = {
    "sweep": (add_sweep, run_sweep),
    "export": (add_export, run_export),
    "demo": (add_demo, run_demo),
    "evaluate": (add_evaluate, run_evaluate),
    "repair": (add_repair, run_repair_command),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="python -m core", description="Bias-repair workbench command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            continue
        aliases = [old for old, new in ALIASES.items() if new == name]
        p = sub.add_parser(name, aliases=aliases, help=help_text, description=help_text)
        if name in LOCAL:
            LOCAL[name][0](p)
            p.set_defaults(_run=LOCAL[name][1])
        else:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Build only the chosen sub-command's parser, so one command never imports another's module.
    chosen = next((ALIASES.get(a, a) for a in argv if a in COMMANDS or a in ALIASES), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    sweep_stale()  # what a killed earlier command left in the temporary folder
    try:
        with unpacked_zips():  # every dataset zip unpacked by this command is removed when it ends
            return int(args._run(args) or 0)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
