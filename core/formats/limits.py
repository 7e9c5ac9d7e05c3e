"""Resource caps on what a user may hand in, each a ``BIASREPAIR_*`` environment variable.

Read at the moment they are checked (not at import), so a server or a test can change them without a
restart. The README's "Limits" table lists them; they are declared and parsed in :mod:`core.settings`:
an unset or empty variable means the default, and a value that is not a positive integer is refused
with a :class:`~core.errors.UserError` naming the variable.

| variable | default | what it caps |
|---|---|---|
| ``BIASREPAIR_MAX_UNZIPPED_MB`` | 1024 | what a dataset zip may unpack to (its listed files only) |
| ``BIASREPAIR_MAX_IMAGES`` | 100000 | images in one dataset or upload |
| ``BIASREPAIR_MAX_IMAGE_PIXELS`` | 40000000 | width × height of one image |
| ``BIASREPAIR_STORE_BUDGET_MB`` | 20480 | disk the workbench's store may use in all |
| ``BIASREPAIR_EVAL_BATCH`` | 64 | images decoded and evaluated at a time |

Model descriptions have fixed caps (:data:`MAX_CLASSES`, :data:`MAX_INPUT_SIDE`,
:data:`MAX_INPUT_PIXELS`): a model beyond them cannot be built within the workbench's memory anyway.
"""

from __future__ import annotations

from core import settings

MAX_CLASSES = 10_000  # ImageNet has 1,000; a head with more is refused before it is built
MAX_INPUT_SIDE = 1024  # pixels per side of a model's input
MAX_INPUT_PIXELS = 1024 * 1024  # height × width of a model's input


def max_unzipped_bytes() -> int:
    return settings.MAX_UNZIPPED_MB.get() * 1024 * 1024


def max_images() -> int:
    return settings.MAX_IMAGES.get()


def max_image_pixels() -> int:
    return settings.MAX_IMAGE_PIXELS.get()


def store_budget_bytes() -> int:
    return settings.STORE_BUDGET_MB.get() * 1024 * 1024


def eval_batch_size() -> int:
    return settings.EVAL_BATCH.get()
