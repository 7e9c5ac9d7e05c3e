"""Soak the workbench (docs/WORKBENCH.md, "Soak"): a real server, writer processes labelling in one store, two
browser sessions going through the pages and queued demo repairs, all at once for a while; then check that no
label write was lost, that no repair failed unless it was cancelled, that each queue had one worker at every
sample, and that the memory of the server and its workers stayed flat. Prints a table; exits 1 if a check fails.
Not part of the test suite (it takes minutes). Needs playwright and /usr/bin/chromium, like tests/e2e.

    python -m scripts.soak [--writers 8] [--browsers 2] [--repairs 20] [--minutes 10] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from core.app import pool, projects, runs
from core.app.store import Queue, Store
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, Server, settle, sign_in
from tests.wb_helpers import ALICE, BOB, FAST_RUN, MIA, label_top, make_accounts, seed_demo_cache

ROOT = Path(__file__).resolve().parent.parent
CURATORS = {"alice": ALICE, "bob": BOB, "mia": MIA}
KEYS_PER_WRITER = 12
SAMPLE_S = 1.0
CANCEL_EVERY = 4  # every fourth repair is cancelled soon after it is queued
PAGES = ("1 · Model", "2 · Counterexamples", "3 · Repair", "4 · Review", "5 · History")
FLAT = 1.25  # memory is flat when the last quarter's median is at most this times the first quarter's
DRAIN_S = 900.0  # after the soak, how long the queued repairs may take to finish


# ---- a writer process -----------------------------------------------------------------------------------
def writer(home: str, project: int, keys: list[str], user: str, until: float, log: str) -> None:
    """Label ``keys`` round and round (each write changes the label, so each one is a real write and an
    audit row) until ``until``; every write the store acknowledged is logged as it happens."""
    store = Store(home)
    classes = projects.project_summary(store, project)["class_names"]
    n, errors = 0, 0
    with open(log, "w", encoding="utf-8") as out:
        while time.time() < until:
            key = keys[n % len(keys)]
            label = classes[(n // len(keys) + hash(key)) % len(classes)]
            try:
                pool.set_label(store, project, key, label, CURATORS[user])
            except Exception as exc:  # counted, and the same write tried again
                errors += 1
                out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
                continue
            out.write(json.dumps({"key": key, "label": label}) + "\n")
            out.flush()
            n += 1


# ---- the soak ---------------------------------------------------------------------------------------------
def _demo_dir() -> Path:
    cache = Path(os.environ.get("BIASREPAIR_CACHE") or ROOT / ".cache") / "soak-demo"
    if not (cache / "model").is_dir():  # built once, by the CLI as a user would (torch stays out of this process)
        subprocess.run([sys.executable, "-m", "core", "demo", "--out", str(cache)], cwd=ROOT, check=True)
    return cache


def _worker_pids(home: Path) -> dict[str, list[int]]:
    """The worker processes of this store by queue, from the process table (registered or not)."""
    found: dict[str, list[int]] = {q.value: [] for q in Queue}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "core.app.worker" in argv and str(home) in argv and "--queue" in argv:
            found.setdefault(argv[argv.index("--queue") + 1], []).append(int(proc.name))
    return found


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


class Sampler(threading.Thread):
    """Once a second: the registered live workers and the worker processes of each queue, and the resident
    memory of the server and its workers."""

    def __init__(self, home: Path, server_pid: int):
        super().__init__(daemon=True)
        self.store, self.home, self.server_pid = Store(home), home, server_pid
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            procs = _worker_pids(self.home)
            leased = {q.value: len(self.store.live_workers(queue=q)) for q in Queue}
            server = _rss_mb(self.server_pid)
            per_queue = {f"{q}_mb": sum(_rss_mb(p) for p in ps) if ps else None for q, ps in procs.items()}
            rss = server + sum(v for v in per_queue.values() if v is not None)
            self.samples.append({"t": time.time(), "leased": leased, "procs": {q: len(p) for q, p in procs.items()},
                                 "rss_mb": rss, "server_mb": server, **per_queue})  # fmt: skip


def _browse(url: str, until: float, views: list, problems: list) -> None:
    """Two signed-in sessions (mia and bob, each its own browser context) going through the five pages in turn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for name in ("mia", "bob"):
            pg = b.new_context(viewport={"width": 1280, "height": 720}).new_page()
            pg.set_default_timeout(120_000)
            pg.goto(url)
            sign_in(pg, name)
            pages.append(pg)
        i = 0
        while time.time() < until:
            pg, link = pages[i % len(pages)], PAGES[(i // len(pages)) % len(PAGES)]
            i += 1
            try:
                pg.get_by_role("link", name=link).click()
                settle(pg, timeout=120_000)
                views.append(link)
                if pg.locator("[data-testid=stException]").count():
                    problems.append(f"an exception is shown on {link}")
            except Exception as exc:  # a page that never settles is a finding, not the end of the soak
                problems.append(f"{link}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        b.close()


def _repairs(store: Store, project: int, n: int, until: float, ids: list[int], cancelled: set[int]) -> None:
    """``n`` demo repairs queued evenly over the first two thirds of the soak (the server's supervisor starts
    their worker; nobody here does); every CANCEL_EVERY-th is cancelled once queued."""
    gap = (until - time.time()) * 2 / 3 / max(n, 1)
    for k in range(n):
        actor = (ALICE, MIA)[k % 2]
        rid = runs.submit_run(store, project, "cpt", dict(FAST_RUN), actor, start_worker=False)
        ids.append(rid)
        if k % CANCEL_EVERY == CANCEL_EVERY - 1:
            runs.cancel_run(store, rid, actor)
            cancelled.add(rid)
        time.sleep(gap)  # pacing the submissions over the soak, not waiting for anything


def _lost_writes(store: Store, project: int, logs: list[Path]) -> tuple[int, int, int]:
    """(acknowledged writes, writes missing from the labels or the audit log, errors the writers saw)."""
    final = {(r["dataset_id"], r["item_path"]): r["label"] for r in store.labels(project)}
    audited: dict[tuple[int, str], int] = {}
    for e in store.audit_events(project):
        if e["action"] in ("label_added", "label_changed"):
            k = (int(e["detail"]["dataset_id"]), e["detail"]["image"])
            audited[k] = audited.get(k, 0) + 1
    writes = errors = lost = 0
    for log in logs:
        last: dict[tuple[int, str], str] = {}
        count: dict[tuple[int, str], int] = {}
        for line in log.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "error" in row:
                errors += 1
                continue
            did, path = row["key"].split(":", 1)
            k = (int(did), path)
            last[k], count[k] = row["label"], count.get(k, 0) + 1
            writes += 1
        lost += sum(final.get(k) != label for k, label in last.items())
        lost += sum(max(0, n - audited.get(k, 0)) for k, n in count.items())
    return writes, lost, errors


def _quarters(samples: list[dict], key: str, start: float, until: float) -> tuple[float, float] | None:
    """The median of ``key`` over the first and over the last quarter of the soak itself (the wait for the
    queue to drain afterwards, with the writers and browsers gone, left out), counting only the samples where it
    was measured (a worker's memory while that worker was alive). None when a quarter has no such sample."""
    during = [s for s in samples if start <= s["t"] <= until]
    q = max(1, len(during) // 4)
    first = [s[key] for s in during[:q] if s.get(key) is not None]
    last = [s[key] for s in during[-q:] if s.get(key) is not None]
    return (statistics.median(first), statistics.median(last)) if first and last else None


def _memory_row(samples: list[dict], start: float, until: float) -> tuple[bool, str]:
    """Memory is flat when, for the server and for each queue's worker alive in both the first and the last
    quarter, the last quarter's median is at most :data:`FLAT` times the first's. The sum of all of them is shown
    too, but not judged: it changes with which workers happen to be alive."""
    parts, ok = [], True
    for key, name in [("server_mb", "server")] + [(f"{q.value}_mb", f"{q.value} worker") for q in Queue]:
        medians = _quarters(samples, key, start, until)
        if medians is None:
            parts.append(f"{name}: not alive in both quarters")
            continue
        ok &= medians[1] <= FLAT * medians[0]
        parts.append(f"{name} {medians[0]:.0f} → {medians[1]:.0f} MB")
    total = _quarters(samples, "rss_mb", start, until)
    parts.append(f"all together {total[0]:.0f} → {total[1]:.0f} MB (not judged)" if total else "")
    return ok, "RSS, median of the first quarter → of the last: " + ", ".join(p for p in parts if p) + (
        f" (flat: at most {FLAT}× each)"
    )


def soak(args) -> bool:
    home = args.home or Path(tempfile.mkdtemp(prefix="soak-")) / "home"
    seed_demo_cache(home, _demo_dir())
    store = Store(home)
    make_accounts(store)
    srv = Server(home, home.parent)
    srv.start()
    procs: list[subprocess.Popen] = []
    try:
        project = projects.open_demo(store, ALICE)
        label_top(store, project, 8)  # the repairs' counterexamples; the writers take other images
        keys = [c["key"] for c in pool.candidates(store, project)[8:]]
        assert len(keys) >= args.writers * KEYS_PER_WRITER, "the demo pool is too small for this many writers"
        start = time.time()
        until = start + 60 * args.minutes
        sampler = Sampler(home, srv.proc.pid)
        sampler.start()
        logs = [home.parent / f"writer{w}.jsonl" for w in range(args.writers)]
        for w, log in enumerate(logs):
            mine = keys[w * KEYS_PER_WRITER : (w + 1) * KEYS_PER_WRITER]
            spec = json.dumps([str(home), project, mine, list(CURATORS)[w % len(CURATORS)], until, str(log)])
            procs.append(subprocess.Popen([sys.executable, "-m", "scripts.soak", "--writer-spec", spec], cwd=ROOT))
        ids: list[int] = []
        cancelled: set[int] = set()
        submitter = threading.Thread(target=_repairs, args=(Store(home), project, args.repairs, until, ids, cancelled))
        submitter.start()
        views: list[str] = []
        problems: list[str] = []
        _browse(srv.url, until, views, problems)  # the browsers in this thread, for the soak's length
        browsed = time.time()
        for p in procs:
            p.wait()
        submitter.join()
        drain = time.time() + DRAIN_S
        while any(store.run(r)["status"] in ("queued", "preparing", "running") for r in ids) and time.time() < drain:
            time.sleep(SAMPLE_S)  # polling the store until the queue is empty
        sampler.stop.set()
        sampler.join()
        empty = not any(store.run(r)["status"] in ("queued", "preparing", "running") for r in ids)
        ended = {"start": start, "browsed": browsed, "drained": time.time(), "empty": empty}
        return _report(args, store, project, logs, ids, cancelled, sampler.samples, views, problems, ended)
    finally:
        for p in procs:
            p.kill()
        srv.stop()


def _report(args, store, project, logs, ids, cancelled, samples, views, problems, ended: dict) -> bool:
    writes, lost, errors = _lost_writes(store, project, logs)
    statuses = {r: store.run(r)["status"] for r in ids}
    bad_runs = {r: s for r, s in statuses.items() if s != "done" and not (r in cancelled and s == "cancelled")}
    most_leased = {q.value: max(s["leased"][q.value] for s in samples) for q in Queue}
    most_procs = {q.value: max(s["procs"].get(q.value, 0) for s in samples) for q in Queue}
    start = ended["start"]
    until = start + 60 * args.minutes
    memory_flat, memory_figures = _memory_row(samples, start, until)
    rows = [
        ("label writes", lost == 0, f"{writes} by {args.writers} processes, {lost} lost, {errors} refused and retried"),
        ("repairs", not bad_runs,
         f"{len(ids)} queued: {sum(s == 'done' for s in statuses.values())} done, "
         f"{sum(s == 'cancelled' for s in statuses.values())} cancelled (as asked), others {bad_runs or 'none'}"),
        ("one worker per queue", all(v <= 1 for v in most_leased.values()),
         f"most registered at one sample: {most_leased}; most processes: {most_procs} ({len(samples)} samples)"),
        ("memory flat", memory_flat, memory_figures),
        ("browsers", not problems, f"{len(views)} page views in 2 sessions; problems: {problems[:3] or 'none'}"),
    ]  # fmt: skip
    print(f"\nsoak: {args.writers} writers, 2 browser sessions, {args.repairs} repairs, {args.minutes} min; the "
          f"browsers' last page ended {ended['browsed'] - until:.0f} s after; "
          f"{'the queue was empty' if ended['empty'] else 'the wait for the queue to empty gave up'} "
          f"{ended['drained'] - until:.0f} s after\n")  # fmt: skip
    print("| check | held | figures |\n|---|---|---|")
    for name, ok, figures in rows:
        print(f"| {name} | {'yes' if ok else 'NO'} | {figures} |")
    return all(ok for _, ok, _ in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--repairs", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--home", type=Path, default=None, help="an empty folder for the store (default: a new one)")
    ap.add_argument("--writer-spec", help=argparse.SUPPRESS)  # one writer process (started by the soak)
    args = ap.parse_args()
    if args.writer_spec:
        writer(*json.loads(args.writer_spec))
        return 0
    return 0 if soak(args) else 1


if __name__ == "__main__":
    sys.exit(main())
