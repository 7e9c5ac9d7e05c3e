"""Measure what a meeting waits for, in a real browser against a real server (docs/WORKBENCH.md, "Measured"):
the first demo open (click to the finding, right after signing in to a server just started with the demo built at
start, as start.sh runs it; and from the server's start to that finding), cancel (click to "cancelled"), the α preview (a slider step to
its preview line) and the ETA error of a demo repair (each estimate shown against the time the run really
took). Prints one JSON object. Needs playwright and /usr/bin/chromium, like tests/e2e.

    python -m scripts.measure_meeting [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from core.app import runs
from core.app.store import Store
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, Server, settle, sign_in
from tests.wb_helpers import label_top, make_accounts


def _open_demo(pg) -> float:
    t0 = time.monotonic()
    pg.get_by_role("button", name="Open the demo").click()
    pg.get_by_text("Where the model goes wrong").first.wait_for(timeout=600_000)
    return time.monotonic() - t0


def _start(pg) -> None:
    pg.get_by_role("link", name="3 · Repair").click()
    pg.locator(".st-key-tune_start button").wait_for()
    settle(pg)
    pg.locator(".st-key-tune_start button").click()


def _eta_errors(store: Store, run_id: int) -> dict:
    """Poll the run's progress as the page does; each shown estimate against the time that was really left."""
    seen, t0 = [], time.monotonic()
    while store.run(run_id)["status"] in ("queued", "preparing", "running"):
        p = runs.run_progress(store, run_id)
        if p["eta_s"] is not None:
            seen.append((time.monotonic() - t0, p["eta_s"]))
        time.sleep(0.5)
    total = time.monotonic() - t0
    ratios = [eta / max(total - at, 0.5) for at, eta in seen]
    return {
        "run_seconds": round(total, 1),
        "estimates": len(seen),
        "first_estimate_at_s": round(seen[0][0], 1) if seen else None,
        "worst_ratio_estimate_over_actual": round(max(ratios, key=lambda r: max(r, 1 / r)), 2) if ratios else None,
        "median_ratio": round(sorted(ratios)[len(ratios) // 2], 2) if ratios else None,
    }


def _server(home: Path) -> Server:
    """A server on a new store with the test accounts, started as start.sh starts it: the demo built at server
    start (the test servers turn that off to spare the CPUs)."""
    make_accounts(Store(home))
    return Server(home, home.parent, env={"BIASREPAIR_DEMO_PREBUILD": "1"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=None)
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp()) / "home"
    srv = _server(home)
    started = time.monotonic()
    srv.start()
    out: dict = {}
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pg = b.new_context(viewport={"width": 1280, "height": 720}).new_page()
            pg.set_default_timeout(300_000)
            pg.goto(srv.url)
            sign_in(pg, "mia")
            out["first_demo_open_s"] = round(_open_demo(pg), 1)
            out["server_start_to_finding_s"] = round(time.monotonic() - started, 1)
            print(json.dumps(out), flush=True)
            settle(pg)
            store = Store(home)
            pid = store.projects()[0]["id"]
            label_top(store, pid, 8)
            # Cancel: start a repair, wait until it runs, click Cancel, time until the page says "cancelled".
            _start(pg)
            cancel = pg.locator("[class*='st-key-cancel_'] button").first
            cancel.wait_for()
            pg.wait_for_timeout(3000)
            t0 = time.monotonic()
            cancel.click()
            pg.get_by_text("cancelled", exact=False).first.wait_for()
            out["cancel_click_to_cancelled_s"] = round(time.monotonic() - t0, 1)
            print(json.dumps(out), flush=True)
            settle(pg)
            # ETA: a whole demo repair, every estimate against the time really left.
            before = {r["id"] for r in store.runs(pid)}
            _start(pg)
            while not (new := {r["id"] for r in store.runs(pid)} - before):
                time.sleep(0.1)
            rid = new.pop()
            out["eta"] = _eta_errors(store, rid)
            print(json.dumps(out), flush=True)
            pg.screenshot(path=str(home.parent / "after_run.png"))
            # α preview: one slider step on Review, to its preview line.
            pg.get_by_role("link", name="4 · Review").click()
            pg.locator(".st-key-alpha_box input[type=range]").wait_for()
            settle(pg)
            steps = []
            for alpha in ("0.95", "0.90"):
                pg.locator(".st-key-alpha_box input[type=range]").focus()
                t0 = time.monotonic()
                pg.keyboard.press("ArrowLeft")
                pg.get_by_text(f"At α = {alpha} (").first.wait_for()
                steps.append(round(time.monotonic() - t0, 1))
                settle(pg)
            out["alpha_preview_step_s"] = steps
            b.close()
    finally:
        srv.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
