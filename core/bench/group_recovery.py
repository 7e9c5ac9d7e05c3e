"""Group discovery measured against planted groups, and on the command line (docs/DISCOVERY.md).

``python -m core discover --model BUNDLE --data DATASET --out DIR [--top K]`` writes ``groups.csv``,
``members.csv`` and one contact sheet ``group_<id>.png`` per suspected group, ignoring any attribute
column. ``python -m core discover --bench --suite demo`` prints the benchmark's ``discovery`` table:
planted-group recovery with the attribute hidden, and an 8-counterexample repair from discovery-ranked
suggestions against the attribute-aware gallery ranking and random pool images. The algorithm is
:mod:`core.engine.group_discovery`; :func:`recovery` measures how well its groups match planted
(label, attribute) cells.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.bench.suites import load_suite, prepare_suite_data
from core.engine.gallery_ranking import answer_reliability, mistake_score, spread_order
from core.engine.group_discovery import (
    DEFAULT_TOP_K,
    Discovery,
    SuspectedGroup,
    analyse,
    representatives,
    suggest_from_arrays,
)
from core.engine.group_features import embed
from core.engine.repair import run_repair
from core.engine.results import RunMetrics
from core.errors import UserError
from core.formats.bundle import load_model_file
from core.formats.datasets import ImageDataset, load_dataset, open_image, split_eval


def conflicting_cells_of(suite) -> list[tuple[int, str]]:
    """The (label, attribute) cells of a suite's evaluation set that contradict its shortcut."""
    pool_labels, pool_attrs = suite.pool.labels, suite.pool.attributes
    agreeing: dict[int, str] = {}
    for lab, attr, conf in zip(pool_labels, pool_attrs, suite.pool_conflicting):
        if not conf:
            agreeing[int(lab)] = attr
    cells = sorted({(int(r.label), r.attribute) for r in suite.eval_set.records if r.attribute})
    return [(lab, a) for lab, a in cells if agreeing.get(lab) is not None and a != agreeing[lab]]


# -- measuring against planted groups -----------------------------------------------------------
def cell_match(groups: list[SuspectedGroup], members_of_cell: np.ndarray, label: int, top: int = 3) -> dict:
    """Best precision/recall of the label's top ``top`` groups against one cell's members."""
    best = {"recovered": False, "precision": 0.0, "recall": 0.0, "group": None}
    cell = set(int(i) for i in members_of_cell)
    for g in [g for g in groups if g.label == label and g.rank <= top]:
        inter = len(cell.intersection(int(i) for i in g.members))
        precision = inter / g.size if g.size else 0.0
        recall = inter / len(cell) if cell else 0.0
        ok = precision >= 0.6 and recall >= 0.5
        if (ok, recall * precision) > (best["recovered"], best["recall"] * best["precision"]):
            best = {"recovered": ok, "precision": precision, "recall": recall, "group": g.id}
    return best


def recovery(
    groups: list[SuspectedGroup], dataset: ImageDataset, conflicting_cells: list[tuple[int, str]], top: int = 3
) -> dict:
    """Planted-group recovery: the share of the conflicting (label, attribute) cells for which one
    of the top-``top`` suspected groups of that label has precision ≥ 0.6 and recall ≥ 0.5
    against the cell. ``dataset`` is the analysed dataset *with* its attributes (scoring only)."""
    labels = dataset.labels
    attrs = np.array([a or "" for a in dataset.attributes], dtype=object)
    cells = []
    for label, attribute in conflicting_cells:
        members = np.flatnonzero((labels == label) & (attrs == attribute))
        if len(members) == 0:
            continue
        m = cell_match(groups, members, label, top)
        cells.append({"label": int(label), "attribute": attribute, "size": int(len(members)), **m})
    share = sum(c["recovered"] for c in cells) / len(cells) if cells else float("nan")
    return {"recovery": share, "cells": cells}


def group_paths(dataset: ImageDataset, group: SuspectedGroup) -> list[str]:
    """The manifest paths of a group's members: what naming the group turns into an attribute."""
    return [dataset.records[int(i)].path for i in group.members]


# -- contact sheets -----------------------------------------------------------------------------
def contact_sheet(dataset: ImageDataset, indices, out_path: str | Path, thumb: int = 56, cols: int = 8) -> Path:
    """A PNG grid of thumbnails of ``dataset`` images (in the given order)."""
    indices = [int(i) for i in indices]
    rows = max(1, math.ceil(len(indices) / cols))
    sheet = Image.new("RGB", (cols * (thumb + 2) + 2, rows * (thumb + 2) + 2), (255, 255, 255))
    for k, i in enumerate(indices):
        rec = dataset.records[i]
        img = open_image(dataset.root / rec.path, rec.path).convert("RGB")
        img = img.resize((thumb, thumb), Image.NEAREST if max(img.size) < thumb else Image.BILINEAR)
        sheet.paste(img, (2 + (k % cols) * (thumb + 2), 2 + (k // cols) * (thumb + 2)))
    out = Path(out_path)
    sheet.save(out, optimize=False, compress_level=3)
    return out


GROUP_COLUMNS = ["group", "label", "size", "accuracy", "class_accuracy", "score"]


def write_discovery(found: Discovery, dataset: ImageDataset, out_dir: str | Path, sheet_size: int = 24) -> Path:
    """``groups.csv`` (GROUP_COLUMNS, best first within each label), ``groups.json`` (every field,
    with the sentence and interval), ``members.csv`` (group,path as in the manifest) and one
    ``group_<id>.png`` contact sheet per group."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(found.groups, key=lambda g: (g.label, g.rank))
    with open(out / "groups.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=GROUP_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(g.to_row() for g in ordered)
    (out / "groups.json").write_text(json.dumps([g.to_row() for g in ordered], indent=2), encoding="utf-8")
    with open(out / "members.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["group", "path"])
        for g in ordered:
            for path in group_paths(dataset, g):
                w.writerow([g.id, path])
    for g in ordered:
        contact_sheet(dataset, representatives(found, g, sheet_size), out / f"group_{g.id}.png")
    return out


# -- benchmark: recovery and an 8-counterexample repair -----------------------------------------
def attribute_ranking(suite, eval_pred: np.ndarray, pool_probs: np.ndarray) -> np.ndarray:
    """Pool images ranked as the workbench gallery ranks them when the attribute is known
    (:mod:`core.engine.gallery_ranking`), from the reported evaluation rows' answers."""
    rep, _ = split_eval(suite.eval_set)
    records = [suite.eval_set.records[i] for i in rep]
    reliability = answer_reliability(
        [(rec.attribute or "", int(eval_pred[i])) for i, rec in zip(rep, records, strict=True)],
        [rec.label == int(eval_pred[i]) for i, rec in zip(rep, records, strict=True)],
    )
    pred, conf = pool_probs.argmax(axis=1), pool_probs.max(axis=1)
    cells = [(rec.attribute or "", int(pred[i])) for i, rec in enumerate(suite.pool.records)]
    scores = [mistake_score(*reliability.get(cell, (0, 0)), float(conf[i])) for i, cell in enumerate(cells)]
    order, _ = spread_order(scores, cells, list(range(len(scores))))
    return np.array(order, dtype=np.int64)


def _repair(suite, idx: np.ndarray, seed: int, device: str, config: dict | None = None) -> RunMetrics:
    data = prepare_suite_data(suite, idx)  # the same tensors the benchmark's repairs get
    res = run_repair(
        suite.bundle, suite.pool.subset(idx), method="cpt", config=config, device=device, seed=seed, data=data
    )
    return res.metrics


def discovery_rows(
    suite, *, shots: int = 8, seeds: int = 3, device: str = "cpu", log=None, config: dict | None = None
) -> dict:
    """Recovery of the suite's planted groups with its attribute column hidden, and an
    ``shots``-counterexample repair (cpt, default settings) from three pool rankings: discovery
    suggestions, the gallery's attribute-aware ranking, and random pool images. The curator's labels
    are the pool's true labels. Returns ``{"recovery": dict, "cells": list, "repairs": [rows]}``."""
    suite.load_pixels()
    found = analyse(suite.bundle, suite.eval_set, device=device, pixels=suite.eval_pixels)
    rec = recovery(found.groups, suite.eval_set, conflicting_cells_of(suite))
    pool_feats, pool_probs = embed(suite.bundle, suite.pool, device, pixels=suite.pool_pixels)
    rankings = {
        "discovery": np.array([s.index for s in suggest_from_arrays(found, pool_feats, pool_probs)], dtype=np.int64),
        "attribute known": attribute_ranking(suite, found.predictions, pool_probs),
    }
    pool_wrong = pool_probs.argmax(axis=1) != suite.pool.labels
    rows = []
    for name in ("discovery", "attribute known", "random"):
        for seed in range(seeds):
            if name == "random":
                idx = np.sort(np.random.default_rng(20_000 + seed).choice(len(suite.pool), shots, replace=False))
            else:
                idx = rankings[name][:shots]
            m = _repair(suite, idx, seed, device, config)
            rows.append(
                {
                    "suite": suite.name,
                    "ranking": name,
                    "seed": seed,
                    "conflicting": int(suite.pool_conflicting[idx].sum()),
                    "model_wrong": int(pool_wrong[idx].sum()),
                    "accuracy_before": m.before.accuracy,
                    "accuracy": m.after.accuracy,
                    "worst_group_before": m.before.worst_group_accuracy,
                    "worst_group": m.after.worst_group_accuracy,
                    "kept_decisions": m.comparison.kept_decisions,
                }
            )
            if log:
                log(f"{suite.name} {name} seed {seed}: accuracy {m.after.accuracy:.3f}")
    return {"recovery": rec["recovery"], "cells": rec["cells"], "groups": found.groups, "repairs": rows}


def discovery_markdown(suite, result: dict, shots: int = 8) -> str:
    """The benchmark's ``discovery`` table for one suite, as markdown."""
    names = suite.bundle.meta.class_names
    cells = result["cells"]
    hit = sum(c["recovered"] for c in cells)
    lines = [
        f"### Discovery without attributes: {suite.title}",
        "",
        f"Planted-group recovery: **{result['recovery']:.0%}** ({hit} of {len(cells)} shortcut-conflicting "
        "(label, attribute) cells have a top-3 suspected group of their label with precision ≥ 0.6 and "
        "recall ≥ 0.5; the attribute column was hidden from discovery).",
        "",
        "| label | attribute | cell size | recovered | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {names[c['label']]} | {c['attribute']} | {c['size']} | {'yes' if c['recovered'] else 'no'} | "
            f"{c['precision']:.2f} | {c['recall']:.2f} |"
        )
    df = pd.DataFrame(result["repairs"])
    first = df.iloc[0]
    lines += [
        "",
        f"Repair with {shots} counterexamples (cpt, default settings; mean ± std over {df['seed'].nunique()} seeds; "
        f"before: accuracy {first['accuracy_before']:.3f}, worst group {first['worst_group_before']:.3f}):",
        "",
        "| pool ranking | shortcut-conflicting picks | picks the model got wrong | accuracy | worst-group accuracy "
        "| kept decisions |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in df.groupby("ranking", sort=False):

        def ms(col: str, g=g) -> str:
            sd = g[col].std(ddof=1) if len(g) > 1 else 0.0
            return f"{g[col].mean():.3f} ± {sd:.3f}"

        lines.append(
            f"| {name} | {g['conflicting'].mean():.1f} of {shots} | {g['model_wrong'].mean():.1f} of {shots} | "
            f"{ms('accuracy')} | {ms('worst_group')} | {ms('kept_decisions')} |"
        )
    return "\n".join(lines) + "\n"


def discovery_table(
    suite, *, shots: int = 8, seeds: int = 3, device: str = "cpu", log=None, config: dict | None = None
) -> tuple[str, dict]:
    """(markdown, result) of :func:`discovery_rows` for one suite: what ``python -m core benchmark``
    prints as its ``discovery`` table."""
    result = discovery_rows(suite, shots=shots, seeds=seeds, device=device, log=log, config=config)
    return discovery_markdown(suite, result, shots), result


# -- command line -------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--model", help="bundle folder or .zip (or weights file with --meta)")
    p.add_argument("--meta", help="model.json for a bare .pt/.pth/.safetensors weights file")
    p.add_argument("--data", help="labelled dataset folder or .zip (any attribute column is ignored)")
    p.add_argument("--out", help="folder for groups.csv, members.csv and group_<id>.png (with --bench: table.md)")
    p.add_argument("--top", type=int, default=DEFAULT_TOP_K, help="suspected groups to keep per label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bench", action="store_true", help="measure discovery on a benchmark suite instead")
    p.add_argument("--suite", default="demo", help="with --bench: demo or photo")
    p.add_argument("--workdir", help="with --bench: where to build the suite's files (default: a temporary folder)")


def run(args) -> int:
    if args.top < 1:
        raise UserError("--top must be at least 1")
    if args.bench:
        with tempfile.TemporaryDirectory() as tmp:
            suite = load_suite(args.suite, args.workdir or tmp)
            text, _ = discovery_table(suite, device=args.device, log=lambda s: print(s, file=sys.stderr, flush=True))
        print(text)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "discovery.md").write_text(text, encoding="utf-8")
        return 0
    missing = [f"--{k}" for k in ("model", "data", "out") if not getattr(args, k)]
    if missing:
        raise UserError(f"discover needs {', '.join(missing)} (or --bench --suite NAME)")
    bundle = load_model_file(args.model, args.meta)
    ds = load_dataset(args.data, bundle.meta.class_names)
    found = analyse(bundle, ds, top_k=args.top, seed=args.seed, device=args.device)
    out = write_discovery(found, ds, args.out)
    for g in sorted(found.groups, key=lambda g: (g.label, g.rank)):
        print(f"group {g.id:3d}  {g.label_name}  #{g.rank}  {g.sentence}")
    if not found.groups:
        print("no suspected groups: no cluster of any class is clearly worse than the rest of it")
    print(f"{len(found.groups)} suspected groups → {out / 'groups.csv'}, {out / 'members.csv'}")
    return 0
