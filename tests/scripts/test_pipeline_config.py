"""A run folder's saved config is the base of everything done in it; changed settings that a finished,
not re-run stage was built with are named (issue 17: re-running stages of a ``--tiny`` run)."""

from __future__ import annotations

import yaml
from pipeline_helpers import copy_run, run_pipeline


def test_rerunning_stages_of_a_tiny_run_keeps_its_saved_config(tiny_run, tmp_path):
    from scripts.pipeline import resolve_config
    from scripts.stages.config import TINY_PRESET

    run_dir = copy_run(tiny_run, tmp_path / "run")
    cfg = resolve_config(["--run-dir", str(run_dir), "--stages", "rl,evaluate", "--algo", "a2c"])  # no --tiny
    assert cfg.run.tiny and cfg.run.model == "tiny"
    assert cfg.rl.total_timesteps == TINY_PRESET["rl"]["total_timesteps"]
    assert cfg.run.algo == "a2c" and cfg.run.stages == ["rl", "evaluate"]  # flags still win


def test_explicit_config_and_flags_override_the_saved_config(tiny_run, tmp_path):
    from scripts.pipeline import resolve_config

    run_dir = copy_run(tiny_run, tmp_path / "run")
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"rl": {"n_envs": 4, "batch_size": 16}}))
    cfg = resolve_config(["--run-dir", str(run_dir), "--config", str(override), "--rl.batch-size", "32"])
    assert cfg.run.model == "tiny"  # saved
    assert cfg.rl.n_envs == 4  # --config over the saved config
    assert cfg.rl.batch_size == 32  # flags over both


def test_a_changed_setting_of_a_stage_that_is_not_rerun_is_named(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    code, out, err = run_pipeline(
        capsys,
        "--run-dir",
        str(run_dir),
        "--stages",
        "evaluate",
        "--sft.learning-rate",
        "0.002",
        "--evaluate.max-prompts",
        "2",
    )
    assert code == 0, err
    assert "config.yaml as saved" in out
    warnings = [line for line in out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "sft finished with other settings (sft.learning_rate)" in warnings[0], out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["tiny"] is True and saved["sft"]["learning_rate"] == 0.002  # the command's config
    # sft's DONE.json still records what it was built with: the next command says it again
    code, out, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--stages", "report")
    assert code == 0, err
    code, out, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--stages", "evaluate")
    assert code == 0 and "sft finished with other settings (sft.learning_rate)" in out, out


def test_a_new_run_folder_starts_from_the_defaults(tmp_path):
    from scripts.pipeline import resolve_config, saved_config

    assert saved_config(tmp_path / "new") == {}
    cfg = resolve_config(["--run-dir", str(tmp_path / "new")])
    assert not cfg.run.tiny and cfg.run.model == "smollm2-135m-instruct"
