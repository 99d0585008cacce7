"""The pipeline's RL stage with LoRA (``--rl.lora-r``): a merged policy folder the evaluation reads, and resume."""

from __future__ import annotations

from pipeline_helpers import copy_run, run_pipeline

from scripts.run_dir import is_done, read_csv, read_marker


def test_rl_with_lora_exports_a_merged_policy_and_resumes(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run", "rl", "evaluate", "plots", "report.md")
    code, out, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--stages", "rl,evaluate", "--rl.lora-r", "4")
    assert code == 0, err
    policy = run_dir / "rl" / "policy"
    assert (policy / "config.json").is_file() and not (policy / "adapter_config.json").exists()
    assert is_done(run_dir, "evaluate")
    assert read_marker(run_dir, "rl")["settings"]["rl.lora_r"] == 4
    # killed before the export: resume from the checkpoint (adapter weights, their Adam state), with more steps
    (run_dir / "rl" / "DONE.json").unlink()
    code, out, err = run_pipeline(
        capsys, "--run-dir", str(run_dir), "--stages", "rl", "--resume", "--rl.total-timesteps", "96"
    )
    assert code == 0, err
    assert "resuming rlhf_ppo at iteration 4" in out
    assert [int(r["iteration"]) for r in read_csv(run_dir / "rl" / "progress.csv")] == [1, 2, 3, 4, 5, 6]
