"""rl-baselines3-zoo trains an LM policy on TextRLHF-v0 with the KL penalty (issue 17).

A zoo YAML can name ``agents.LMActorCriticPolicy`` but not the KL rollout buffer class, so it trained
with no KL penalty and no warning. ``configs/zoo/<algo>.py`` sets both, and the ``agents.BindKLBuffer``
callback that binds the buffer to the algorithm the zoo builds; this runs the zoo's own
``rl_zoo3.train`` on them, as a user would, on the tiny model.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rl_zoo3  # noqa: F401  (the `zoo` extra, installed by `make setup`: a missing zoo fails here, never skips)

ROOT = Path(__file__).resolve().parents[2]


def _zoo_train(algo: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Offline like the test process (tests/conftest.py), and the tiny model for env and policy alike.
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TEXTRLHF_ZOO_MODEL="tiny",
    )
    cmd = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        algo,
        "--env",
        "TextRLHF-v0",
        "--gym-packages",
        "textenv",
        "-conf",
        str(ROOT / "configs" / "zoo" / f"{algo}.py"),
        "--seed",
        "0",
        "--num-threads",
        "2",
        "--eval-freq",
        "-1",  # no eval env: the rlhf/* metrics are the point
        "-f",
        str(tmp_path / "logs"),
        "-tb",
        str(tmp_path / "tb"),
        *extra,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _logged_scalars(tb_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = glob.glob(str(tb_dir / "**" / "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(events)
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_zoo_ppo_trains_with_the_kl_penalty(tmp_path):
    # 2 envs x 12 steps = one whole 12-token episode per env per rollout; two rollouts, two updates.
    out = _zoo_train("ppo", tmp_path, "-n", "48", "-params", "n_envs:2", "n_steps:12", "batch_size:24")
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "NoKLPenaltyWarning" not in log
    keys = _logged_scalars(tmp_path / "tb")
    assert {"rlhf/kl", "rlhf/score", "rlhf/beta", "train/approx_kl"} <= keys, sorted(keys)
    assert glob.glob(str(tmp_path / "logs" / "ppo" / "TextRLHF-v0_1" / "TextRLHF-v0.zip"))  # the zoo saved it


@pytest.mark.parametrize("algo", ["a2c", "trpo"])
def test_zoo_configs_of_the_other_algorithms_build_an_lm_agent_with_the_kl_buffer(algo, monkeypatch):
    """The a2c/trpo files are valid hyperparameters for their SB3 classes (built, not trained: seconds)."""
    from rl_zoo3.utils import ALGOS, get_class_by_name

    import agents

    monkeypatch.setenv("TEXTRLHF_ZOO_MODEL", "tiny")
    namespace: dict = {}
    exec((ROOT / "configs" / "zoo" / f"{algo}.py").read_text(), namespace)  # as the zoo reads it
    params = dict(namespace["hyperparams"]["TextRLHF-v0"])
    # The zoo hands `callback` to learn(), not to the constructor; it binds the KL buffer to the algorithm.
    assert params.pop("callback") == "agents.BindKLBuffer"
    env = agents.make_vec_text_env(params.pop("n_envs"), **params.pop("env_kwargs"))
    params.pop("n_timesteps")
    policy = get_class_by_name(params.pop("policy"))
    model = ALGOS[algo](policy, env, **params)
    assert isinstance(model.policy, agents.LMActorCriticPolicy) and model.policy.model_name == "tiny"
    assert isinstance(model.rollout_buffer, agents.KLRolloutBuffer)
