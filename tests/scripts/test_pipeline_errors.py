"""Bad input is refused early and clearly: damaged run folders, bad options, ``--help`` of every script.

A damaged run folder gives one line naming the file and the fix (exit status 2, no traceback); a bad
option stops the pipeline at start-up, before any stage runs; every ``python -m scripts.*`` entry point
prints its ``--help``.
"""

from __future__ import annotations

import dataclasses
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
from pipeline_helpers import copy_run, run_pipeline

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


# ----------------------------------------------------------------------------- point 4: damaged run folders
def _cut(path: Path, keep: int | None = None, drop: int = 0) -> None:
    """Truncate a file to its first ``keep`` bytes, or drop its last ``drop`` bytes."""
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep is not None else data[:-drop])


def _lines(path: Path, n: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


RESUME_RL = ("--resume", "--stages", "rl", "--rl.total-timesteps", "80")
RESUME_EVAL = ("--resume", "--stages", "evaluate")
DAMAGE = {  # case: (damage the copied run, the pipeline's arguments, what the message must say)
    "corrupt_done_json": (
        lambda r: (r / "preferences" / "DONE.json").write_text('{"stage": '),
        ("--resume", "--stages", "preferences"),
        ["preferences/DONE.json is corrupt", "delete it and run again with --resume"],
    ),
    "corrupt_checkpoint_json": (
        lambda r: _write(r / "rl" / "checkpoint" / "state.json", b"{"),
        RESUME_RL,
        ["rl/checkpoint/state.json is corrupt", "delete", "--resume"],
    ),
    "truncated_checkpoint_weights": (
        lambda r: _write(r / "rl" / "checkpoint" / "policy.safetensors", b"\x40\0\0\0\0\0\0\0{"),
        RESUME_RL,
        ["rl/checkpoint/policy.safetensors is truncated", "delete"],
    ),
    "missing_progress_rows": (
        lambda r: _lines(r / "rl" / "progress.csv", 3),
        RESUME_RL,
        ["rl/progress.csv does not match the checkpoint at iteration 4", "[3, 4] missing", "restore"],
    ),
    "cut_progress_row": (
        lambda r: _cut(r / "rl" / "progress.csv", drop=40),
        RESUME_RL,
        ["rl/progress.csv line 5 (iteration 4) is truncated", "restore"],
    ),
    "missing_sft_model": (
        lambda r: shutil.rmtree(r / "sft" / "model"),
        RESUME_EVAL,
        ["sft/model is missing", "--stages sft"],
    ),
    "truncated_sft_weights": (
        lambda r: _cut(r / "sft" / "model" / "model.safetensors", keep=100_000),
        RESUME_EVAL,
        ["sft/model/model.safetensors is truncated", "--stages sft"],
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_folder_gives_one_line_with_the_file_and_the_fix(case, tiny_run, tmp_path, capsys):
    damage, args, needles = DAMAGE[case]
    run_dir = copy_run(tiny_run, tmp_path / "run", "plots", "report.md")
    stage = args[args.index("--stages") + 1]
    (run_dir / stage / "DONE.json").unlink(missing_ok=case == "corrupt_done_json")  # interrupted in that stage
    damage(run_dir)
    before = (run_dir / "rl" / "progress.csv").read_bytes()
    code, _, err = run_pipeline(capsys, "--run-dir", str(run_dir), *args)
    assert code == 2, err
    assert err.startswith("textrlhf: error: ") and err.count("\n") == 1, err  # one line, no traceback
    for needle in needles:
        assert needle in err, (needle, err)
    assert (run_dir / "rl" / "progress.csv").read_bytes() == before  # refusing never rewrites a row


# ----------------------------------------------------------------------------- point 5: options fail at start-up
BAD_OPTIONS = {
    "n_envs_0": ([], ["--rl.n-envs", "0"], "rl.n_envs must be an integer >= 1, got 0; set --rl.n-envs"),
    "total_timesteps_0": ([], ["--rl.total-timesteps", "0"], "set --rl.total-timesteps"),
    "temperature_0": ([], ["--temperature", "0"], "run.temperature must be a finite number > 0, got 0.0"),
    "invalid_yaml": (["rl: [4096", "sft: {}"], [], r"is not valid YAML; fix or delete it: .*line 2"),
    "seed_abc_in_yaml": (["run:", "  seed: abc"], [], r"run.seed must be an integer, got 'abc' \(str\); set --seed"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_rejected_at_start_up(case, tmp_path, capsys):
    from scripts.pipeline import resolve_config

    yaml_lines, flags, message = BAD_OPTIONS[case]
    if yaml_lines:
        (tmp_path / "c.yaml").write_text("\n".join(yaml_lines) + "\n")
        flags = ["--config", str(tmp_path / "c.yaml")]
    with pytest.raises(SystemExit) as exc:
        resolve_config(["--tiny", "--run-dir", str(tmp_path / "run"), *flags])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err), case


def test_a_bad_option_stops_the_pipeline_before_any_stage(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_pipeline(capsys, "--tiny", "--run-dir", str(run_dir), "--rl.n-envs", "0")
    assert code == 2 and "--rl.n-envs" in err
    assert not run_dir.exists() and "[sft]" not in out  # nothing ran, nothing was written


# ----------------------------------------------------------------------------- point 7: --help everywhere
def _entry_points() -> list[str]:
    """``scripts/*.py`` modules runnable with ``python -m`` that build a parser."""
    names = []
    for path in sorted(SCRIPTS.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if '__name__ == "__main__"' in text and re.search(r"parse_args\(|ArgumentParser\(", text):
            names.append(path.stem)
    return names


def test_entry_points_are_found():
    assert {"pipeline", "train_agent", "demo", "benchmark"} <= set(_entry_points())


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy re-runs imported modules
@pytest.mark.parametrize("name", _entry_points())
def test_help_of_every_entry_point(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module(f"scripts.{name}", run_name="__main__", alter_sys=True)
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m scripts.{name}")  # the command the user types, not "{name}.py"
    assert not re.findall(r"--[a-z0-9-]*_[a-z0-9_-]*", out)  # each option listed once, under its dashed spelling


def test_help_lists_one_spelling_and_both_parse():
    from scripts.cli import build_parser

    @dataclasses.dataclass
    class Config:
        n_envs: int = 1
        """Envs."""

    parser = build_parser(Config, prog="tool")
    assert "--n-envs" in parser.format_help() and "--n_envs" not in parser.format_help()
    assert parser.parse_args(["--n_envs", "3"]).n_envs == parser.parse_args(["--n-envs", "3"]).n_envs == 3


def test_textrlhf_help_shows_percent_signs(capsys):
    from scripts.pipeline import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "5% per 32-episode rollout" in capsys.readouterr().out


def test_cli_help_escapes_percent_in_docstrings_and_defaults():
    from scripts.cli import build_parser

    @dataclasses.dataclass
    class Config:
        rate: float = 0.5
        """Grows by 5% per step (%(prog)s is not a format either)."""
        label: str = "top-10%"
        """A label."""

    text = build_parser(Config).format_help()
    assert "Grows by 5% per step (%(prog)s" in text and "'top-10%'" in text
