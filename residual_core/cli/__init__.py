"""The command line, ``python -m residual_core …``: one module per command family, each with ``register(sub)``.

Owns: the parser and dispatch (main), shared arguments and their ranges (args), readable tables (tables), the
heads-in-words commands (words), maps (maps), the scorecard (scorecard). May import: every layer below and bench/;
nothing imports cli/ but residual_core/__main__.py.
"""
