"""The workbench's services: everything a page does, over the SQLite store and the artifacts folder.

Page-side modules, torch-free: ``projects``, ``sandboxes`` (a demo session's own copy of the demo), ``uploads``, ``evaluation``, ``suspected_groups`` (groups found without
labels), ``naming`` (naming one), ``pool``, ``pool_files`` (where a pool's files are), ``runs``, ``decisions``, ``history``, ``interpolated_runs`` (runs seen
or saved at a lower strength α), ``accounts`` (who is signed in, roles, the four-eyes setting), ``store`` (the
SQLite store, by area), ``budget`` (the store's disk budget), ``integrity`` (stored models' SHA-256, checked before
use), ``jobs`` (queues, workers, waiting for a task, ending a dead worker's work, the workers' supervisor),
``server_start`` (what a server does when it starts serving: the audit chain checked, the supervisor started), ``summary`` (a repair's gains and
losses in plain words), ``verdict`` (a repair's verdict: its thresholds, kinds and looks), ``review`` (the Review
page's and the report's content), ``baseline`` (what a repair is compared with: the original or the model in use
now), ``similar`` ("More like this": nearest pool images in the model's features), ``strength_scale`` (the strength slider's scale), ``guard_plan`` (which guard the
next repair uses: the check split, reference images or none), ``built_from`` (what a repair was built from: its
counterexamples, who labelled and started it), ``charts``, ``staticchart`` (a chart as SVG for the report's
fallback), ``report``, ``display`` (local times, readable numbers), ``safe_text`` (user strings shown as plain
text), ``model_card`` (the README.md of every export), ``registry`` (the optional MLflow registry: setting, where,
asking the worker) and ``i18n``. Worker-side modules, which load models: ``worker`` (the process that runs repairs
and tasks), ``rayruns`` (its repairs as Ray tasks, with ``BIASREPAIR_BACKEND=ray``), ``compute`` (the tasks),
``prediction_tasks`` (evaluating a model, predicting a pool), ``pixels`` (decoded evaluation images kept in the
store), ``ce_answers`` (both models' answers on a repair's counterexamples), ``stored_models`` (a stored model
checked and loaded), ``model_exports`` (ONNX export and the registry's tasks), ``similar_task`` (a model's features of the pool), ``mlflow_registry`` (the MLflow registry's
update), ``demo`` (builds the built-in example) and ``demo_answers`` (its model's answers kept beside the
build).

It may import ``core.errors``, ``core.formats`` and ``core.engine``; it never imports ``core.bench``. Page-side
modules never import torch, directly or through another module (tests/test_layering.py).
"""
