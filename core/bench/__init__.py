"""Benchmarks: the suites (demo, photo, standard architectures), the method benchmark and perf.

``suites`` builds a biased model, an evaluation set and a pool per suite (``photo_suite`` and
``standard_suite`` build two of them); ``benchmark`` runs every method over counterexample sets of
several sizes; ``perf`` measures speed and memory ratios side by side in one run, and ``scale`` the Ray
backend against the local one; ``group_recovery`` measures how well groups found without labels match
the planted ones, and is the ``discover`` command. ``marks`` builds the suites whose shortcut is not a colour
(a grey mark's position, a stamp's shape); ``variants`` parses ``--variant NAME=METHOD:KEY=VALUE`` (a method with
other settings, benchmarked as its own row); ``frontier`` measures each run's curve θ + α·δ and the best worst group
at a kept level.

It may import every other layer of ``core``; nothing else in ``core`` imports it except the CLI.
"""
