"""Lock-step, KV-cached rollouts of whole episodes through the ``TextRLHF-v0`` env API.

The fast agents (:class:`agents.rlhf_ppo.RLHFPPO` and the critic-free ones) collect *rounds*: every
env of a VecEnv runs exactly one episode, all envs in lock-step. Each step is one batched forward of
one new token per env against a KV cache (prefilled once with the prompts), so a rollout costs what
Hugging Face ``generate`` costs (docs/design.md section 4), while every token still goes through
``env.step``: the env stays the source of truth for termination and reward.

The sub-envs are stepped individually (``VecEnv.env_method``), because envs that finished early
must not be auto-reset into a new episode while the others are still generating. Finished rows stay
in the batch (fed a pad token, like ``generate`` does) so the cache never needs re-packing.

Everything is returned right-aligned: column ``j`` of a ``(n, T)`` tensor is position ``L - T + j``
of the final observation (``L`` = window length, ``T`` = ``max_new_tokens``), because the final
observation of an episode is exactly ``[padding, prompt, response]`` with the response at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.cache import cache_kwargs, output_cache, position_ids_from_mask


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
        out[:, -self.horizon:] = self.mask.bool()
        return out

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    @staticmethod
    def concat(batches: list["EpisodeBatch"]) -> "EpisodeBatch":
        """Join rounds into one batch (tensors concatenated along episodes)."""
        if len(batches) == 1:
            return batches[0]
        cat = lambda name: torch.cat([getattr(b, name) for b in batches])  # noqa: E731
        return EpisodeBatch(
            cat("input_ids"), cat("attention_mask"), cat("mask"), cat("logp"), cat("values"), cat("scores"),
            [p for b in batches for p in b.prompts], [r for b in batches for r in b.responses],
            np.concatenate([b.prompt_index for b in batches]), np.concatenate([b.env_index for b in batches]),
            extras={k: np.concatenate([b.extras[k] for b in batches]) for k in batches[0].extras},
        )


class _TrunkStepper:
    """Prefill once, then extend by one token per step, for one decoder trunk (batched)."""

    def __init__(self, trunk):
        self.trunk = trunk

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        self.mask = mask  # (n, L)
        self.next_pos = mask.sum(-1, keepdim=True)  # (n, 1): position of the next token
        out = self.trunk(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                         use_cache=True, **cache_kwargs(DynamicCache()))
        self.cache = output_cache(out)
        return out.last_hidden_state[:, -1]  # (n, hidden)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)  # (n, C + 1)
        out = self.trunk(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_pos,
                         use_cache=True, **cache_kwargs(self.cache))
        self.cache = output_cache(out)
        self.next_pos = self.next_pos + 1
        return out.last_hidden_state[:, -1]


def _check_env(env) -> None:
    if not isinstance(env, VecEnv):
        raise TypeError(f"fast agents need a VecEnv of TextRLHF-v0 envs (agents.make_vec_text_env), got {type(env).__name__}")
    if isinstance(env, VecEnvWrapper):
        raise TypeError(
            f"fast agents step the sub-envs directly, so VecEnv wrappers ({type(env).__name__}) would be "
            f"bypassed; pass the plain DummyVecEnv/SubprocVecEnv (env wrappers such as Monitor are fine)"
        )


def sample_tokens(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row from ``softmax(logits)``; return ``(tokens, log_probs)``, each ``(batch,)``.

    Exact inverse-CDF sampling: token ``i`` is drawn when ``cdf[i-1] <= u < cdf[i]``, which has
    probability ``p_i`` and never picks a token of probability 0 (masked logits). The same distribution
    as ``torch.multinomial`` (what ``Categorical.sample`` and ``generate`` use), which draws a random
    number per vocabulary entry: over SmolLM2's 49152 tokens on this 2-core CPU this takes 7 ms for 32
    rows against 42 ms (``python -m scripts.benchmark`` reports the effect on whole rollouts).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (batch, V)
    cdf = logp.exp().double().cumsum(-1)  # float64, so 49152 summed terms do not drift
    u = torch.rand((cdf.shape[0], 1), dtype=torch.float64, device=cdf.device) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _shared_prefetch_reward(env: VecEnv):
    """The :class:`reward_models.PrefetchReward` every sub-env scores with, if they share one in this
    process (``make_vec_text_env`` does); ``None`` otherwise (sub-processes score on their own)."""
    from reward_models import PrefetchReward

    fns = env.get_attr("reward_fn")
    if isinstance(fns[0], PrefetchReward) and all(f is fns[0] for f in fns):
        fns[0].clear()
        return fns[0]
    return None


@torch.no_grad()
def collect_round(
    policy,
    env: VecEnv,
    reset_options: list[dict | None] | None = None,
    on_step: Callable[[int, list[dict]], bool] | None = None,
    group_size: int = 1,
) -> tuple[EpisodeBatch, bool]:
    """Run one episode in every env of ``env`` in lock-step, sampling from ``policy``.

    Args:
        policy: an LM policy (:class:`agents.LMActorCriticPolicy`): its ``lm`` trunk, ``action_logits``
            (temperature and allowed tokens) and value head are used.
        env: a VecEnv of ``TextRLHF-v0`` envs.
        reset_options: per-env ``reset(options=...)`` (e.g. ``{"prompt_index": i}`` to sample groups).
        on_step: called after every lock-step step with ``(n_active_envs_stepped, finished_infos)``;
            returning ``False`` stops the rollout (SB3 callback semantics).
        group_size: envs ``[g*k, (g+1)*k)`` answer the same prompt: the first env of each group
            draws it with its own ``np_random``, the others are reset onto it
            (``reset(options={"prompt_index": ...})``), so groups are sampled through the env API.

    Returns:
        ``(batch, keep_going)``.
    """
    _check_env(env)
    n = env.num_envs
    device = policy.device
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size {group_size} must divide the number of envs ({n})")
    options = list(reset_options or [None] * n)
    resets: list[tuple] = []
    for i in range(n):
        if group_size > 1 and i % group_size and options[i] is None:
            lead = resets[i - i % group_size][1]  # info of the group's first env
            options[i] = {"prompt_index": lead["prompt_index"]} if lead["prompt_index"] >= 0 else {"prompt": lead["prompt"]}
        resets.append(env.env_method("reset", indices=[i], options=options[i])[0])
    ids = torch.as_tensor(np.stack([o["input_ids"] for o, _ in resets])).long().to(device)  # (n, L)
    mask = torch.as_tensor(np.stack([o["attention_mask"] for o, _ in resets])).long().to(device)  # (n, L)
    # A reset window is [padding, prompt], with at least max_new_tokens padding columns that every row
    # shares: they carry nothing, and prefilling them tripled the prefill's cost (34 columns instead of
    # 10 in the benchmark's 10 + 24 window), so the cache starts at the first column any row uses.
    first = int(mask.any(0).to(torch.int8).argmax())
    ids, mask = ids[:, first:], mask[:, first:]  # (n, C)
    T = int(env.get_attr("config", indices=[0])[0].max_new_tokens)
    pad = int(env.get_attr("pad_token_id", indices=[0])[0])

    scorer = _shared_prefetch_reward(env)
    actor = _TrunkStepper(policy.lm.base_model)
    critic = _TrunkStepper(policy.value_model) if policy.value_model is not None else None
    hidden = actor.prefill(ids, mask)
    v_hidden = critic.prefill(ids, mask) if critic is not None else hidden

    tokens = torch.full((n, T), pad, dtype=torch.long)  # left-aligned during the loop
    logps = torch.zeros((n, T))
    values = torch.zeros((n, T))
    lengths = np.zeros(n, dtype=np.int64)
    finals: list[tuple | None] = [None] * n
    active = np.ones(n, dtype=bool)
    keep_going = True
    for t in range(T):
        action, logp = sample_tokens(policy.action_logits(hidden))  # (n,), (n,); tempered logits
        value = policy.value_head(v_hidden.float()).squeeze(-1)
        if scorer is not None:  # score the episodes this step ends in one batch (the env still decides)
            ends = [env.env_method("preview_end", int(action[i]), indices=[i])[0] for i in np.flatnonzero(active)]
            ends = [e for e in ends if e is not None]
            if ends:
                scorer.prefetch([p for p, _ in ends], [r for _, r in ends])
        finished_infos = []
        for i in np.flatnonzero(active):
            obs, reward, terminated, truncated, info = env.env_method("step", int(action[i]), indices=[i])[0]
            tokens[i, t], logps[i, t], values[i, t] = action[i], logp[i], value[i]
            lengths[i] += 1
            if terminated or truncated:
                active[i] = False
                finals[i] = (obs, float(reward), info)
                finished_infos.append(info)
        if on_step is not None and on_step(int(len(finished_infos) + active.sum()), finished_infos) is False:
            keep_going = False
        if not active.any() or not keep_going:
            break
        feed = torch.where(torch.as_tensor(active, device=device), action.to(device), torch.full_like(action, pad))
        hidden = actor.extend(feed)
        v_hidden = critic.extend(feed) if critic is not None else hidden
    if active.any():
        if keep_going:
            raise RuntimeError(f"envs {np.flatnonzero(active).tolist()} did not end within max_new_tokens={T}")
        done = ~active
        if not done.any():
            return None, False
        keep = np.flatnonzero(done)
    else:
        keep = np.arange(n)

    # Right-align: column j <-> position L - T + j of the final observation.
    def right(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for row, i in enumerate(keep):
            out[row, T - lengths[i]:] = x[i, : lengths[i]]
        return out[: len(keep)]

    final_ids = torch.as_tensor(np.stack([finals[i][0]["input_ids"] for i in keep])).long()
    final_mask = torch.as_tensor(np.stack([finals[i][0]["attention_mask"] for i in keep])).long()
    resp_mask = torch.zeros((len(keep), T))
    for row, i in enumerate(keep):
        resp_mask[row, T - lengths[i]:] = 1.0
    batch = EpisodeBatch(
        input_ids=final_ids, attention_mask=final_mask, mask=resp_mask, logp=right(logps), values=right(values),
        scores=torch.tensor([finals[i][1] for i in keep], dtype=torch.float32),
        prompts=[finals[i][2]["prompt"] for i in keep], responses=[finals[i][2]["response"] for i in keep],
        prompt_index=np.array([finals[i][2]["prompt_index"] for i in keep]), env_index=keep.copy(),
    )
    # The env is the source of truth: its final window must end with exactly the tokens we sampled.
    tail = batch.input_ids[:, -T:]
    if not torch.equal(tail[batch.mask.bool()], right(tokens)[batch.mask.bool()]):
        raise RuntimeError("the env's observations disagree with the sampled tokens; is a wrapper changing actions?")
    return batch, keep_going


def sequence_forward(policy, input_ids: torch.Tensor, attention_mask: torch.Tensor, horizon: int, entropy: bool = True,
                     entropy_grad: bool = True):
    """Log-probs, values (and entropies) of the last ``horizon`` tokens of each row, in ONE forward.

    The sequence-level counterpart of SB3's per-transition ``evaluate_actions``: one teacher-forced
    pass over ``(batch, L)`` gives every response token's log-prob and value (docs/design.md section 4, (c)).

    Args:
        entropy: also return each position's entropy.
        entropy_grad: keep the entropy in the autograd graph; ``False`` (an update with no entropy
            bonus, which logs it only) saves two ``(batch, horizon, V)`` tensors and their backward.

    Returns:
        ``(logp, values, entropy)``, each ``(batch, horizon)`` (``entropy`` is ``None`` if not asked).
    """
    # Padding columns every row shares (short prompts) are dropped; each response slot keeps the
    # column before it, whose hidden state predicts it.
    lead = max(0, min(int(attention_mask.any(0).to(torch.int8).argmax()), attention_mask.shape[1] - horizon - 1))
    ids, mask = input_ids[:, lead:].long(), attention_mask[:, lead:].long()
    L = ids.shape[1]
    pos = position_ids_from_mask(mask)
    h = policy.lm.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    h = h[:, L - horizon - 1: L - 1]  # (batch, horizon, hidden): states before each response slot
    logits = policy.action_logits(h)  # (batch, horizon, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ids[:, L - horizon:, None]).squeeze(-1)
    if policy.value_model is not None:
        vh = policy.value_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        vh = vh[:, L - horizon - 1: L - 1]
    else:
        vh = h
    values = policy.value_head(vh.float()).squeeze(-1)
    ent = None
    if entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            # Logits are finite (masked ones are -1e8, not -inf), so p * log p is 0, not NaN, where p = 0.
            ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, values, ent
