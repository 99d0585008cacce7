"""Lock-step, KV-cached rollouts of whole episodes through the ``TextRLHF-v0`` env API.

The fast agents (:class:`agents.rlhf_ppo.RLHFPPO` and the critic-free ones) collect *rounds*: every
row of a :class:`textenv.TextRLHFVectorEnv` runs exactly one episode, all rows in lock-step. Each step
is one batched forward of one new token per row against a KV cache (prefilled once with the prompts),
so a rollout costs what Hugging Face ``generate`` costs (docs/design.md section 4), and ONE
``vector_env.step`` call per token moves every row: the env stays the source of truth for termination
and reward, and scores the episodes that end at a step in one batched reward call.

The vector env never auto-resets (``AutoresetMode.DISABLED``): rows that finished early stay finished
(idle) while the others generate, and the next round resets them all. Finished rows stay in the batch
(fed a pad token, like ``generate`` does) so the cache never needs re-packing. Whatever VecEnv an agent
holds, :func:`agents.vec_env.text_vector_env` gives the vector env to step.

Everything is returned right-aligned: column ``j`` of a ``(n, T)`` tensor is position ``L - T + j``
of the final observation (``L`` = window length, ``T`` = ``max_new_tokens``), because the final
observation of an episode is exactly ``[padding, prompt, response]`` with the response at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from agents.policy import LMActorCriticPolicy
from agents.vec_env import merge_row_options, monitor_info, row_infos, text_vector_env
from textrlhf.lm import sample_tokens
from textrlhf.threads import decode_threads, intra_op_threads


@dataclass
class EpisodeBatch:
    """Finished episodes, right-aligned (see the module docstring).

    Attributes:
        input_ids: ``(n, L)`` final observation of each episode: left-padded prompt + response.
        attention_mask: ``(n, L)``.
        mask: ``(n, T)`` 1.0 on response tokens (a suffix of each row).
        logp: ``(n, T)`` log-prob of each token under the rollout policy (at its temperature).
        values: ``(n, T)`` value estimate before each token.
        scores: ``(n,)`` the env's final reward (reward-model score) of each episode.
        prompts, responses: texts from the env's final ``info``.
        prompt_index: ``(n,)`` the env's prompt index (``-1`` for custom prompts).
        env_index: ``(n,)`` which env produced each episode.
        ref_logp, rewards, advantages, returns: ``(n, T)`` filled in by the agent after the rollout.
        logp_from_update: ``logp`` is to be replaced by the update's own first forward (a low-precision
            one-pass update, :meth:`agents.sequence_agent.SequenceAgent._update_is_the_rescoring`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    prompts: list[str]
    responses: list[str]
    prompt_index: np.ndarray
    env_index: np.ndarray
    extras: dict = field(default_factory=dict)
    ref_logp: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    logp_from_update: bool = False

    @property
    def n(self) -> int:
        return self.input_ids.shape[0]

    @property
    def horizon(self) -> int:
        return self.mask.shape[1]

    @property
    def response_mask(self) -> torch.Tensor:
        """``(n, L)`` bool: True on response tokens of ``input_ids``."""
        out = torch.zeros_like(self.attention_mask, dtype=torch.bool)
        out[:, -self.horizon :] = self.mask.bool()
        return out

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    @staticmethod
    def concat(batches: list[EpisodeBatch]) -> EpisodeBatch:
        """Join rounds into one batch (tensors concatenated along episodes)."""
        if len(batches) == 1:
            return batches[0]

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(b, name) for b in batches])

        return EpisodeBatch(
            cat("input_ids"),
            cat("attention_mask"),
            cat("mask"),
            cat("logp"),
            cat("values"),
            cat("scores"),
            [p for b in batches for p in b.prompts],
            [r for b in batches for r in b.responses],
            np.concatenate([b.prompt_index for b in batches]),
            np.concatenate([b.env_index for b in batches]),
            extras={k: np.concatenate([b.extras[k] for b in batches]) for k in batches[0].extras},
        )


def _check_env(env) -> None:
    """Refuse, with a ``TypeError``, an env the fast agents cannot step as a ``TextRLHFVectorEnv``."""
    if not isinstance(env, VecEnv):
        raise TypeError(
            f"fast agents need a VecEnv of TextRLHF-v0 envs (agents.make_vec_text_env), got {type(env).__name__}"
        )
    text_vector_env(env)


def _reset_round(venv, reset_options: list[dict | None] | None, group_size: int) -> dict[str, np.ndarray]:
    """Reset every row for a new round; rows ``[g*k, (g+1)*k)`` get the prompt their group's first row drew.

    Returns the observation, ``(n, L)`` arrays.
    """
    n = venv.num_envs
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size {group_size} must divide the number of envs ({n})")
    options = list(reset_options or [None] * n)
    if len(options) != n:
        raise ValueError(f"reset_options has {len(options)} entries for {n} envs; give one per env (or None)")
    followers = np.array([group_size > 1 and i % group_size > 0 and options[i] is None for i in range(n)])
    first = {"reset_mask": ~followers} if followers.any() else {}
    obs, infos = venv.reset(options={**first, **merge_row_options(options)} if any(options) or first else None)
    if followers.any():  # the group's first rows drew their prompts: reset the others onto them
        lead = row_infos(infos, n)
        for i in np.flatnonzero(followers):
            info = lead[i - i % group_size]
            options[i] = (
                {"prompt_index": info["prompt_index"]} if info["prompt_index"] >= 0 else {"prompt": info["prompt"]}
            )
        row_options = merge_row_options([o if f else None for o, f in zip(options, followers)])
        obs, _ = venv.reset(options={"reset_mask": followers, **row_options})
    return obs


@torch.no_grad()
def collect_round(
    policy,
    env,
    reset_options: list[dict | None] | None = None,
    on_step: Callable[[int, list[dict]], bool] | None = None,
    group_size: int = 1,
) -> tuple[EpisodeBatch, bool]:
    """Run one episode in every row of ``env`` in lock-step, sampling from ``policy``.

    Args:
        policy: an LM policy (:class:`agents.LMActorCriticPolicy`): its ``rollout_cache()`` gives the
            tempered (and restricted) logits and the values of every step, KV-cached.
        env: a :class:`textenv.TextRLHFVectorEnv`, or a VecEnv holding one (:func:`agents.make_vec_text_env`);
            see :func:`agents.vec_env.text_vector_env`.
        reset_options: per-row ``reset`` options (e.g. ``{"prompt_index": i}`` to sample groups).
        on_step: called after every lock-step step with ``(n_rows_stepped, finished_infos)`` (each
            finished episode's ``info`` with SB3 ``Monitor``'s ``"episode"``); returning ``False``
            stops the rollout (SB3 callback semantics).
        group_size: rows ``[g*k, (g+1)*k)`` answer the same prompt: the first row of each group
            draws it with its own generator, the others are reset onto it
            (``reset(options={"prompt_index": ...})``), so groups are sampled through the env API.

    Returns:
        ``(batch, keep_going)``.
    """
    venv = text_vector_env(env)
    obs = _reset_round(venv, reset_options, group_size)
    device = policy.device
    ids = torch.as_tensor(obs["input_ids"]).long().to(device)  # (n, L)
    mask = torch.as_tensor(obs["attention_mask"]).long().to(device)  # (n, L)
    # A reset window is [padding, prompt], with at least max_new_tokens padding columns that every row
    # shares: they carry nothing, and prefilling them tripled the prefill's cost (34 columns instead of
    # 10 in the benchmark's 10 + 24 window), so the cache starts at the first column any row uses.
    first = int(mask.any(0).to(torch.int8).argmax())
    steps, keep_going = _generate(policy, venv, ids[:, first:], mask[:, first:], on_step)
    return _assemble(steps, venv.config.max_new_tokens), keep_going


def _generate(policy, venv, ids: torch.Tensor, mask: torch.Tensor, on_step) -> tuple[dict, bool]:
    """The lock-step loop: one batched KV-cached forward and ONE ``venv.step`` per token."""
    # One autocast context around the whole loop (bf16 policies): autocast keeps its bf16 copy of each weight
    # until the outermost context exits, so the weights are cast once per rollout, not once per token; the
    # env's step (and its reward model) runs outside it (docs/results/2026-12-02-bf16-rollouts.md). Where the
    # CPU packs bf16 weights, the LM's linear layers use copies packed once per round instead (0.15-0.18 s for
    # SmolLM2-135M, less than one round of 8 rows saves: docs/results/2026-12-02-decode-threads.md).
    with policy.autocast(), policy.decode_weights(ids.shape[0]):
        return _lock_step(policy, venv, ids, mask, on_step)


def _lock_step(policy, venv, ids: torch.Tensor, mask: torch.Tensor, on_step) -> tuple[dict, bool]:
    """:func:`_generate`'s loop, in the policy's precision."""
    n, T, pad, device = venv.num_envs, int(venv.config.max_new_tokens), int(venv.pad_token_id), policy.device
    step_precision = torch.autocast(device.type, enabled=False) if policy.precision != "fp32" else nullcontext()
    # The decode forwards may run on fewer intra-op threads than the env's reward (textrlhf.threads).
    threads = decode_threads(policy.decode_threads, policy.precision, device)
    cache = policy.rollout_cache()  # the policy's KV cache (textrlhf.lm.KVCache on its trunks)
    with intra_op_threads(threads):
        logits, value = cache.prefill(ids, mask)  # (n, V) tempered logits, (n,) values
    tokens = torch.full((n, T), pad, dtype=torch.long)  # left-aligned during the loop
    logps, values = torch.zeros((n, T)), torch.zeros((n, T))
    lengths = np.zeros(n, dtype=np.int64)
    finals: list[tuple | None] = [None] * n
    active = np.ones(n, dtype=bool)
    keep_going, t_start = True, time.time()
    for t in range(T):
        action, logp = sample_tokens(logits)  # (n,), (n,); the rollouts' inverse-CDF draw, global stream
        rows = np.flatnonzero(active)
        with step_precision:  # the env's reward keeps its own precision, whatever the policy's
            obs, reward, terminated, truncated, infos = venv.step(action.cpu().numpy())  # finished rows idle
        tokens[rows, t], logps[rows, t], values[rows, t] = action.cpu()[rows], logp.cpu()[rows], value.cpu()[rows]
        lengths[rows] += 1
        ended = np.flatnonzero((terminated | truncated) & active)
        per_row = row_infos(infos, n) if len(ended) else []
        for i in ended:
            info = {**per_row[i], "episode": monitor_info(reward[i], lengths[i], t_start)}
            finals[i] = ({k: v[i] for k, v in obs.items()}, float(reward[i]), info)
        active[ended] = False
        if on_step is not None and on_step(len(rows), [finals[i][2] for i in ended]) is False:
            keep_going = False
        if not active.any() or not keep_going:
            break
        feed = torch.where(torch.as_tensor(active, device=device), action.to(device), torch.full_like(action, pad))
        with intra_op_threads(threads):
            logits, value = cache.extend(feed)
    if active.any() and keep_going:
        raise RuntimeError(f"envs {np.flatnonzero(active).tolist()} did not end within max_new_tokens={T}")
    return {"tokens": tokens, "logps": logps, "values": values, "lengths": lengths, "finals": finals}, keep_going


def _assemble(steps: dict, T: int) -> EpisodeBatch | None:
    """The finished episodes of a round as a right-aligned :class:`EpisodeBatch` (``None`` if none)."""
    finals, lengths = steps["finals"], steps["lengths"]
    keep = np.array([i for i, f in enumerate(finals) if f is not None], dtype=np.int64)
    if not len(keep):
        return None

    # Right-align: column j <-> position L - T + j of the final observation.
    def right(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((len(keep), T), dtype=x.dtype)
        for row, i in enumerate(keep):
            out[row, T - lengths[i] :] = x[i, : lengths[i]]
        return out

    resp_mask = torch.zeros((len(keep), T))
    for row, i in enumerate(keep):
        resp_mask[row, T - lengths[i] :] = 1.0
    batch = EpisodeBatch(
        input_ids=torch.as_tensor(np.stack([finals[i][0]["input_ids"] for i in keep])).long(),
        attention_mask=torch.as_tensor(np.stack([finals[i][0]["attention_mask"] for i in keep])).long(),
        mask=resp_mask,
        logp=right(steps["logps"]),
        values=right(steps["values"]),
        scores=torch.tensor([finals[i][1] for i in keep], dtype=torch.float32),
        prompts=[finals[i][2]["prompt"] for i in keep],
        responses=[finals[i][2]["response"] for i in keep],
        prompt_index=np.array([finals[i][2]["prompt_index"] for i in keep]),
        env_index=keep.copy(),
    )
    # The env is the source of truth: its final window must end with exactly the tokens we sampled.
    tail = batch.input_ids[:, -T:]
    if not torch.equal(tail[batch.mask.bool()], right(steps["tokens"])[batch.mask.bool()]):
        raise RuntimeError("the env's observations disagree with the sampled tokens; is a wrapper changing actions?")
    return batch


def sequence_forward(
    policy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    horizon: int,
    entropy: bool = True,
    entropy_grad: bool = True,
):
    """Log-probs, values (and entropies) of the last ``horizon`` tokens of each row, in ONE forward.

    The sequence-level counterpart of SB3's per-transition ``evaluate_actions``: one teacher-forced
    pass over ``(batch, L)`` gives every response token's log-prob and value (docs/design.md section 4, (c)).
    The policy does the work (:meth:`agents.lm_model.LMPolicyModel.sequence_outputs`); values are zeros
    for a policy built with ``value_head=False``.

    Args:
        entropy: also return each position's entropy.
        entropy_grad: keep the entropy in the autograd graph; ``False`` (an update with no entropy
            bonus, which logs it only) saves two ``(batch, horizon, V)`` tensors and their backward.

    Returns:
        ``(logp, values, entropy)``, each ``(batch, horizon)`` (``entropy`` is ``None`` if not asked).
    """
    return policy.sequence_outputs(input_ids, attention_mask, horizon, entropy=entropy, entropy_grad=entropy_grad)


def checked_policy(agent_name: str, policy: type | str, env, init_setup_model: bool) -> type:
    """The policy class, after the checks every sequence-level agent makes on ``policy`` and ``env``.

    Raises:
        TypeError: not an :class:`agents.LMActorCriticPolicy`, or no env where one is needed.
    """
    if policy == "LMActorCriticPolicy":
        policy = LMActorCriticPolicy
    if not (isinstance(policy, type) and issubclass(policy, LMActorCriticPolicy)):
        raise TypeError(f"{agent_name} drives agents.LMActorCriticPolicy (or a subclass), got {policy!r}")
    if env is not None:
        _check_env(env)
    elif init_setup_model:
        raise TypeError(
            f"{agent_name} needs a VecEnv of TextRLHF-v0 envs (agents.make_vec_text_env); "
            f"without one, use {agent_name}.load(path) to predict with a saved agent"
        )
    return policy


def episode_budget(env, n_steps: int | None, batch_size: int | None) -> tuple[int, int]:
    """``(horizon, n_steps)``: tokens per episode and per env per rollout (``env=None``: from ``load``).

    Raises:
        ValueError: ``n_steps`` or ``batch_size`` below 1.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size counts episodes and must be >= 1 (or None for all), got {batch_size}")
    # env=None comes from load(), which then restores horizon, n_steps, n_rounds... from the file.
    horizon = int(env.get_attr("config", indices=[0])[0].max_new_tokens) if env is not None else 1
    n_steps = horizon if n_steps is None else int(n_steps)
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return horizon, n_steps
