"""Explanations of heads and how right they are: heads in words, and the scorecard against ground truth.

Owns: TextSpan on the PCA, concept search and its noise level (describe), the weights' reading (weights_reading),
per-unit scores (scorecard), the scorecard's methods and run (scorecard_run), its leaderboard and verdict as text
(leaderboard), maps against the world's object masks (heatmaps), agreement between methods (agreement).
May import: engine/, data/, build/, read/, analysis/.
"""
