"""Given helpers for exercises 5 and 6: sampling episodes through ``TextRLHF-v0``, log-probs, logging.

Nothing here is graded; read it, then write the update in ``ex5_rloo.py``. The pieces:

* :class:`TrainConfig` — every knob of the hand-written loop, with presets for the tiny model and
  SmolLM2 (:meth:`TrainConfig.preset`);
* :func:`make_envs` — ``n`` copies of ``gym.make("TextRLHF-v0", ...)`` (one per sample of a batch);
* :func:`collect` — play one episode per env *through the Gymnasium API* (``reset`` with a chosen
  prompt, then ``step(token)`` until ``terminated``), batching the policy forward over all envs with a
  KV cache (:class:`textrlhf.lm.KVCacheRunner`) and drawing tokens with the project's sampler
  (:func:`textrlhf.lm.sample_tokens`), and return a :class:`Batch` of padded tensors with the rollout
  log-probs, the reference log-probs and the env's scores;
* :func:`token_logprobs` (:func:`textrlhf.lm.token_logprobs`, the LM interface everyone uses) —
  teacher-forced log-probs of the response tokens in ONE forward, with gradients (what the update
  differentiates);
* :func:`write_csv`, :func:`plot_curves` — the curves of exercise 6.

The same temperature divides the logits when sampling, when scoring under the reference model and
when training, and the same token subset (``allowed_tokens``) restricts all three, so the rollout
log-probs are exactly the log-probs of the distribution that is optimised (docs/design.md section 5).
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import textenv  # noqa: F401  (registers TextRLHF-v0)
from textrlhf.lm import KVCacheRunner, restrict_logits, sample_tokens, token_logprobs

SENTIMENT_WORDS = (
    "good great love wonderful happy best excellent amazing beautiful fun "
    "bad awful hate terrible sad worst boring ugly poor dull "
    "the a movie film and was is it this very really plot actors story"
).split()
"""The tiny model's vocabulary in exercise 5: a random 2-layer model never samples a useful word out
of 49152 tokens, so its policy is restricted to these words (each one token with a leading space)
plus EOS. VADER rates the positive ones > 0, the negative ones < 0, the rest 0."""


@dataclass
class TrainConfig:
    """Hyper-parameters of the hand-written RLOO loop (exercise 5) and the comparison (exercise 6)."""

    model: str = "tiny"
    """Policy (and reference) model: ``"tiny"`` or ``"smollm2-135m-instruct"``."""
    reward: str = "sentiment"
    """Reward name for ``TextRLHF-v0`` (VADER sentiment by default)."""
    prompts: str = "bundled:reviews"
    """Prompt source of the env (training uses its train split, evaluation its test split)."""
    vocabulary: str = "sentiment_words"
    """``"sentiment_words"`` (the policy may only emit :data:`SENTIMENT_WORDS` and EOS) or ``"all"``."""
    n_prompts: int = 4
    """Prompts per iteration."""
    group_size: int = 4
    """Samples per prompt (RLOO needs >= 2); batch size = ``n_prompts * group_size``."""
    max_prompt_tokens: int = 24
    """Prompt budget in tokens (longer prompts lose their first tokens)."""
    max_new_tokens: int = 12
    """Response length limit."""
    temperature: float = 1.0
    """Sampling temperature (also divides the logits of every log-prob)."""
    lr: float = 3e-3
    """Adam learning rate."""
    beta: float = 0.05
    """KL coefficient: ``R = score - beta * sum_t (log pi - log pi_ref)``."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping."""
    iterations: int = 20
    """Training iterations (one batch of episodes and one gradient step each)."""
    eval_prompts: int = 16
    """Held-out prompts scored before and after training."""
    seed: int = 0
    """Seeds sampling and prompt order."""

    @classmethod
    def preset(cls, model: str = "tiny", **overrides) -> TrainConfig:
        """Defaults that work for ``model`` (``"tiny"``: ~1 min; SmolLM2: a few minutes on 2 CPU cores)."""
        if model == "tiny":
            base = cls()
        else:  # lr 1e-4 at 32 samples x 24 tokens raised held-out VADER sentiment in docs/design.md section 5
            base = cls(
                model=model,
                vocabulary="all",
                n_prompts=8,
                group_size=4,
                max_new_tokens=20,
                max_prompt_tokens=24,
                temperature=0.7,
                lr=1e-4,
                beta=0.05,
                iterations=12,
                eval_prompts=24,
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {unknown}; valid: {sorted(names)}")
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Batch:
    """One iteration's episodes as left-padded ``(B, S)`` tensors (``S`` = longest prompt + response).

    Rows come in groups: rows ``g * k ... g * k + k - 1`` share prompt ``g`` (``k = group_size``).
    """

    prompts: list[str]
    responses: list[str]
    input_ids: torch.Tensor  # (B, S) long: prompt + response, left-padded
    attention_mask: torch.Tensor  # (B, S) long
    response_mask: torch.Tensor  # (B, S) bool: True on response tokens (EOS included)
    logp: torch.Tensor  # (B, S) float: log pi(a_t|s_t) at sampling time, 0 off the response
    ref_logp: torch.Tensor  # (B, S) float: log pi_ref(a_t|s_t), 0 off the response
    scores: torch.Tensor  # (B,) float: the env's terminal reward (reward-model score)


def allowed_token_ids(cfg: TrainConfig, tokenizer) -> list[int] | None:
    """Token ids the policy may emit (``None``: all)."""
    if cfg.vocabulary == "all":
        return None
    if cfg.vocabulary != "sentiment_words":
        raise ValueError(f"vocabulary must be 'sentiment_words' or 'all', got {cfg.vocabulary!r}")
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in SENTIMENT_WORDS]
    assert all(len(i) == 1 for i in ids), "every SENTIMENT_WORDS entry must be one token"
    return sorted({i[0] for i in ids} | {int(tokenizer.eos_token_id)})


def make_envs(cfg: TrainConfig, n: int, split: str = "train") -> list[gym.Env]:
    """``n`` independent ``TextRLHF-v0`` envs (one built, the rest deep copies sharing its tokenizer)."""
    env = gym.make(
        "TextRLHF-v0",
        model=cfg.model,
        reward=cfg.reward,
        prompts=cfg.prompts,
        prompt_split=split,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_new_tokens=cfg.max_new_tokens,
    )
    tokenizer = env.unwrapped.tokenizer  # read-only in the env (decoding); copying it costs ~0.2 s per env
    return [env] + [copy.deepcopy(env, memo={id(tokenizer): tokenizer}) for _ in range(n - 1)]


@torch.no_grad()
def collect(
    model,
    ref_model,
    envs: Sequence[gym.Env],
    prompt_indices: Sequence[int],
    cfg: TrainConfig,
    generator: torch.Generator,
    allowed_tokens: Sequence[int] | None = None,
) -> Batch:
    """Play one episode per env through the Gymnasium API and return them as a :class:`Batch`.

    Every step: one batched forward of the policy over all envs' observations (KV-cached), sample a
    token per env at ``cfg.temperature`` from the (restricted) distribution, ``env.step(token)``.
    Finished envs are not stepped again. Then the reference model scores all responses at once.
    """
    runner = KVCacheRunner(model.base_model)
    obs = [env.reset(options={"prompt_index": int(i)})[0] for env, i in zip(envs, prompt_indices)]
    prompt_ids = [o["input_ids"][o["attention_mask"].astype(bool)].tolist() for o in obs]
    n = len(envs)
    done = [False] * n
    tokens: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    scores, prompts, responses = [0.0] * n, [""] * n, [""] * n
    while not all(done):
        ids = torch.as_tensor(np.stack([o["input_ids"] for o in obs]))
        mask = torch.as_tensor(np.stack([o["attention_mask"] for o in obs]).astype(np.int64))
        logits = model.lm_head(runner(ids, mask)).float() / cfg.temperature  # (n, V)
        if allowed_tokens is not None:
            logits = restrict_logits(logits, allowed_tokens)
        # torch.multinomial with the caller's generator: the draw this loop always made (seeded runs reproduce)
        actions, logp = sample_tokens(logits, generator, method="multinomial")  # (n,), (n,)
        for i, env in enumerate(envs):
            if done[i]:
                continue
            a = int(actions[i])
            obs[i], _, terminated, _, info = env.step(a)
            tokens[i].append(a)
            logps[i].append(float(logp[i]))
            if terminated:
                done[i] = True
                scores[i], prompts[i], responses[i] = info["score"], info["prompt"], info["response"]
    length = max(len(p) + len(t) for p, t in zip(prompt_ids, tokens))
    input_ids = torch.full((n, length), int(envs[0].unwrapped.pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    response_mask = torch.zeros((n, length), dtype=torch.bool)
    logp = torch.zeros((n, length))
    for i, (p, t) in enumerate(zip(prompt_ids, tokens)):
        input_ids[i, length - len(p) - len(t) :] = torch.tensor(p + t)
        attention_mask[i, length - len(p) - len(t) :] = 1
        response_mask[i, length - len(t) :] = True
        logp[i, length - len(t) :] = torch.tensor(logps[i])
    ref_logp = token_logprobs(ref_model, input_ids, attention_mask, response_mask, cfg.temperature, allowed_tokens)
    return Batch(
        prompts,
        responses,
        input_ids,
        attention_mask,
        response_mask,
        logp,
        ref_logp,
        torch.tensor(scores, dtype=torch.float32),
    )


def evaluate(model, ref_model, envs: Sequence[gym.Env], cfg: TrainConfig, allowed_tokens=None) -> dict[str, float]:
    """Mean score and mean summed KL (k1, nats) of one sample per held-out prompt (fixed seed)."""
    n_prompts = len(envs[0].unwrapped.prompts)
    indices = [i % n_prompts for i in range(len(envs))]
    batch = collect(
        model, ref_model, envs, indices, cfg, torch.Generator().manual_seed(10_000 + cfg.seed), allowed_tokens
    )
    kl = ((batch.logp - batch.ref_logp) * batch.response_mask).sum(-1)
    return {
        "score": float(batch.scores.mean()),
        "kl": float(kl.mean()),
        "example": f"{batch.prompts[0]!r} -> {batch.responses[0]!r}",
    }


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


CURVE_COLUMNS = ("algorithm", "iteration", "score", "kl")
"""Columns that exercise 6's ``curves.csv`` must have (more are allowed)."""


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write a list of dicts (same keys) as CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def curves_figure(rows: Sequence[dict]):
    """Score and KL against the iteration, one colour per ``algorithm``: the raw values faint, their
    exponential moving average on top (``scripts.stages.report.smooth_ema``); returns the ``Figure``."""
    from matplotlib.figure import Figure

    from scripts.stages.report import SMOOTHING_NOTE, integer_ticks, plot_raw_and_smoothed

    fig = Figure(figsize=(10, 4.3))
    axes = fig.subplots(1, 2)
    for algo in dict.fromkeys(r["algorithm"] for r in rows):
        mine = [r for r in rows if r["algorithm"] == algo]
        x = [float(r["iteration"]) for r in mine]
        _, line = plot_raw_and_smoothed(axes[0], x, [float(r["score"]) for r in mine], label=algo)
        plot_raw_and_smoothed(axes[1], x, [float(r["kl"]) for r in mine], label=algo, color=line.get_color())
    axes[0].set(xlabel="iteration", ylabel="mean score (reward model)", title="score")
    axes[1].set(xlabel="iteration", ylabel="mean summed KL to reference (nats)", title="KL(pi || pi_ref)")
    for ax in axes:
        integer_ticks(ax)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(SMOOTHING_NOTE, fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(rows: Sequence[dict], path: str | Path) -> Path:
    """Two panels, score and KL against iteration, one colour per ``algorithm`` (:func:`curves_figure`);
    saved as PNG. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curves_figure(rows).savefig(path, dpi=100)
    return path
