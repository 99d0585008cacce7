"""Shared fixture of the pipeline tests: one finished ``--tiny`` run per pytest session.

Tests never modify it: they copy it first (``pipeline_helpers.copy_run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny pipeline run (read-only: copy it before changing anything)."""
    from scripts.pipeline import main

    run_dir = tmp_path_factory.mktemp("shared-tiny-run")
    assert main(["--tiny", "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir
