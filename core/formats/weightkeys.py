"""Which allowed architecture a set of weights belongs to, read without torch.

An engineer who uploads a ResNet-18 state dict but leaves the form on another architecture should be
told "these look like resnet18" rather than shown hundreds of state-dict keys. This module reads the
*names* of the tensors in a weights file without loading it (the JSON header of a safetensors file,
the strings of a ``.pt``'s pickle walked opcode by opcode with :mod:`pickletools`, which never runs
it) and compares them with each allowed architecture's keys, stored in ``architecture_keys.json``
(written by ``scripts/architecture_keys.py``; tests/test_upload_errors.py checks it against the real
models). It needs no torch, so the workbench's page process can use it to preselect the form.
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

KEYS_FILE = Path(__file__).with_name("architecture_keys.json")
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own cap on its JSON header
EXAMPLES = 3  # keys quoted in a message
LEGACY_PICKLES = 5  # pickles read from the start of a torch file (the legacy format has four)
# The last part of a state-dict key; strings of a pickle that end otherwise are not tensor names.
_KEY_ENDINGS = (".weight", ".bias", ".running_mean", ".running_var", ".num_batches_tracked")


@cache
def architecture_keys() -> dict[str, frozenset[str]]:
    """Each allowed architecture's state-dict keys (they do not depend on the number of classes)."""
    data = json.loads(KEYS_FILE.read_text(encoding="utf-8"))
    return {name: frozenset(keys) for name, keys in data.items()}


def _safetensors_keys(raw: bytes) -> set[str] | None:
    if len(raw) < 8:
        return None
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(MAX_HEADER_BYTES, len(raw) - 8):
        return None
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return {k for k in header if k != "__metadata__"}


def _pickle_strings(data: bytes) -> set[str]:
    """The text strings pushed by the pickles at the start of ``data``, read opcode by opcode (nothing
    is unpickled or run). torch's legacy format is several pickles in a row (magic number, protocol,
    system info, the state dict, the storage keys) followed by raw tensor bytes."""
    out: set[str] = set()
    stream = io.BytesIO(data)
    try:
        for _ in range(LEGACY_PICKLES):
            for op, arg, _pos in pickletools.genops(stream):
                if isinstance(arg, str) and "UNICODE" in op.name:
                    out.add(arg)
    except Exception:  # the tensor bytes after the pickles, or damage: keep what was read before
        pass
    return out


def _torch_file_keys(raw: bytes) -> set[str] | None:
    if raw[:4] == b"PK\x03\x04":  # the zip format torch.save writes since 1.6: <name>/data.pkl
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                pkl = next(
                    (i for i in zf.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"), None
                )
                if pkl is None or pkl.file_size > MAX_HEADER_BYTES:
                    return None
                data = zf.read(pkl)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
            return None
    else:
        data = raw
    known = set().union(*architecture_keys().values())
    keys = {s for s in _pickle_strings(data) if s in known or s.endswith(_KEY_ENDINGS)}
    return keys or None


def weight_keys(raw: bytes, filename: str) -> set[str] | None:
    """The tensor names in a ``.safetensors``/``.pt``/``.pth`` file, or None if they cannot be read."""
    if filename.lower().endswith(".safetensors"):
        return _safetensors_keys(raw)
    return _torch_file_keys(raw)


@dataclass(frozen=True)
class KeyMatch:
    """How a set of keys compares with one architecture's."""

    architecture: str
    matched: int  # keys both have
    missing: tuple[str, ...]  # the architecture's keys the weights lack (sorted)
    unexpected: tuple[str, ...]  # the weights' keys the architecture does not have (sorted)

    @property
    def score(self) -> float:
        """Jaccard similarity of the two key sets (1.0: the same keys)."""
        union = self.matched + len(self.missing) + len(self.unexpected)
        return self.matched / union if union else 0.0


def compare(keys: set[str], architecture: str, arch_keys: frozenset[str] | None = None) -> KeyMatch:
    """Compare weight keys with an architecture's (``arch_keys`` given, or from the stored table)."""
    want = arch_keys if arch_keys is not None else architecture_keys()[architecture]
    return KeyMatch(architecture, len(keys & want), tuple(sorted(want - keys)), tuple(sorted(keys - want)))


def best_match(keys: set[str]) -> KeyMatch | None:
    """The allowed architecture whose keys match these best, or None when none shares a key."""
    matches = [compare(keys, name) for name in architecture_keys()]
    best = max(matches, key=lambda m: (m.score, m.matched), default=None)
    return best if best is not None and best.matched else None


def guess_architecture(raw: bytes, filename: str) -> str | None:
    """The allowed architecture a weights file's keys match best, for preselecting the upload form."""
    keys = weight_keys(raw, filename)
    match = best_match(keys) if keys else None
    return match.architecture if match else None


def examples(keys: tuple[str, ...]) -> str:
    """A few keys for a message: ``a, b, c, …``."""
    shown = ", ".join(keys[:EXAMPLES])
    return shown + (", …" if len(keys) > EXAMPLES else "")
