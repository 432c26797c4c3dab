"""Reading a cache: the memory-mapped Cache and what the dashboard asks of it, with no model call.

Owns: Cache and per-head metrics (cache), ablation as logit arithmetic (ablation), a session's running logits
(live), new images in a cache's coordinates (probe), whether an image is like the cache's own (typicality).
May import: engine/, data/, build/.
"""
