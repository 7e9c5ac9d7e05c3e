"""Benchmarks: the suites (demo, photo, standard architectures), the method benchmark and perf.

``suites`` builds a biased model, an evaluation set and a pool per suite; ``benchmark`` runs every
method over counterexample sets of several sizes; ``perf`` measures speed and memory ratios side by
side in one run.

It may import every other layer of ``core``; nothing else in ``core`` imports it except the CLI.
"""
