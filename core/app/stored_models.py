"""A stored model opened for a computation in a worker: its files checked against the recorded hashes
(:func:`core.app.integrity.check_stored_model`), then loaded. Worker side: this loads torch."""

from __future__ import annotations

from core.app.integrity import check_stored_model
from core.app.store import Store
from core.formats.bundle import ModelBundle, load_bundle


def stored_bundle(store: Store, model_id: int) -> ModelBundle:
    """The model ``model_id`` of the store, ready to run; refused if its files changed since their
    hashes were recorded (a base model when it was stored, a repaired one when it was approved)."""
    model = store.model(model_id)
    check_stored_model(model, base_recorded=model["kind"] == "base" and store.model_hashes_recorded(model_id))
    return load_bundle(model["path"])
