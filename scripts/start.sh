#!/usr/bin/env bash
# Install what the workbench needs and start it. The first page it serves starts building the demo in the
# background, so that "Open the demo" then only copies it (docs/WORKBENCH.md, "Demo sandboxes").
# Usage: bash scripts/start.sh [--server.port N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
# Listens on 127.0.0.1 only (.streamlit/config.toml); pass --server.address to change that (README,
# "Serving on a network").
exec python3 -m streamlit run app.py --server.headless true --server.address "${BIASREPAIR_ADDRESS:-127.0.0.1}" "$@"
