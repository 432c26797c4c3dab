"""Speed and size figures, ``python -m residual_core bench``: timings live here, never in tests.

Owns: the default figures (core), scale (scale), heads in words (words), maps (maps), the scorecard (scorecard), and
the one timing helper (timing). May import: every layer below; nothing outside bench/ imports it but cli/.
"""
