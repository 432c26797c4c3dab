"""The demo model's own tooling: training captions, the training recipe, its evaluation and model card.

A top layer: it builds on the engine (the world is a data source in world.py) and nothing in the engine imports it.
"""
