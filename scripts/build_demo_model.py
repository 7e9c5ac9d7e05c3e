"""Rebuild the demo model in assets/demo/model/ from the MNIST files in assets/demo/mnist/.

Deterministic on CPU (seeded, one thread): run ``python scripts/build_demo_model.py``.
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.app.demo import MODEL_DIR, train_demo_model  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    info = train_demo_model(MODEL_DIR)
    print(json.dumps(info, indent=2))
    print(f"wrote {MODEL_DIR} in {time.perf_counter() - t0:.1f} s")
