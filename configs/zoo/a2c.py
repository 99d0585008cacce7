"""rl-baselines3-zoo hyperparameters: A2C on TextRLHF-v0 with an LM policy and the KL penalty.

    python -m rl_zoo3.train --algo a2c --env TextRLHF-v0 --gym-packages textenv \
        -conf configs/zoo/a2c.py --eval-freq -1 -tb runs/zoo-tb

Why a python file and one per algorithm: see ``configs/zoo/ppo.py``. Same env and budget as there;
the options are those of ``agents.make_agent("a2c")``. ``TEXTRLHF_ZOO_MODEL=tiny`` switches env and
policy to the random test model.
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
        policy_kwargs=dict(model=MODEL, temperature=0.7),
        rollout_buffer_class=KLRolloutBuffer,  # the KL penalty; a class, which a YAML cannot give
        rollout_buffer_kwargs=asdict(KLConfig()),  # the library's KL options (beta, adaptive controller, ...)
        callback="agents.BindKLBuffer",  # the zoo passes it to learn(): binds that buffer to the algorithm it built
        n_steps=24,  # 2 x max_new_tokens: every rollout ends at least one episode per env
        learning_rate=1e-4,  # one Adam step per rollout (docs/design.md section 5)
        use_rms_prop=False,  # SB3's A2C defaults to RMSprop; Adam is the standard for LM fine-tuning
        gamma=1.0,
        gae_lambda=0.95,
        normalize_advantage=True,
        ent_coef=0.0,
        vf_coef=0.1,
        max_grad_norm=1.0,
    ),
}
