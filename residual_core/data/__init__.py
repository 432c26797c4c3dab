"""Data: where images and labels come from, and the one parser of text someone else wrote.

Owns: ImageSource and the split rule (sources), the demo world (world), the dataset registry (datasets), safe
decoding of uploads and image files (images), bounded JSON and indices from outside (untrusted).
May import: nothing of residual_core outside data/.
"""
