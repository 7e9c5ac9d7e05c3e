"""File formats: model bundles, datasets, safe zip reading and the allow-listed architectures.

``meta`` (model.json, bundle zips, refused file types), ``datasets`` (datasets from folders or zips,
images, read in batches), ``manifest`` (manifest.csv, read with a reason for every refused row, and
written), ``zipsafety``, ``scratch`` (temporary folders named after their process, and the sweep of those a
killed process left), ``limits`` (the ``BIASREPAIR_*`` caps) and ``weightkeys`` (which allowed
architecture a weights file's tensor names match, with ``architecture_keys.json``) need no torch, so the
workbench's page process can check uploads with them; ``bundle`` loads and saves weights with
safetensors and ``architectures`` builds the allowed models. ``libmeta`` reads a timm or transformers
model folder's configuration without torch, ``libraries`` builds its network from the installed library
(docs/FORMATS.md).

It may import ``core.errors`` and ``core.settings`` only; it never imports ``core.engine``, ``core.app`` or ``core.bench``.
"""
