"""The bias-repair workbench's Python core: everything that computes, without Streamlit.

Layers, lowest first (docs/ARCHITECTURE.md): ``errors`` (``UserError``, a message meant for the user) and
``settings`` (every ``BIASREPAIR_*`` environment variable, parsed once); ``formats`` (bundles, datasets, zips);
``engine`` (methods, loop, metrics); ``app`` (the workbench's services and worker); ``bench`` (suites, benchmark,
perf); and ``cli`` (``python -m core``, started by ``__main__``) on top. A layer imports only layers below it.
"""
