"""Sampling-only throughput: fp32 vs bf16 weights, ``torch.multinomial`` vs inverse-CDF draws, in one process.

What the pipeline's ``preferences`` stage does (``reward_models.annotator.sample_responses``): the SFT
policy continues train prompts in batches with the KV-cached :func:`textrlhf.lm.generate`. Each
setting samples the same prompts with the same seed ``--repeats`` times, interleaved so the machine's
drift hits every setting alike; the median tokens/s and its ratio to fp32 + multinomial (the sampler
before 2026-12-02) are printed and written to ``DIR/sampling.json``.

Example (about 2 minutes on the 2-core machine; nothing else may run)::

    python -m scripts.bench_sampling --out runs/sampling
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.cli import config_to_dict, parse_args

BASELINE = ("fp32", "multinomial")
"""The sampler of the annotator and the evaluation before 2026-12-02; every ratio is against it."""


@dataclass
class Config:
    """tokens/s of batched sampling in each precision and with each draw."""

    model: str = "smollm2-135m-instruct"
    """The sampling policy: an offline name, a folder (e.g. a run's sft/model) or a hub name."""
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    """Weights' dtypes (textrlhf.precision; "auto" resolves on this machine)."""
    methods: list[str] = field(default_factory=lambda: ["multinomial", "inverse_cdf"])
    """Token draws (textrlhf.lm.SAMPLING_METHODS)."""
    prompts: int = 32
    """Train review prompts sampled."""
    samples_per_prompt: int = 4
    """Responses per prompt (the preferences stage's K)."""
    batch_size: int = 64
    """Rows per generate() call (the preferences stage's default)."""
    max_new_tokens: int = 24
    """Length limit of each response."""
    repeats: int = 3
    """Timed passes of each setting (interleaved); the median is reported."""
    seed: int = 0
    """Sampling seed (the same for every setting)."""
    out: Path = Path("runs/sampling")
    """Folder for sampling.json."""


def sample_pass(model, tokenizer, prompts: list[str], cfg: Config, method: str) -> tuple[float, int]:
    """One seeded pass over ``prompts`` (each ``samples_per_prompt`` times): ``(seconds, new tokens)``."""
    import torch

    from textrlhf.lm import generate

    rows = [p for p in prompts for _ in range(cfg.samples_per_prompt)]
    tokens = 0
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    for s in range(0, len(rows), cfg.batch_size):
        enc = tokenizer(rows[s : s + cfg.batch_size], return_tensors="pt", padding=True)
        out = generate(
            model,
            enc["input_ids"],
            enc["attention_mask"],
            cfg.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=model.generation_config.eos_token_id,
            method=method,
        )
        tokens += int(out.lengths.sum())
    return time.perf_counter() - start, tokens


def main(argv=None) -> dict:
    cfg = parse_args(Config, argv)
    from reward_models.annotator import load_prompt_file
    from scripts.bench_utils import median, ratio
    from textrlhf.models import load_model, load_tokenizer
    from textrlhf.precision import dtype_name, sampling_dtype

    tokenizer = load_tokenizer(cfg.model)
    prompts = load_prompt_file(task="review", split="train")[: cfg.prompts]
    models = {p: load_model(cfg.model, dtype=sampling_dtype(p, "cpu")) for p in cfg.precisions}
    settings = [(p, m) for p in cfg.precisions for m in cfg.methods]
    runs: dict[str, list[dict]] = {f"{p}/{m}": [] for p, m in settings}
    for p, m in settings:  # warm-up: the first bf16 pass also JIT-compiles oneDNN's kernels
        sample_pass(models[p], tokenizer, prompts[:2], cfg, m)
    for _ in range(cfg.repeats):
        for p, m in settings:
            seconds, tokens = sample_pass(models[p], tokenizer, prompts, cfg, m)
            runs[f"{p}/{m}"].append({"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})
    rates = {k: median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    base = rates.get("/".join(BASELINE))
    result = {
        "config": config_to_dict(cfg),
        "resolved": {p: dtype_name(sampling_dtype(p, "cpu")) for p in cfg.precisions},
        "tokens_per_s": rates,
        "ratio_to_fp32_multinomial": {k: ratio(v, base) for k, v in rates.items()},
        "runs": runs,
        "command": " ".join(["python -m scripts.bench_sampling", *sys.argv[1:]]) if argv is None else None,
    }
    print(f"{'precision/draw':<24} {'tokens/s':>9} {'x fp32/multinomial':>19}")
    for k, v in rates.items():
        r = result["ratio_to_fp32_multinomial"][k]
        print(f"{k:<24} {v:>9.1f} {'-' if r is None else f'{r:.2f}':>19}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "sampling.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
