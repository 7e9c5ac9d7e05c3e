"""The workbench's services: everything a page does, over the SQLite store and the artifacts folder.

Page-side modules, torch-free: ``projects``, ``uploads``, ``evaluation``, ``suspects``, ``naming``, ``pool``, ``runs``,
``decisions``, ``history``, ``interpolated_runs`` (one per section of the workbench; the last: runs seen or
saved at a lower strength α), ``accounts`` (who is
signed in, roles, the four-eyes setting), ``store``, ``budget`` (the
store's disk budget), ``jobs`` (queues, workers, waiting for a task, ending a dead worker's work), ``charts``,
``report``, ``display`` (local times, readable numbers) and ``i18n``. Worker-side modules, which load models:
``worker`` (the process that runs repairs and tasks), ``rayruns`` (its repairs as Ray tasks, with
``BIASREPAIR_BACKEND=ray``), ``compute`` (the tasks), ``stored_models`` (a stored model checked and
loaded) and ``demo`` (builds the built-in example).

It may import ``core.errors``, ``core.formats`` and ``core.engine``; it never imports ``core.bench``.
Page-side modules never import torch, directly or through another module (tests/test_layering.py).
"""
