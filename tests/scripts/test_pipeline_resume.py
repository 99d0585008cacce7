"""Resume can never brick a run: finished checkpoints, stale temporaries, moved folders, re-runs, pickles.

Every test copies the session's finished tiny run (``tiny_run``) and runs ``scripts.pipeline.main``
in-process on the copy.
"""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import zipfile
from pathlib import Path

from pipeline_helpers import copy_run, run_pipeline

from scripts.run_dir import STAGES, is_done, read_csv


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_pickles(rl_dir: Path, marker: Path) -> None:
    """A crafted SB3 ``checkpoint.zip`` (its "data" entry is cloudpickled, as SB3 writes it) and a raw pickle."""
    payload = base64.b64encode(pickle.dumps(_CreatesFile(marker))).decode()
    with zipfile.ZipFile(rl_dir / "checkpoint.zip", "w") as zf:
        zf.writestr("data", json.dumps({"policy_class": {":type:": "<class 'type'>", ":serialized:": payload}}))
    (rl_dir / "agent.pkl").write_bytes(pickle.dumps(_CreatesFile(marker)))


# ----------------------------------------------------------------------------- point 1
def test_resume_with_every_step_in_the_checkpoint_exports_the_policy(tiny_run, tmp_path, capsys):
    # Killed during the final policy export: after the last checkpoint, before DONE.json.
    run_dir = copy_run(tiny_run, tmp_path / "run", "evaluate", "plots", "report.md")
    (run_dir / "rl" / "DONE.json").unlink()
    shutil.move(run_dir / "rl" / "policy", run_dir / "rl" / ".policy.tmp-k1ll3d")  # the half-written export
    code, out, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--resume", "--stages", "rl")
    assert code == 0, err
    assert "every step is done" in out and is_done(run_dir, "rl")
    assert (run_dir / "rl" / "policy" / "config.json").is_file()
    assert not (run_dir / "rl" / ".policy.tmp-k1ll3d").exists()
    assert [int(r["iteration"]) for r in read_csv(run_dir / "rl" / "progress.csv")] == [1, 2, 3, 4]
    # and again: a finished checkpoint never bricks the run, however often it is resumed
    (run_dir / "rl" / "DONE.json").unlink()
    assert run_pipeline(capsys, "--run-dir", str(run_dir), "--resume", "--stages", "rl")[0] == 0


def test_resume_removes_stale_temporaries_and_restores_a_swapped_folder(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run")
    stale = [
        run_dir / ".config.yaml.tmp-4242",
        run_dir / "rl" / ".progress.csv.tmp-17",
        run_dir / "preferences" / "pairs.jsonl.meta.json.tmp-99",
        run_dir / "reward_model" / ".model.old-5",
    ]
    for path in stale:
        path.write_text("half-written")
    (run_dir / "sft" / ".model.tmp-ab_c9").mkdir()
    (run_dir / "sft" / ".model.tmp-ab_c9" / "model.safetensors").write_bytes(b"\0" * 10)
    # killed between atomic_dir's two renames: rl/policy is only under its .old name
    (run_dir / "rl" / "policy").rename(run_dir / "rl" / ".policy.old-31")
    (run_dir / "rl" / ".policy.tmp-xyz").mkdir()
    code, out, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--resume", "--stages", "report")
    assert code == 0, err
    for path in [*stale, run_dir / "sft" / ".model.tmp-ab_c9", run_dir / "rl" / ".policy.tmp-xyz"]:
        assert not path.exists(), path
    assert (run_dir / "rl" / "policy" / "config.json").is_file() and not (run_dir / "rl" / ".policy.old-31").exists()
    assert "restored rl/policy" in out and "removed sft/.model.tmp-ab_c9" in out
    assert (run_dir / "reward_model" / "model" / "config.json").is_file()  # the real folder is untouched


# ----------------------------------------------------------------------------- point 2
def test_moved_run_folder_resumes_against_its_own_models(tiny_run, tmp_path, capsys):
    first = copy_run(tiny_run, tmp_path / "first", "rl", "evaluate", "plots", "report.md")
    code, _, err = run_pipeline(
        capsys, "--tiny", "--run-dir", str(first), "--stages", "rl", "--rl.total-timesteps", "32"
    )
    assert code == 0, err
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)  # the original folder is gone
    (moved / "rl" / "DONE.json").unlink()  # interrupted after its last checkpoint
    code, out, err = run_pipeline(
        capsys, "--run-dir", str(moved), "--resume", "--stages", "rl", "--rl.total-timesteps", "48"
    )
    assert code == 0, err
    assert "resuming" in out
    rows = read_csv(moved / "rl" / "progress.csv")
    assert [(int(r["iteration"]), int(r["timesteps"])) for r in rows] == [(1, 16), (2, 32), (3, 48)]
    for path in moved.rglob("*"):  # nothing in the folder points back at where it was made
        if path.is_file():
            assert str(first).encode() not in path.read_bytes(), path


def test_resume_ignores_the_run_dir_saved_in_config_yaml(tmp_path, monkeypatch):
    from scripts.pipeline import resolve_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "default").mkdir(parents=True)  # a run copied here from runs/original
    (tmp_path / "runs" / "default" / "config.yaml").write_text("run:\n  run_dir: runs/original\n  seed: 3\n")
    cfg = resolve_config(["--resume"])
    assert cfg.run.run_dir == "runs/default" and cfg.run.seed == 3


# ----------------------------------------------------------------------------- point 3
def test_rerunning_a_stage_invalidates_every_later_stage(tiny_run, tmp_path, capsys):
    from scripts.pipeline import plan_stages, resolve_config

    run_dir = copy_run(tiny_run, tmp_path / "run")
    code, out, err = run_pipeline(
        capsys, "--tiny", "--run-dir", str(run_dir), "--stages", "sft", "--sft.learning-rate", "0.002"
    )  # a new SFT model
    assert code == 0, err
    assert "invalidates preferences, reward-model, rl, evaluate" in out
    assert is_done(run_dir, "sft") and not any(is_done(run_dir, s) for s in STAGES[1:])
    assert not (run_dir / "rl" / "checkpoint").exists()  # --resume must not continue RL trained on the old SFT
    assert plan_stages(resolve_config(["--run-dir", str(run_dir), "--resume"])) == list(STAGES[1:])
    # asking for a later stage without the invalidated ones in between is refused before anything runs
    code, _, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--stages", "sft,rl")
    assert code == 2 and "--stages sft,preferences,reward-model,rl" in err


# ----------------------------------------------------------------------------- point 6
def test_pickles_in_rl_are_never_loaded_and_resume_continues_from_the_data_checkpoint(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path / "run", "evaluate", "plots", "report.md")
    marker = tmp_path / "code-ran"
    (run_dir / "rl" / "DONE.json").unlink()
    plant_pickles(run_dir / "rl", marker)
    checkpoint, aside = run_dir / "rl" / "checkpoint", tmp_path / "checkpoint-aside"
    if checkpoint.exists():
        shutil.move(checkpoint, aside)
    # Only pickles to resume from: refused (not unpickled, not deleted), with the way out.
    try:
        code, _, err = run_pipeline(capsys, "--run-dir", str(run_dir), "--resume", "--stages", "rl")
    finally:
        assert not marker.exists(), "a pickle in rl/ was unpickled on --resume"
    assert code == 2 and "never unpickles" in err and "checkpoint.zip" in err
    assert (run_dir / "rl" / "checkpoint.zip").is_file()

    # With the data-only checkpoint back, the pickles are ignored and RL continues from exactly its state.
    shutil.move(aside, checkpoint)
    saved = json.loads((checkpoint / "state.json").read_text())
    code, out, err = run_pipeline(
        capsys, "--run-dir", str(run_dir), "--resume", "--stages", "rl", "--rl.total-timesteps", "80"
    )
    assert code == 0, err
    assert not marker.exists()
    assert "never loads pickles" in out and f"at iteration 4 (64 steps, beta {saved['beta']:.4g})" in out
    rows = read_csv(run_dir / "rl" / "progress.csv")
    assert [int(r["timesteps"]) for r in rows] == [16, 32, 48, 64, 80]
    assert float(rows[4]["rlhf/beta"]) == saved["beta"]  # the first resumed rollout used the saved beta
    assert json.loads((run_dir / "rl" / "DONE.json").read_text())["num_timesteps"] == 80


def test_a_generic_sb3_algorithm_resumes_in_the_pipeline(tiny_run, tmp_path, capsys):
    # every algorithm's state round trip: test_pipeline_checkpoint.py; here the pipeline's generic-SB3 path
    algo = "ppo"
    run_dir = copy_run(tiny_run, tmp_path / "run", "rl", "evaluate", "plots", "report.md")
    args = ["--tiny", "--run-dir", str(run_dir), "--stages", "rl", "--algo", algo]
    assert run_pipeline(capsys, *args, "--rl.total-timesteps", "32")[0] == 0
    (run_dir / "rl" / "DONE.json").unlink()
    code, out, err = run_pipeline(capsys, *args, "--resume", "--rl.total-timesteps", "48")
    assert code == 0, err
    assert f"resuming {algo} at iteration 2" in out
    assert [int(r["iteration"]) for r in read_csv(run_dir / "rl" / "progress.csv")] == [1, 2, 3]


def test_the_rollout_cap_stops_rl_and_a_resume_counts_the_rollouts_before_it(tiny_run, tmp_path, capsys):
    # The tiny preset's 64 tokens are 4 rollouts; --rl.rollouts 2 stops at 2 (with their 2 updates).
    run_dir = copy_run(tiny_run, tmp_path / "run", "rl", "evaluate", "plots", "report.md")
    args = ["--run-dir", str(run_dir), "--stages", "rl", "--resume"]
    code, out, err = run_pipeline(capsys, *args, "--rl.rollouts", "2")
    assert code == 0, err
    done = json.loads((run_dir / "rl" / "DONE.json").read_text())
    assert done["iterations"] == 2 and "2 iterations" in out
    assert json.loads((run_dir / "rl" / "checkpoint" / "state.json").read_text())["iteration"] == 2
    # Raising the cap continues from rollout 2: one more rollout, the token budget still unreached.
    (run_dir / "rl" / "DONE.json").unlink()
    code, out, err = run_pipeline(capsys, *args, "--rl.rollouts", "3")
    assert code == 0, err
    assert "resuming rlhf_ppo at iteration 2" in out and "(at most 1 rollouts) left" in out
    assert [int(r["iteration"]) for r in read_csv(run_dir / "rl" / "progress.csv")] == [1, 2, 3]
    # A cap the checkpoint already holds only exports the policy.
    (run_dir / "rl" / "DONE.json").unlink()
    code, out, err = run_pipeline(capsys, *args, "--rl.rollouts", "3")
    assert code == 0 and "every step is done" in out, err
