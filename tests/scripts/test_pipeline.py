"""The RLHF pipeline (scripts/pipeline.py): tiny end-to-end run, kill + resume, config layering.

One tiny pipeline runs in-process for the whole session (``tiny_run``, conftest.py); the
resume test copies its finished SFT / preference / reward-model stages and runs RL in a subprocess
that is SIGKILLed after its first checkpoint, then resumed. More resume, error and config tests are in
the other test_pipeline_*.py modules.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.run_dir import STAGES, atomic_dir, atomic_write_text, is_done, read_csv
from scripts.stages.config import TINY_PRESET, build_config, check_layer, load_yaml
from scripts.stages.config_sections import DEFAULT_ALGO, RLConfig

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- end to end
def test_tiny_pipeline_writes_every_artifact(tiny_run):
    import yaml

    for stage in STAGES:
        assert is_done(tiny_run, stage), stage
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert set(cfg) == {"run", "sft", "preferences", "reward_model", "rl", "evaluate"}
    assert cfg["run"]["tiny"] is True and cfg["run"]["model"] == "tiny"

    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        assert (tiny_run / "sft" / "model" / name).is_file()
    assert len((tiny_run / "preferences" / "pairs.jsonl").read_text().splitlines()) >= 2
    assert (tiny_run / "reward_model" / "model" / "reward_model.json").is_file()
    # The report's loss plot: the trainer's log history, captured by patching the module that builds the trainer
    # (scripts.stages.reward.capture_trainer_logs); the tiny preset logs every step.
    rm_log = read_csv(tiny_run / "reward_model" / "train_log.csv")
    assert [r for r in rm_log if r["loss"] not in (None, "")], "reward_model/train_log.csv has no training-loss rows"

    rows = read_csv(tiny_run / "rl" / "progress.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    for col in ("rlhf/score", "rlhf/kl", "rlhf/beta", "rlhf/response_len", "timesteps"):
        assert col in rows[0] and rows[-1][col] != "", col
    assert list((tiny_run / "rl" / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("policy.safetensors", "optimizer.pt", "state.json"):  # the data-only resume state
        assert (tiny_run / "rl" / "checkpoint" / name).is_file(), name
    assert not [p for p in (tiny_run / "rl").rglob("*") if p.suffix in (".zip", ".pkl", ".pickle")]

    metrics = json.loads((tiny_run / "evaluate" / "metrics.json").read_text())
    assert set(metrics["policies"]) == {"base", "sft", "rl"}
    for key in ("rm_score", "annotator_score", "kl", "distinct_1", "distinct_2", "ref_perplexity"):
        assert key in metrics["policies"]["rl"]
    assert 0.0 <= metrics["win_rate"]["rl_vs_sft"] <= 1.0 and "rl_vs_base" in metrics["win_rate"]
    assert metrics["second_judge"] == "pattern_sentiment" and "second_judge_score" in metrics["policies"]["rl"]
    assert set(metrics["win_rate_second_judge"]) == {"rl_vs_sft", "rl_vs_base", "sft_vs_base"}
    ci = metrics["intervals"]
    for judge in ("annotator", "second_judge"):
        wr = ci[f"win_rate/{judge}/rl_vs_sft"]
        assert 0.0 <= wr["low"] <= wr["estimate"] <= wr["high"] <= 1.0 and wr["method"] == "bootstrap"
    assert ci["win_rate/annotator/rl_vs_sft"]["estimate"] == metrics["win_rate"]["rl_vs_sft"]
    gain = ci["gain/rm/rl_minus_sft"]
    rl, sft = metrics["policies"]["rl"], metrics["policies"]["sft"]
    assert gain["estimate"] == pytest.approx(rl["rm_score"] - sft["rm_score"])
    assert "win_rate/rm/rl_vs_sft" not in ci  # RL optimised the RM: only its score difference is reported
    samples = read_csv(tiny_run / "evaluate" / "samples.csv")
    assert len(samples) == TINY_PRESET["evaluate"]["max_prompts"]
    assert {"prompt", "sft_response", "sft_annotator", "rl_response", "rl_rm", "rl_second_judge"} <= set(samples[0])
    assert (tiny_run / "evaluate" / "samples.md").read_text().startswith("| prompt |")


def test_plots_open_and_report_mentions_metrics(tiny_run):
    import matplotlib.image as mpimg

    pngs = sorted(p.name for p in (tiny_run / "plots").glob("*.png"))
    assert pngs == ["annotator_scores.png", "reward_model.png", "rl_training.png", "sft_loss.png"]
    for name in pngs:
        img = mpimg.imread(tiny_run / "plots" / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    report = (tiny_run / "report.md").read_text()
    for needle in (
        "RM score",
        "annotator score",
        "win rate",
        "KL",
        "distinct-1",
        "distinct-2",
        "perplexity",
        "plots/rl_training.png",
        "plots/reward_model.png",
        "plots/annotator_scores.png",
        "| base | SFT (RL start) | RL |",
        "## Samples",
    ):
        assert needle in report, needle


def test_every_stage_says_where_its_time_went(tiny_run):
    """Each stage's DONE.json has its phases (seconds, ``other`` = the rest), summing to its wall time, and
    report.md's stages table shows them."""
    from scripts.run_dir import STAGES, read_marker

    expected = {
        "sft": {"load", "data", "train", "save"},
        "preferences": {"load", "generate", "annotate"},
        "reward-model": {"load", "evaluate", "train", "normalize", "save"},
        "rl": {"setup", "generate", "rollout: reference, reward, env", "update", "checkpoint", "save"},
        "evaluate": {"generate", "logprobs", "reward_model", "annotator", "second_judge"},
    }
    report = (tiny_run / "report.md").read_text()
    for stage in STAGES:
        marker = read_marker(tiny_run, stage)
        phases = marker["phases"]
        assert expected[stage] | {"other"} == set(phases), stage
        assert all(v >= 0 for v in phases.values()), phases
        assert sum(phases.values()) == pytest.approx(marker["seconds"], abs=0.1 * len(phases) + 0.05), stage
    assert "| stage | summary | seconds | where the time went (s) |" in report
    assert "update " in report and "annotator " in report


def test_checkpoint_and_policy_load(tiny_run):
    import torch
    from safetensors.torch import load_file

    from scripts.stages.rl_checkpoint import read_state
    from textenv import load_model

    policy = load_model(str(tiny_run / "rl" / "policy"))
    assert policy(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == policy.config.vocab_size
    state = read_state(tiny_run / "rl" / "checkpoint")
    assert state["num_timesteps"] == TINY_PRESET["rl"]["total_timesteps"] and state["iteration"] == 4
    weights = load_file(tiny_run / "rl" / "checkpoint" / "policy.safetensors")
    assert float(weights["kl_beta"]) == pytest.approx(state["beta"])
    head = torch.load(tiny_run / "rl" / "policy" / "value_head.pt", weights_only=True)
    torch.testing.assert_close(weights["value_head.weight"], head["weight"])  # the export is the final checkpoint


# ----------------------------------------------------------------------------- kill and resume
def _wait_for(predicate, proc, timeout=240.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(
                f"pipeline exited (rc {proc.returncode}) before the condition was met:\n"
                f"{proc.stdout.read() if proc.stdout else ''}"
            )
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the RL checkpoint")


def test_sigkill_during_rl_then_resume(tiny_run, tmp_path):
    run_dir = tmp_path / "killed"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("rl", "evaluate", "plots", "report.md"))
    # 5 iterations, checkpoint every 2: the kill lands after the CSV has rows newer than the checkpoint.
    args = [
        sys.executable,
        "-m",
        "scripts.pipeline",
        "--tiny",
        "--run-dir",
        str(run_dir),
        "--resume",
        "--no-progress",
        "--rl.total-timesteps",
        "80",
        "--rl.checkpoint-every",
        "2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt, csv_path = run_dir / "rl" / "checkpoint" / "state.json", run_dir / "rl" / "progress.csv"

    def checkpoint_and_newer_row():
        try:  # the checkpoint folder is swapped atomically: it may vanish for an instant between two renames
            done = json.loads(ckpt.read_text())["iteration"]
        except FileNotFoundError:
            return False
        return len(read_csv(csv_path)) > done

    _wait_for(checkpoint_and_newer_row, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    saved = json.loads(ckpt.read_text())
    assert saved["iteration"] == 2 and not is_done(run_dir, "rl")
    assert len(read_csv(csv_path)) > 2  # rows after the checkpoint: they must be dropped, then redone once
    assert saved["beta"] != TINY_PRESET["rl"].get("kl_coef", RLConfig.kl_coef)  # the adaptive controller has moved beta

    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[sft] already done" in out.stdout and "resuming" in out.stdout
    rows = read_csv(csv_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["timesteps"]) for r in rows] == [16, 32, 48, 64, 80]
    # the first resumed rollout used the checkpoint's beta, not the initial kl_coef
    assert float(rows[2]["rlhf/beta"]) == pytest.approx(saved["beta"], rel=1e-9)
    for stage in STAGES:
        assert is_done(run_dir, stage), stage
    assert (run_dir / "report.md").is_file() and (run_dir / "rl" / "policy" / "config.json").is_file()


# ----------------------------------------------------------------------------- config
def test_unknown_yaml_key_is_rejected_with_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rl:\n  total_timestep: 10\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['total_timestep'\] in section 'rl'.*total_timesteps"):
        load_yaml(path)
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['policy'\].*reward_model"):
        check_layer({"policy": {}}, "x.yaml")


def test_unknown_yaml_key_exits_from_the_command_line(tmp_path, capsys):
    from scripts.pipeline import resolve_config

    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  epoch: 3\n")
    with pytest.raises(SystemExit) as exc:
        resolve_config(["--config", str(path)])
    assert exc.value.code == 2
    assert "valid keys" in capsys.readouterr().err


def test_precedence_defaults_tiny_yaml_cli(tmp_path, monkeypatch):
    from scripts.pipeline import resolve_config

    monkeypatch.chdir(tmp_path)  # the default --run-dir is relative: a runs/default/config.yaml there is a layer

    path = tmp_path / "c.yaml"
    path.write_text("run:\n  seed: 7\nrl:\n  n_envs: 3\n  total_timesteps: 32\nsft:\n  epochs: 5\n")
    cfg = resolve_config(["--tiny", "--config", str(path), "--rl.n-envs", "5", "--stages", "sft,rl"])
    assert cfg.rl.n_envs == 5  # CLI beats YAML
    assert cfg.rl.total_timesteps == 32 and cfg.sft.epochs == 5 and cfg.run.seed == 7  # YAML beats tiny/defaults
    assert cfg.rl.n_steps == TINY_PRESET["rl"]["n_steps"]  # tiny beats defaults
    assert cfg.reward_model.backbone == "minilm" and cfg.run.stages == ["sft", "rl"]  # untouched defaults
    plain = resolve_config([])
    assert plain.rl == RLConfig() and plain.run.model == "smollm2-135m-instruct" and plain.run.algo == DEFAULT_ALGO


def test_bad_stage_and_build_config_checks(capsys):
    from scripts.pipeline import resolve_config

    with pytest.raises(SystemExit):
        resolve_config(["--stages", "sft,train"])
    assert "valid stages" in capsys.readouterr().err
    with pytest.raises(ValueError, match="valid keys"):
        build_config({"evaluate": {"n": 1}})


def test_atomic_dir_keeps_old_folder_on_error(monkeypatch, tmp_path):
    monkeypatch.setattr("textrlhf.atomic._free_bytes", lambda folder: 10 * 2**30)  # not a full disk
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary leftovers
    atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").read_text() == "x" and len(list(tmp_path.iterdir())) == 2


def test_a_full_disk_is_a_folder_write_error_that_keeps_the_old_folder(monkeypatch, tmp_path):
    """torch.save reports a full disk as a RuntimeError: below LOW_DISK_BYTES free any failure is a write error."""
    import errno

    from textrlhf.atomic import LOW_DISK_BYTES, FolderWriteError

    target = tmp_path / "checkpoint"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    free = {"bytes": 3 * 2**20}
    monkeypatch.setattr("textrlhf.atomic._free_bytes", lambda folder: free["bytes"])
    with pytest.raises(
        FolderWriteError,
        match=r"could not write .*checkpoint \(RuntimeError: unexpected pos.*3 MiB free.*"
        r"the previous checkpoint is untouched",
    ) as info:
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("unexpected pos 807199936 vs 807199828")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(FolderWriteError, match="no fresh was written"):  # ENOSPC is one whatever the space
        free["bytes"] = 10 * LOW_DISK_BYTES
        with atomic_dir(tmp_path / "fresh"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(FileNotFoundError):  # not a full disk: stays what it was
        with atomic_dir(target):
            raise FileNotFoundError(errno.ENOENT, "a missing source file")
    with pytest.raises(KeyError):  # another failure with room on the disk stays what it was
        with atomic_dir(target):
            raise KeyError("a bug, not the disk")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temporary leftovers


def test_the_pipeline_reports_a_full_disk_in_one_line(monkeypatch, capsys):
    import errno

    import scripts.pipeline as pipeline

    def full_disk(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/preferences/pairs.jsonl")

    monkeypatch.setattr(pipeline, "_run", full_disk)
    assert pipeline.main(["--tiny", "--run-dir", "runs/never-written"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("textrlhf: error: [Errno 28] No space left on device") and "--resume" in err
    assert err.count("\n") == 1


# ----------------------------------------------------------------------------- stage pieces
def test_sft_masks_prompt_tokens_and_best_of_n_picks_the_annotators_favourite():
    import numpy as np

    from reward_models import make_reward
    from reward_models.annotator import sample_responses
    from scripts.stages.common import make_text_env
    from scripts.stages.sft import best_of_n_demonstrations, tokenize_demonstrations
    from textenv import load_model, load_tokenizer

    cfg = build_config(TINY_PRESET, {"sft": {"max_examples": 3, "best_of_n": 3}, "run": {"progress": False}})
    model, tok = load_model("tiny"), load_tokenizer("tiny")
    rows = best_of_n_demonstrations(cfg, model, tok)
    assert len(rows) == 3 and all(r["response"] for r in rows)
    groups = sample_responses(
        model,
        tok,
        [r["prompt"] for r in rows],
        n=3,
        temperature=cfg.sft.best_of_n_temperature,
        max_new_tokens=cfg.run.max_new_tokens,
        seed=cfg.run.seed,
        progress=False,
    )
    annotator = make_reward(cfg.run.annotator)
    for row, group in zip(rows, groups):  # same seed, same samples: the chosen one has the best annotator score
        scores = annotator.score([row["prompt"]] * len(group), group)
        assert row["response"] in group and annotator.score([row["prompt"]], [row["response"]])[0] == np.max(scores)

    rows = [{"prompt": "The film was", "response": " wonderful and warm."}]
    env = make_text_env(cfg, "tiny", [r["prompt"] for r in rows])
    (ex,) = tokenize_demonstrations(rows, env, tok, append_eos=True, max_response_tokens=16)
    n_prompt = len(env.encode_prompt("The film was"))
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:] and ex["labels"][-1] == tok.eos_token_id


def test_a_stage_without_its_inputs_names_the_command(tmp_path):
    from scripts.run_dir import require

    with pytest.raises(FileNotFoundError, match=r"--stages sft"):
        require(tmp_path, "sft", "rl")
