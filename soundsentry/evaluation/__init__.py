"""Measuring: metrics with bootstrap intervals (``metrics``), the batch evaluator over the served path
(``batch``), figures (``plots``), paired comparison of two runs (``compare_runs``) and the diarization
benchmark (``evaluate_diarization``).
"""
