"""rl-baselines3-zoo hyperparameters: TRPO (sb3-contrib) on TextRLHF-v0 with an LM policy and the KL penalty.

    python -m rl_zoo3.train --algo trpo --env TextRLHF-v0 --gym-packages textenv \
        -conf configs/zoo/trpo.py --eval-freq -1 -tb runs/zoo-tb

Why a python file and one per algorithm: see ``configs/zoo/ppo.py``. Same env and budget as there;
the options are those of ``agents.make_agent("trpo")`` with one critic pass per rollout. The zoo's
``trpo`` is sb3-contrib's ``TRPO``: the same update as ``agents.make_agent("trpo")`` (``agents.trpo.LMTRPO``),
but it takes two backward passes per parameter tensor for the actor gradient, so it is the slowest
choice on a CPU. ``TEXTRLHF_ZOO_MODEL=tiny`` switches env and policy to the random test model.
"""

import os
from dataclasses import asdict

from agents.buffers import KLRolloutBuffer
from agents.kl import KLConfig

# Env and policy must use the same LM (the policy's head is the action space): one switch sets both.
MODEL = os.environ.get("TEXTRLHF_ZOO_MODEL", "smollm2-135m-instruct")

hyperparams = {
    "TextRLHF-v0": dict(
        env_kwargs=dict(model=MODEL, reward="sentiment", max_new_tokens=12, max_prompt_tokens=20),
        n_envs=8,
        n_timesteps=768,  # generated tokens over all envs: 4 rollouts, 4 updates
        policy="agents.LMActorCriticPolicy",  # the zoo imports dotted names
        # Eager attention: TRPO's Hessian-vector products need a double backward, which PyTorch's fused
        # CPU attention kernel lacks.
        policy_kwargs=dict(model=MODEL, temperature=0.7, attn_implementation="eager"),
        rollout_buffer_class=KLRolloutBuffer,  # the KL penalty; a class, which a YAML cannot give
        rollout_buffer_kwargs=asdict(KLConfig()),  # the library's KL options (beta, adaptive controller, ...)
        callback="agents.BindKLBuffer",  # the zoo passes it to learn(): binds that buffer to the algorithm it built
        n_steps=24,  # 2 x max_new_tokens: every rollout ends at least one episode per env
        learning_rate=1e-4,  # the critic's only: the actor step is set by target_kl
        target_kl=0.01,
        cg_max_steps=10,
        n_critic_updates=1,  # each critic pass is a full-window forward+backward per transition
        batch_size=192,
        gamma=1.0,
        gae_lambda=0.95,
        normalize_advantage=True,
    ),
}
