"""Write core/formats/architecture_keys.json: every allowed architecture's state-dict keys.

Run after adding an architecture: ``python -m scripts.architecture_keys``. The models are built on
torch's "meta" device, so no memory is allocated and nothing is downloaded.
"""

from __future__ import annotations

import json

import torch

from core.formats.architectures import build_model
from core.formats.meta import ARCHITECTURE_NAMES
from core.formats.weightkeys import KEYS_FILE


def main() -> None:
    table = {}
    for name in ARCHITECTURE_NAMES:
        with torch.device("meta"):
            table[name] = sorted(build_model(name, 10, 3).state_dict())
    KEYS_FILE.write_text(json.dumps(table, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {KEYS_FILE} ({', '.join(f'{k}: {len(v)}' for k, v in table.items())})")


if __name__ == "__main__":
    main()
