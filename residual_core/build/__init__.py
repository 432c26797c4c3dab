"""Building a cache: what it is made of, encoding it in shards, finishing it, and the disk it lives on.

Owns: PrecomputeSpec and BuildPlan (plan), encoding (shards), merging and derived tables (finalize), precompute's
lookup, lock, resume and torchrun ranks (pipeline), keys, digests, atomic writes and verified reads (store), the
defaults (defaults). May import: engine/, data/.
"""
