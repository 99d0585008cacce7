"""Held-out evaluation of a policy: scores, win rate, KL, diversity and perplexity.

Used by the pipeline's ``evaluate`` stage (and by ``scripts/compare_agents.py`` and
``scripts/frontier.py``) to compare the starting policy with the trained one on the same held-out
prompts. Sampling goes through the shared LM interface, :func:`textrlhf.lm.generate` (pure sampling at
the policy's temperature: no top-k, no top-p, so the samples come from the same distribution the env
rollouts do, drawn as the rollouts draw them, by inverse-CDF sampling; until 2026-12-02 it was
``torch.multinomial``, the same distribution at several times the cost per token over SmolLM2's 49152
entries), prompts are encoded exactly as ``TextRLHF-v0`` encodes them (``env.encode_prompt``), and
responses are decoded as the env decodes them.

Metrics (all per held-out prompt, then averaged):

* ``rm_score``: the reward model's score (what RL optimised);
* ``annotator_score``: the annotator's score (never seen by the RL stage: the honest measure);
* ``second_judge_score``: with a ``second_judge``, its score: a judge no stage ever sees, not even the
  preference labelling, so a gain that exists only under the annotator shows up as a gap;
* ``win_rate``: fraction of prompts where the trained response beats the starting one by the
  annotator by default (``by=``: the second judge or the reward model; ties count one half);
* ``kl``: ``sum_t log pi(a_t) - log pi_ref(a_t)`` over the response at the sampling temperature
  (the k1 estimate of the sequence-level KL, in nats; Schulman 2020);
* ``distinct_1`` / ``distinct_2``: unique word uni/bi-grams over all responses divided by their
  count (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models");
* ``ref_perplexity``: ``exp`` of the mean per-token negative log-likelihood of the responses under the
  reference model at temperature 1 (fluency as the starting model sees it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from textrlhf.lm import generate, token_logprobs_at


@dataclass
class Samples:
    """Responses sampled for a list of prompts, as text and as padded token tensors."""

    prompts: list[str]
    responses: list[str]
    input_ids: torch.Tensor  # (n, seq_len): prompt + response, left-padded
    attention_mask: torch.Tensor  # (n, seq_len)
    response_mask: torch.Tensor  # (n, seq_len) bool: True on response tokens (EOS included)

    @property
    def response_lengths(self) -> np.ndarray:
        return self.response_mask.sum(-1).numpy()


def _pack(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int):
    """Left-pad ``prompt + response`` rows into ``(n, max_len)`` tensors with a response mask."""
    rows = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    resp = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (row, r) in enumerate(zip(rows, response_ids)):
        ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row) :] = 1
        if len(r):
            resp[i, length - len(r) :] = True
    return ids, mask, resp


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
) -> Samples:
    """Sample one response per prompt with pure sampling at ``temperature``.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (left padding, pad distinct from EOS).
        prompts: prompt texts (kept for the reward functions).
        prompt_ids: the prompts' token ids, as the env encodes them (``env.encode_prompt``).
        max_new_tokens: response length limit (the env's horizon).
        temperature: sampling temperature (the policy's).
        seed: seeds the sampling, without touching the caller's global RNG.
        batch_size: prompts per :func:`textrlhf.lm.generate` call.

    Returns:
        The :class:`Samples`, responses cut after their first EOS (kept, as the env keeps it).
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    device = next(model.parameters()).device
    responses: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompt_ids), batch_size):
            chunk = prompt_ids[start : start + batch_size]
            ids, mask, _ = _pack(chunk, [[] for _ in chunk], pad)
            out = generate(
                model,
                ids.to(device),
                mask.to(device),
                max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
                temperature=temperature,
                min_new_tokens=1,
                method="inverse_cdf",
            )
            tokens = out.tokens.cpu().tolist()
            responses += [row[:n] for row, n in zip(tokens, out.lengths.tolist())]  # keep EOS, as the env does
    texts = [tokenizer.decode([t for t in r if t != eos], skip_special_tokens=True) for r in responses]
    ids, mask, resp = _pack(prompt_ids, responses, pad)
    return Samples(list(prompts), texts, ids, mask, resp)


@torch.no_grad()
def sequence_logprobs(model, samples: Samples, temperature: float = 1.0, batch_size: int = 16) -> torch.Tensor:
    """Summed log-prob of each response under ``model`` at ``temperature``: ``(n,)``."""
    return sequence_logprobs_at(model, samples, (temperature,), batch_size)[0]


@torch.no_grad()
def sequence_logprobs_at(
    model, samples: Samples, temperatures: Sequence[float], batch_size: int = 16
) -> list[torch.Tensor]:
    """Summed log-prob of each response under ``model`` at each temperature, ``(n,)`` each, from one
    teacher-forced forward per batch (:func:`textrlhf.lm.token_logprobs_at`)."""
    device = next(model.parameters()).device
    sums: list[list[torch.Tensor]] = [[] for _ in temperatures]
    for s in range(0, len(samples.prompts), batch_size):
        lps = token_logprobs_at(
            model,
            samples.input_ids[s : s + batch_size].to(device),
            samples.attention_mask[s : s + batch_size].to(device),
            samples.response_mask[s : s + batch_size].to(device),
            temperatures,
        )
        for out, lp in zip(sums, lps):
            out.append(lp.sum(-1).cpu())
    return [torch.cat(out) for out in sums]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams over all texts divided by their total count (0 if there are none)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass
class EvalResult:
    """Per-prompt rows and averaged metrics of one policy on the held-out prompts."""

    name: str
    prompts: list[str]
    responses: list[str]
    rm_scores: list[float]
    annotator_scores: list[float]
    kl: list[float]
    response_lengths: list[int]
    metrics: dict[str, float] = field(default_factory=dict)
    second_judge_scores: list[float] = field(default_factory=list)
    """The second judge's score of each response (empty without one)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each part of the evaluation: ``generate``, ``logprobs`` (the teacher-forced passes),
    ``reward_model``, ``annotator``, ``second_judge``."""

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_policy(
    name: str,
    model,
    ref_model,
    tokenizer,
    prompts: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    reward_fn,
    annotator,
    max_new_tokens: int,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
    second_judge=None,
) -> EvalResult:
    """Sample one response per held-out prompt and compute every metric of the module docstring.

    Args:
        name: label for reports (``"start"``, ``"trained"``).
        model: the policy's causal LM.
        ref_model: the frozen reference (starting) model.
        tokenizer: the shared tokenizer.
        prompts: held-out prompt texts; ``prompt_ids`` their env encoding.
        reward_fn: the reward model RL optimised (``score(prompts, responses)``).
        annotator: the judge RL never saw (``score(prompts, responses)``).
        max_new_tokens, temperature, seed, batch_size: sampling settings (same for every policy).
        second_judge: another judge nothing trained on (``score(prompts, responses)``), or ``None``.
    """
    t0 = time.perf_counter()
    samples = sample_responses(model, tokenizer, prompts, prompt_ids, max_new_tokens, temperature, seed, batch_size)
    t1 = time.perf_counter()
    # One reference forward gives both temperatures; the reference evaluated as a policy needs no other.
    ref_logp_t, ref_logp_1 = sequence_logprobs_at(ref_model, samples, (temperature, 1.0), batch_size)
    logp = ref_logp_t if model is ref_model else sequence_logprobs(model, samples, temperature, batch_size)
    t2 = time.perf_counter()
    n_tokens = max(int(samples.response_mask.sum()), 1)
    rm = reward_fn.score(samples.prompts, samples.responses)
    t3 = time.perf_counter()
    judge = annotator.score(samples.prompts, samples.responses)
    t4 = time.perf_counter()
    second = [] if second_judge is None else [float(x) for x in second_judge.score(samples.prompts, samples.responses)]
    t5 = time.perf_counter()
    kl = (logp - ref_logp_t).numpy()
    result = EvalResult(
        name=name,
        prompts=samples.prompts,
        responses=samples.responses,
        rm_scores=[float(x) for x in rm],
        annotator_scores=[float(x) for x in judge],
        kl=[float(x) for x in kl],
        response_lengths=[int(x) for x in samples.response_lengths],
        second_judge_scores=second,
        seconds={"generate": t1 - t0, "logprobs": t2 - t1, "reward_model": t3 - t2, "annotator": t4 - t3},
    )
    if second_judge is not None:
        result.seconds["second_judge"] = t5 - t4
    result.metrics = {
        "rm_score": float(np.mean(rm)),
        "annotator_score": float(np.mean(judge)),
        "kl": float(np.mean(kl)),
        "distinct_1": distinct_n(samples.responses, 1),
        "distinct_2": distinct_n(samples.responses, 2),
        "ref_perplexity": float(np.exp(-float(ref_logp_1.sum()) / n_tokens)),
        "response_len": float(np.mean(samples.response_lengths)),
    }
    if second_judge is not None:
        result.metrics["second_judge_score"] = float(np.mean(second))
    return result


def evaluate_on_env(
    name: str,
    lm,
    reference,
    env,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    second_judge=None,
    batch_size: int = 16,
) -> EvalResult:
    """:func:`evaluate_policy` with an env's own tokenizer, prompt encoding and reward (as the judge).

    For comparisons whose judge is the reward the policies trained on (``scripts/compare_agents.py``,
    ``scripts/frontier.py``); ``env`` is any ``TextRLHF-v0`` vector env (SB3-wrapped or native).
    """
    from agents.vec_env import text_vector_env

    base = text_vector_env(env)  # tokenizer, encoding and reward shared by every row
    return evaluate_policy(
        name,
        lm,
        reference,
        base.tokenizer,
        prompts,
        [base.encode_prompt(p) for p in prompts],
        base.reward_fn,
        base.reward_fn,
        max_new_tokens,
        temperature,
        seed,
        batch_size=batch_size,
        second_judge=second_judge,
    )


def win_rate(trained: EvalResult, start: EvalResult, by: str = "annotator") -> float:
    """Fraction of prompts where ``trained`` beats ``start``; ties count one half.

    Args:
        by: the judge: ``"annotator"`` or ``"second_judge"`` (both evaluations need its scores).
    """
    if trained.prompts != start.prompts:
        raise ValueError("win_rate compares two evaluations on the same prompts, in the same order")
    a, b = judge_scores(trained, by), judge_scores(start, by)
    return float(np.mean((a > b) + 0.5 * (a == b)))


def judge_scores(result: EvalResult, by: str) -> np.ndarray:
    """``result``'s scores by the judge ``by`` (``"annotator"``, ``"second_judge"`` or ``"rm"``), ``(n,)``.

    Raises:
        ValueError: an unknown judge, or a second judge the evaluation was run without.
    """
    columns = {"annotator": result.annotator_scores, "second_judge": result.second_judge_scores, "rm": result.rm_scores}
    if by not in columns:
        raise ValueError(f"unknown judge {by!r}; use one of {sorted(columns)}")
    if len(columns[by]) != len(result.prompts):
        fix = "pass second_judge= to evaluate_policy" if by == "second_judge" else "build it with evaluate_policy"
        raise ValueError(
            f"evaluation {result.name!r} has {len(columns[by])} {by} scores for {len(result.prompts)} prompts: {fix}"
        )
    return np.asarray(columns[by], dtype=np.float64)
