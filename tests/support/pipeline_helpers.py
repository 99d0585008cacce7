"""Helpers of the pipeline tests (imported by the test_pipeline*.py modules; the fixture is in conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_run(src: Path, dst: Path, *without: str) -> Path:
    """Copy a run folder, leaving out the top-level entries named in ``without``."""
    shutil.copytree(src, dst, ignore=lambda folder, names: [n for n in names if Path(folder) == src and n in without])
    return dst


def run_pipeline(capsys, *argv: str) -> tuple[int, str, str]:
    """``scripts.pipeline.main`` in-process: ``(exit status, stdout, stderr)``."""
    from scripts.pipeline import main

    capsys.readouterr()
    try:
        code = main([*argv, "--no-progress"])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
