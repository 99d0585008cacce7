"""rl-baselines3-zoo hyperparameters: PPO on TextRLHF-v0 with an LM policy and the KL penalty.

    python -m rl_zoo3.train --algo ppo --env TextRLHF-v0 --gym-packages textenv \
        -conf configs/zoo/ppo.py --eval-freq -1 -tb runs/zoo-tb

A python file, not a YAML: the zoo turns a dotted ``policy`` string into a class, but passes
``rollout_buffer_class`` to SB3 untouched, so only python can hand it the KL buffer class. Without that
buffer nothing adds the KL penalty (the policy then warns: ``agents.NoKLPenaltyWarning``). The zoo
keys a file by env id, not by algorithm, and the algorithms take different options (A2C has no
``n_epochs``), hence one file per algorithm, like the zoo's own ``hyperparams/<algo>.yml``.

The budget follows the measured CPU run in docs/results/2026-11-22-generic-sb3-path.md (SmolLM2-135M on 2
cores, the same sizes with 12-token prompts: 4 rollouts of 8 envs x 24 tokens, each about 5 s of generation
and 60 s of update); 20 prompt tokens keep every bundled prompt whole. ``TEXTRLHF_ZOO_MODEL=tiny`` switches
env and policy together to the random test model (the tests); ``-params`` / ``-n`` / ``--env-kwargs``
override single values (``--env-kwargs`` replaces the whole ``env_kwargs`` dict, as the zoo does). """

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
        n_timesteps=768,  # generated tokens over all envs: 4 rollouts
        policy="agents.LMActorCriticPolicy",  # the zoo imports dotted names
        policy_kwargs=dict(model=MODEL, temperature=0.7),
        rollout_buffer_class=KLRolloutBuffer,  # the KL penalty; a class, which a YAML cannot give
        rollout_buffer_kwargs=asdict(KLConfig()),  # the library's KL options (beta, adaptive controller, ...)
        callback="agents.BindKLBuffer",  # the zoo passes it to learn(): binds that buffer to the algorithm it built
        n_steps=24,  # 2 x max_new_tokens: every rollout ends at least one episode per env
        # One epoch, one full-batch minibatch: an update costs n_epochs x n_steps x n_envs window
        # forwards on CPU, and with one Adam step per rollout lr 1e-4 is what moves SmolLM2
        # (docs/design.md section 5; agents.make_agent("ppo") uses 4 x 4 steps at 3e-5).
        n_epochs=1,
        batch_size=192,
        learning_rate=1e-4,
        gamma=1.0,  # one score per episode, short horizon (lm-human-preferences, TRL)
        gae_lambda=0.95,
        normalize_advantage=True,
        clip_range=0.2,
        ent_coef=0.0,  # the KL to the reference, not an entropy bonus, keeps the policy diverse
        vf_coef=0.1,  # the value loss shares the LM trunk and must not dominate it
        max_grad_norm=1.0,
    ),
}
