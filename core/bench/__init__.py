"""Benchmarks: the suites (demo, photo, standard architectures), the method benchmark and perf.

``suites`` builds a biased model, an evaluation set and a pool per suite (``photo_suite``, ``standard_suite``
and ``marks``, the shortcuts that are not a colour, build some of them); ``benchmark`` runs every method over
counterexample sets of several sizes, ``frontier`` traces each method's whole trade-off curve and ``variants`` adds
runs with settings other than the defaults; ``perf`` measures speed and memory ratios side by side in one run (the
training step's in ``perf_steps``), and ``scale`` the Ray backend against the local one; ``group_recovery``
measures how well groups found without labels match the planted ones, and is the ``discover`` command.

It may import every other layer of ``core``; nothing else in ``core`` imports it except the CLI.
"""
