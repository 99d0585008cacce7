"""Stages of the RLHF pipeline (``scripts/pipeline.py``): one module per stage, plus config and report."""
