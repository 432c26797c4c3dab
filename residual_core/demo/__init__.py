"""The offline demo: a procedural attribute world and a small CLIP trained on it."""
