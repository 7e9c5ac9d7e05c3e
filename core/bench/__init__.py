"""Benchmarks: the suites (demo, photo, standard architectures), the method benchmark and perf.

``suites`` builds a biased model, an evaluation set and a pool per suite (``photo_suite`` and
``standard_suite`` build two of them); ``benchmark`` runs every method over counterexample sets of
several sizes; ``perf`` measures speed and memory ratios side by side in one run, and ``scale`` the Ray
backend against the local one; ``group_recovery`` measures how well groups found without labels match
the planted ones, and is the ``discover`` command.

It may import every other layer of ``core``; nothing else in ``core`` imports it except the CLI.
"""
