"""The simulated annotator: sample responses from a policy, label pairs with a reward, write jsonl.

This reproduces offline the data collection of Ziegler et al. (2019, "Fine-Tuning Language Models
from Human Preferences"): a policy (SmolLM2-135M-Instruct by default) continues each prompt
``samples_per_prompt`` times; every pair of continuations of one prompt is compared by an
"annotator", here any reward spec of :func:`reward_models.make_reward` (VADER ``sentiment`` by
default, the mock-sentiment task of that paper). With ``samples_per_prompt = K`` a prompt yields all
``K(K-1)/2`` pairs, as InstructGPT's labellers rank K responses at once (Ouyang et al. 2022): K
samples cost K generations but give more comparisons than K/2 independent pairs.

Labels:

* ``noise_temperature == 0``: the higher-scored response is ``chosen``;
* ``noise_temperature = T > 0``: ``a`` is chosen with the Bradley-Terry probability
  ``sigmoid((s_a - s_b) / T)``, mimicking the disagreement of human labellers (about 27% of
  InstructGPT's comparisons, Ouyang et al. 2022, appendix);
* **ties**: a pair whose score gap ``|s_a - s_b|`` is ``<= min_gap`` (always when the scores are
  exactly equal) is **skipped**, never resampled: its label would be a coin flip that only adds noise
  (VADER gives exactly 0 to most neutral texts). Pairs with an empty response or two identical
  responses are skipped too, because :mod:`reward_models.preferences` rejects them.

Each written row records the annotator, both temperatures, the seed and the policy; a sidecar
``<file>.meta.json`` holds the whole config and the counts.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from reward_models.base import check_scores, make_reward
from reward_models.config import config_from_dict
from reward_models.preferences import save_preferences
from textrlhf.lm import generate
from textrlhf.precision import SAMPLING_PRECISIONS, dtype_name, sampling_dtype
from textrlhf.prompts import BUNDLED_PATH


@dataclass
class AnnotatorConfig:
    """How preference pairs are sampled and labelled."""

    policy: str = "smollm2-135m-instruct"
    """Policy that writes the responses: "smollm2-135m-instruct", "tiny", a folder or a hub name."""
    annotator: str = "sentiment"
    """Reward spec that labels pairs (make_reward: a rule name or a reward-model folder)."""
    samples_per_prompt: int = 2
    """Responses sampled per prompt (K); all K(K-1)/2 pairs of them are labelled."""
    temperature: float = 1.0
    """Sampling temperature of the policy (pure sampling: no top-k / top-p)."""
    max_new_tokens: int = 24
    """Length limit of each response, in tokens."""
    batch_size: int = 64
    """Sequences per generate() call. Sampling pairs is pure generation, and on a 2-core CPU a batch of 64
    generates more tokens per second than one of 32 (docs/results/2026-12-01-pipeline-profile.md)."""
    noise_temperature: float = 0.0
    """0: the higher score wins; T > 0: a wins with probability sigmoid((s_a - s_b) / T)."""
    min_gap: float = 0.0
    """Skip pairs whose annotator scores differ by at most this much (ties are always skipped)."""
    chat_template: bool = False
    """Wrap prompts in the policy's chat template (off: plain-text continuation, like review prompts)."""
    seed: int = 0
    """Seed of sampling and of noisy labels."""
    precision: str = "fp32"
    """Weights' dtype while sampling: "fp32", "bf16", or "auto" (bf16 where the device multiplies it natively:
    AMX / AVX-512 BF16 CPUs, CUDA; fp32 elsewhere). bf16 samples 1.6x faster on an AMX CPU but draws from a
    slightly different distribution, and over 5 seeds its pairs trained reward models 0.02 less accurate
    (docs/results/2026-12-02-bf16-sampling.md): fp32 by default (textrlhf.precision)."""

    def __post_init__(self):
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 to form a pair, got {self.samples_per_prompt}")
        if not self.temperature > 0 or self.noise_temperature < 0 or self.min_gap < 0:
            raise ValueError(
                "temperature must be > 0, noise_temperature and min_gap >= 0; got "
                f"{self.temperature}, {self.noise_temperature}, {self.min_gap}"
            )
        if self.precision not in SAMPLING_PRECISIONS:
            raise ValueError(f"precision must be one of {list(SAMPLING_PRECISIONS)}, got {self.precision!r}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {self.max_new_tokens}, {self.batch_size}"
            )


def load_prompt_file(
    path: str | os.PathLike | None = None, task: str | None = "review", split: str | None = "train"
) -> list[str]:
    """Prompts from a jsonl file of rows ``{"prompt", "task", "split"}`` (default: the bundled file).

    Args:
        path: the file (default ``textrlhf/data/prompts.jsonl``).
        task: keep rows of this task (``"review"``/``"instruction"``); ``None`` keeps all.
        split: keep rows of this split (``"train"``/``"test"``); ``None`` keeps all.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: no prompt matches, or a row lacks a non-empty ``prompt``.
    """
    path = os.fspath(BUNDLED_PATH if path is None else path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt file {path!r} does not exist")
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise ValueError(f"{path}: row {i} has no non-empty 'prompt'")
            if (task is None or row.get("task") == task) and (split is None or row.get("split") == split):
                prompts.append(row["prompt"])
    if not prompts:
        raise ValueError(f"{path}: no prompts with task={task!r}, split={split!r}")
    return prompts


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int = 2,
    temperature: float = 1.0,
    max_new_tokens: int = 24,
    batch_size: int = 64,
    seed: int = 0,
    chat_template: bool = False,
    progress: bool = True,
) -> list[list[str]]:
    """``n`` sampled continuations of each prompt, batched with left padding, seeded.

    Sampling is the shared LM interface's :func:`textrlhf.lm.generate` (KV-cached, pure sampling at
    ``temperature``), which lives in ``textrlhf`` so that this layer may use it (docs/design.md
    section 2). Rows end at the model's ``generation_config.eos_token_id``. Tokens are drawn by inverse-CDF
    sampling, the rollouts' draw: the same distribution as ``torch.multinomial`` (Hugging Face
    ``generate``'s draw, used here until 2026-12-02), whose random number per vocabulary entry took a tenth
    of a 64-row fp32 batch's time and a third of a bf16 one's (docs/results/2026-12-02-bf16-sampling.md).
    The global torch RNG of the caller is left untouched (``fork_rng``). The same seed, prompts and batch
    size give the same responses.

    Args:
        model: a causal LM. tokenizer: its tokenizer (left padding, pad distinct from EOS).
        prompts: prompt texts. n: samples per prompt. temperature: divides the logits.
        max_new_tokens: length limit of each response. batch_size: sequences per forward.
        seed: seeds the sampling. chat_template: wrap prompts in the tokenizer's chat template.
        progress: show a progress bar.

    Returns:
        ``responses[i][j]``: the ``j``-th sample for ``prompts[i]`` (special tokens removed).

    Raises:
        ValueError: the tokenizer does not pad on the left with a pad token distinct from EOS.
    """
    from textrlhf.progress import progress_bar

    if tokenizer.padding_side != "left" or tokenizer.pad_token_id in (None, tokenizer.eos_token_id):
        raise ValueError(
            "the policy tokenizer must pad on the left with a pad token distinct from EOS; "
            "load it with textrlhf.models.load_tokenizer"
        )
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        if chat_template
        else p
        for p in prompts
    ]
    flat = [t for t in texts for _ in range(n)]
    out: list[str] = []
    model.eval()
    device = next(model.parameters()).device
    with (
        torch.random.fork_rng(devices=[]),
        progress_bar(total=len(flat), desc="sampling", unit="resp", disable=not progress) as bar,
    ):
        torch.manual_seed(seed)
        for start in range(0, len(flat), batch_size):
            enc = tokenizer(
                flat[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=not chat_template,
            ).to(device)
            gen = generate(
                model,
                enc["input_ids"],
                enc["attention_mask"],
                max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=model.generation_config.eos_token_id,
                temperature=temperature,
                method="inverse_cdf",
            )
            out += tokenizer.batch_decode(gen.tokens, skip_special_tokens=True)
            bar.update(len(enc["input_ids"]))
    return [out[i * n : (i + 1) * n] for i in range(len(prompts))]


def label_pairs(
    prompts: Sequence[str],
    responses: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    noise_temperature: float = 0.0,
    min_gap: float = 0.0,
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """Turn scored samples into labelled pairs (see the module docstring for labels and ties).

    Args:
        prompts: one per group.
        responses: ``responses[i]``: the samples of ``prompts[i]``.
        scores: annotator scores, same shape as ``responses``.
        noise_temperature: Bradley-Terry label noise (0: none).
        min_gap: skip pairs whose scores differ by at most this.
        seed: seed of the noisy labels.

    Returns:
        ``(rows, counts)``: rows ``{"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}``
        and counts ``{"candidates", "skipped_ties", "skipped_invalid", "flipped", "pairs"}``.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    counts = {"candidates": 0, "skipped_ties": 0, "skipped_invalid": 0, "flipped": 0}
    for prompt, group, group_scores in zip(prompts, responses, scores):
        for a, b in itertools.combinations(range(len(group)), 2):
            counts["candidates"] += 1
            ra, rb, sa, sb = group[a], group[b], float(group_scores[a]), float(group_scores[b])
            if not ra.strip() or not rb.strip() or ra == rb:
                counts["skipped_invalid"] += 1
                continue
            if sa == sb or abs(sa - sb) <= min_gap:
                counts["skipped_ties"] += 1
                continue
            if noise_temperature > 0:
                p_a = 1.0 / (1.0 + math.exp(-(sa - sb) / noise_temperature))
                a_wins = bool(rng.random() < p_a)
                counts["flipped"] += int(a_wins != (sa > sb))
            else:
                a_wins = sa > sb
            (rc, sc), (rr, sr) = ((ra, sa), (rb, sb)) if a_wins else ((rb, sb), (ra, sa))
            rows.append({"prompt": prompt, "chosen": rc, "rejected": rr, "score_chosen": sc, "score_rejected": sr})
    counts["pairs"] = len(rows)
    return rows, counts


def generate_preference_pairs(
    prompts: Sequence[str],
    config: AnnotatorConfig | dict | None = None,
    model=None,
    tokenizer=None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Sample, score and label: the whole simulated-annotation pipeline.

    Args:
        prompts: the prompts (e.g. :func:`load_prompt_file`).
        config: an :class:`AnnotatorConfig` or a dict of its fields.
        model: a loaded policy (default: ``textrlhf.models.load_model(config.policy)``). It samples in the
            dtype ``config.precision`` resolves to on its device; when that is not the model's dtype, a cast
            copy samples and the model itself is left as it is.
        tokenizer: its tokenizer (default: ``textrlhf.models.load_tokenizer(config.policy)``).
        progress: show tqdm bars.

    Returns:
        ``(rows, metadata)``: rows as written by :func:`write_pairs` (each with ``annotator``,
        ``sampling_temperature``, ``noise_temperature``, ``seed``, ``policy``); metadata with the
        config, the counts, the sampler's resolved ``precision`` (``"fp32"``/``"bf16"``), the wall time and
        its two main parts (``seconds_by_phase``: ``generate``, ``annotate``).
    """
    cfg = config_from_dict(AnnotatorConfig, config)
    prompts = list(prompts)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()), None)
        raise ValueError(f"prompts must be a non-empty list of non-empty strings (bad index: {bad})")
    start = time.perf_counter()
    from textrlhf.models import load_model, load_tokenizer

    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    dtype = sampling_dtype(cfg.precision, device)
    if model is None:
        model = load_model(cfg.policy, dtype=dtype)
    elif next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)  # never change the caller's model
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.policy)
    annotator = make_reward(cfg.annotator)
    t_generate = time.perf_counter()
    responses = sample_responses(
        model,
        tokenizer,
        prompts,
        cfg.samples_per_prompt,
        cfg.temperature,
        cfg.max_new_tokens,
        cfg.batch_size,
        cfg.seed,
        cfg.chat_template,
        progress,
    )
    k = cfg.samples_per_prompt
    flat_prompts = [p for p in prompts for _ in range(k)]
    t_annotate = time.perf_counter()
    flat_scores = check_scores(
        annotator.score(flat_prompts, [r for group in responses for r in group]),
        flat_prompts,
        f"annotator {cfg.annotator!r}",
    )
    t_label = time.perf_counter()
    scores = flat_scores.reshape(len(prompts), k).tolist()
    rows, counts = label_pairs(prompts, responses, scores, cfg.noise_temperature, cfg.min_gap, cfg.seed)
    stamp = {
        "annotator": cfg.annotator,
        "sampling_temperature": cfg.temperature,
        "noise_temperature": cfg.noise_temperature,
        "min_gap": cfg.min_gap,
        "seed": cfg.seed,
        "policy": cfg.policy,
    }
    rows = [{**row, **stamp} for row in rows]
    meta = {
        "config": asdict(cfg),
        "counts": {"prompts": len(prompts), "samples": len(prompts) * k, **counts},
        "precision": dtype_name(dtype),
        "seconds": round(time.perf_counter() - start, 2),
        "seconds_by_phase": {
            "generate": round(t_annotate - t_generate, 2),
            "annotate": round(t_label - t_annotate, 2),
        },
    }
    return rows, meta


def write_pairs(rows: Sequence[dict], path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write rows as jsonl (atomically) and ``metadata`` to the sidecar ``<path>.meta.json``."""
    save_preferences(rows, path)
    if metadata is not None:
        meta_path = f"{os.fspath(path)}.meta.json"
        tmp = f"{meta_path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(metadata, fh, indent=2, default=str)
        os.replace(tmp, meta_path)
