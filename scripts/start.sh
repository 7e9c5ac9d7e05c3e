#!/usr/bin/env bash
# Install what the workbench needs and start it; "Open the demo" on the first page is ready at once.
# Usage: bash scripts/start.sh [--server.port N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
exec python3 -m streamlit run app.py --server.headless true "$@"
