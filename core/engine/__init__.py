"""The method engine: change-penalized tuning, its baselines, the loop that runs them, and metrics.

Holds the repair methods (``methods``, one file each), their settings (``configs``, no torch), the
change penalties (``penalties``), the function-space anchor and kept estimate on reference images
(``anchor``), the typed run request (``request``), the training loop and stopping rules (``loop``), a
whole repair from data to results (``repair``), the automatic strength (``strength``), a repair
weakened after the fact (``interpolation``, θ + α·δ), metrics (``metrics``, numpy only) and model
inference (``inference``), finding groups without labels (``group_discovery``, on the model's own
features from ``group_features``), the gallery's order when attributes are known (``gallery_ranking``, no torch), the from-scratch training of benchmark base models (``training``),
device selection (``devices``) and where independent work runs, this process or Ray (``backends``).

It may import ``core.errors`` and ``core.formats``; it never imports ``core.app`` or ``core.bench``,
and never streamlit.
"""
