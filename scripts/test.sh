#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, unit, AppTest and browser tests, in parallel.
# Usage: bash scripts/test.sh [extra pytest args]   (e.g. -m "not e2e": everything but the browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
# Browser tests drive Debian's Chromium; CJK and emoji fonts make screenshots readable.
if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi "noto.*cjk" || ! fc-list 2>/dev/null | grep -qi "color emoji"; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium fonts-noto-cjk fonts-noto-color-emoji
fi
python3 -m pip install -q --disable-pip-version-check -r requirements-dev.txt

python3 -m ruff check .
python3 -m ruff format --check .
# In parallel (pytest-xdist): one worker per CPU core unless BIASREPAIR_TEST_WORKERS says how many (0: in this
# process). --dist loadgroup keeps each xdist_group in one worker: the Ray tests share one local Ray instance, and the
# two languages of the strength-slider browser test share one repair.
python3 -m pytest -n "${BIASREPAIR_TEST_WORKERS:-auto}" --dist loadgroup --durations=25 "$@"
