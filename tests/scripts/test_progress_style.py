"""One progress style (issue 17): the stages' tqdm bars in one format, no Trainer log dictionaries,
and nothing but the stages' summary lines with ``--no-progress``."""

from __future__ import annotations

from pipeline_helpers import copy_run


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    from scripts.pipeline import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_no_progress_prints_only_summary_lines(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    code, out, err = _run(
        capsys, "--run-dir", str(run_dir), "--stages", "sft,preferences,reward-model", "--no-progress"
    )
    assert code == 0, err
    assert err == ""
    assert all(line.startswith("[") for line in out.splitlines()), out  # no {'loss': '10.81', ...} dictionaries


def test_progress_bars_share_one_format(tiny_run, tmp_path, capsys):
    from textrlhf.progress import BAR_FORMAT

    run_dir = copy_run(tiny_run, tmp_path / "run")
    # RL stopped by its rollout cap (2 of the tiny budget's 4 rollouts): its bar still ends at 100%.
    stages = "sft,preferences,reward-model,rl"
    code, out, err = _run(capsys, "--run-dir", str(run_dir), "--stages", stages, "--progress", "--rl.rollouts", "2")
    assert code == 0, err
    assert "{'loss'" not in out + err and "Loading weights" not in err
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert {line.split(":")[0] for line in lines} == {"sft", "sampling", "reward model", "rl"}, lines
    unit_of = {"sft": "step", "sampling": "resp", "reward model": "step", "rl": "tok"}
    assert all(f" {unit_of[line.split(':')[0]]} [" in line for line in lines), lines  # BAR_FORMAT's "{unit} ["
    assert " {unit} [" in BAR_FORMAT
    assert [line for line in lines if line.startswith("rl:")][-1].startswith("rl: 100%"), lines
