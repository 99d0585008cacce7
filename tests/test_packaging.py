"""What the wheel installs, and the `agents` name clash warning (pyproject.toml, setup.cfg, agents/name_clash.py)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

import textenv
from agents.name_clash import PackageNameClashWarning, clashing_distributions, warn_on_name_clash

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_library_and_scripts_but_not_the_course(tmp_path):
    """Only what a user imports: no course (its solutions sit next to the exercises), tests or configs."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    out = tmp_path / "dist"
    # Offline: no build isolation (the dev extra installs setuptools), no dependencies.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(src),
            "-w",
            str(out),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = out.glob("textrlhf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("textrlhf-")}
    assert top == {"textrlhf", "textenv", "agents", "reward_models", "scripts"}
    assert "textrlhf/data/prompts.jsonl" in names and "textrlhf/data/demonstrations.jsonl" in names
    assert wheel.name.startswith(f"textrlhf-{textenv.__version__}-")
    entry_points = zipfile.ZipFile(wheel).read(f"textrlhf-{textenv.__version__}.dist-info/entry_points.txt").decode()
    assert "textrlhf = scripts.pipeline:main" in entry_points


def test_installed_metadata_comes_from_pyproject():
    meta = importlib.metadata.metadata("textrlhf")
    assert meta["Version"] == textenv.__version__
    assert meta["Requires-Python"] == ">=3.10"
    assert any(r.startswith("transformers>=") for r in importlib.metadata.requires("textrlhf"))


def test_name_clash_warns_only_when_a_clashing_distribution_is_installed():
    def lookup_with(installed):
        def lookup(name):
            if name not in installed:
                raise importlib.metadata.PackageNotFoundError(name)
            return object()

        return lookup

    assert clashing_distributions(lookup_with(set())) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_on_name_clash(lookup_with({"numpy"}))  # unrelated distributions: silent
    with pytest.warns(PackageNameClashWarning, match="openai-agents .*own virtual environment"):
        warn_on_name_clash(lookup_with({"openai-agents"}))
