"""The method engine: change-penalized tuning, its baselines, the loop that runs them, and metrics.

Holds the repair methods (``methods``, one file each, the protocol the loop relies on in ``methods/base``),
their settings and registration (``configs``, no torch), the change penalties (``penalties``), the function-space
anchor and kept estimate on reference images (``anchor``), the typed run request (``request``), the training loop
and stopping rules (``loop``), a whole repair from data to results (``repair``), the automatic strength
(``strength``), what a repair reports and produces (``events``: progress events; ``results``: stop and no-change
reasons, metrics, the one reader of metrics.json; ``runfolder``: the files of a run; none of them needs torch),
the weights between the old model and a repair (``weight_interpolation``, θ + α·δ), metrics (``metrics``, numpy
only) and model inference (``inference``; the old model's answers on a prepared draw's images, computed once and shared by
its runs: ``old_answers``), finding groups without labels (``group_discovery``, on the model's own
features from ``group_features``), the penultimate features "More like this" compares (``neighbours``), the gallery's order when attributes are known (``gallery_ranking``, no torch),
the from-scratch training of benchmark base models (``training``), device selection (``devices``) and where
independent work runs, this process or Ray (``backends``). The guard on right answers (docs/REPAIR_GUARD.md): the
labelled check split carved from the evaluation set (``check_rows``, no torch; ``checksplit`` loads it), what the
guard measured and chose (``check_results``, no torch), the guard itself (``guard``), auto steered by it
(``checkauto``), and more signal per counterexample: augmented copies (``augment``), the invariance hint
(``invariance``) and counterexamples mixed into reference images (``mixing``). A model as ONNX checked against
PyTorch (``onnx_export``; what its check states, no torch: ``onnx_check``) and a repaired model's card
(``model_card``, no torch).

It may import ``core.errors`` and ``core.formats``; it never imports ``core.app`` or ``core.bench``,
and never streamlit.
"""
