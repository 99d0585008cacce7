"""Throughput benchmark (issue 8): the generic SB3 PPO path, the fast agent, TRL 1.12's PPO, raw limits.

Reads top to bottom: parse the config, encode the bundled review prompts (left-padded / truncated to
``max_prompt_tokens``), then for every batch size (prompts per iteration) and method run ``runs``
independent runs of one warm-up iteration plus ``iterations`` timed ones, in this one process:

* ``naive``   - the generic policy with ``kv_cache=False`` on ONE env (a full forward of the window per
  token, no cache), rollout phase only; it does not depend on the batch size, so it is measured once;
* ``generic`` - ``agents.make_agent("ppo")``: SB3's own PPO, KV-cached rollouts, one forward+backward of
  the whole window per stored transition in the update (skipped above ``--generic-max-batch``);
* ``fast``    - ``agents.rlhf_ppo.RLHFPPO``: lock-step KV-cached rollouts, sequence-level updates;
* ``trl``     - ``trl.experimental.ppo.PPOTrainer`` (trl==1.12.0) with a separate value model;
* ``limits``  - batched KV-cached ``generate`` (exactly ``max_new_tokens`` new tokens per row), a
  teacher-forced forward and a forward+backward over the whole (prompt + response) sequences.

Same work for every trainer: same model, prompts, prompt length, batch, temperature, ``max_new_tokens``,
PPO epochs, fixed KL coefficient, and the same reward MODULE: ``AutoModelForSequenceClassification``
(num_labels=1, the policy's weights, a seeded score head). TRL calls it on token ids; the env calls it
through :class:`SequenceClassifierReward` (text -> policy tokenizer -> score at the last token), one
episode at a time, as the env calls any reward.

Unit: generated tokens per second of whole iteration = tokens generated in the timed iterations / their
seconds. Tokens are COUNTED, not assumed: EOS may end an episode early (EOS counts as a token). The
generic path always generates ``n * max_new_tokens`` tokens (SB3 resets a finished env and keeps going);
TRL's count is each row's response up to and including its first EOS; ``generate`` (limits) is forced to
``max_new_tokens`` tokens with ``min_new_tokens``.

Example (the real measurement; several minutes, run it on a quiet machine)::

    python -m scripts.benchmark --run-dir runs/benchmark
    python -m scripts.benchmark --model tiny --batch-sizes 2 --max-new-tokens 4 --iterations 1 --runs 1
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import contextlib
import copy
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from agents.kl import KLConfig
from scripts.bench_utils import PeakRSS, Timer, fmt, median, ratio, sync
from scripts.cli import config_to_dict, parse_args

METHODS = ("naive", "limits", "generic", "fast", "trl")


@dataclass
class Config:
    """Tokens/s of the generic SB3 PPO path, the fast agent, TRL 1.12 PPO and the raw limits."""

    model: str = "smollm2-135m-instruct"
    """Policy model (also reference, reward and TRL value model): "smollm2-135m-instruct" or "tiny"."""
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32])
    """Prompts per iteration (= envs for the SB3 paths, per_device_train_batch_size for TRL)."""
    iterations: int = 3
    """Timed iterations per run, after one warm-up iteration that is excluded."""
    runs: int = 3
    """Independent runs per method and batch size (fresh models, seed + run); the median is reported."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Subset of naive limits generic fast trl (space- or comma-separated)."""
    epochs: int = 1
    """PPO epochs per iteration for every trainer (n_epochs / num_ppo_epochs)."""
    max_prompt_tokens: int = 10
    """Prompt length: every prompt is left-padded or truncated (keeping its end) to this many tokens."""
    max_new_tokens: int = 24
    """Response length (episode horizon, TRL response_length, generate max_new_tokens)."""
    temperature: float = 0.7
    """Sampling temperature for everyone."""
    kl_coef: float = KLConfig.kl_coef
    """Fixed KL coefficient for every trainer (no adaptive controller)."""
    learning_rate: float = 3e-5
    """Adam(W) learning rate for every trainer (does not affect speed)."""
    generic_batch_size: int | None = 64
    """Minibatch size (transitions) of the generic SB3 update; none = all transitions in one minibatch."""
    generic_max_batch: int = 8
    """Skip the generic path's update above this batch size (it does one full-window forward+backward per
    transition, T times the work); its rollout is still measured."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the models run (auto: cuda if available)."""
    seed: int = 0
    """Base seed; run r uses seed + r (torch.manual_seed and the agents' seeds)."""
    run_dir: Path = Path("runs/benchmark")
    """Folder for benchmark.json and tokens_per_s.png."""

    def __post_init__(self) -> None:
        self.methods = [m.strip().lower() for item in self.methods for m in str(item).split(",") if m.strip()]
        bad = sorted(set(self.methods) - set(METHODS))
        if bad or not self.methods:
            raise ValueError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
        for name in ("iterations", "runs", "epochs", "max_prompt_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("batch_sizes must be positive")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- shared set-up
def encode_prompts(tokenizer, prompts: list[str], length: int) -> torch.Tensor:
    """``(N, length)`` ids: each prompt's last ``length`` tokens, left-padded with the pad id (as the env)."""
    rows = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"][-length:]
        rows.append([tokenizer.pad_token_id] * (length - len(ids)) + ids)
    return torch.tensor(rows, dtype=torch.long)


def build_score_model(name: str, seed: int, device: str):
    """``AutoModelForSequenceClassification`` (num_labels=1) with the policy's weights, seeded score head."""
    from transformers import AutoModelForSequenceClassification

    from textenv import load_model

    lm = load_model(name)
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    missing, _ = model.load_state_dict(lm.state_dict(), strict=False)
    if [k for k in missing if not k.startswith("score.")]:
        raise RuntimeError(f"weights missing from the score model: {missing}")
    return model.eval().to(device)


class SequenceClassifierReward:
    """A sequence-classification module as a text reward: ``score(prompts, responses)``.

    Tokenizes prompt (its last ``max_prompt_tokens`` tokens, like the env) + response with the policy
    tokenizer, left-pads, forwards, and returns the score at the last token.
    """

    def __init__(self, module, tokenizer, max_prompt_tokens: int, max_new_tokens: int):
        self.module, self.tok = module, tokenizer
        self.P, self.T = max_prompt_tokens, max_new_tokens

    @torch.no_grad()
    def score(self, prompts, responses) -> np.ndarray:
        rows = [
            self.tok(p, add_special_tokens=False)["input_ids"][-self.P :]
            + (self.tok(r, add_special_tokens=False)["input_ids"][: self.T] if r else [])
            for p, r in zip(prompts, responses)
        ]
        L = max(len(r) for r in rows)
        dev = next(self.module.parameters()).device
        ids = torch.tensor([[self.tok.pad_token_id] * (L - len(r)) + r for r in rows], device=dev)
        mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], device=dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.module(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (n, 1)
        return logits[:, 0].float().cpu().numpy()


def make_env(cfg: Config, n_envs: int, seed: int, prompts: list[str], reward):
    import agents

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*longer than max_prompt_tokens.*")
        env = agents.make_vec_text_env(
            n_envs=n_envs,
            seed=seed,
            model=cfg.model,
            prompts=prompts,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_new_tokens=cfg.max_new_tokens,
            reward=reward,
        )
    shared = {id(f) for f in env.get_attr("reward_fn")}  # one reward object for every row of the vector env
    assert shared == {id(reward)}, "the envs must use the shared reward module"
    return env


# ----------------------------------------------------------------------------- (d) raw limits
def run_limits(cfg: Config, n: int, seed: int, prompt_ids: torch.Tensor, dev: str, **_) -> dict:
    from textenv import load_model

    lm = load_model(cfg.model, device=dev)
    P, T = cfg.max_prompt_tokens, cfg.max_new_tokens
    q = prompt_ids[:n].to(dev)
    pad = int(lm.generation_config.pad_token_id)
    gen_kwargs = dict(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=cfg.temperature,
        max_new_tokens=T,
        min_new_tokens=T,
        pad_token_id=pad,
    )
    out = {k: [] for k in ("generate_s", "forward_s", "forward_backward_s")}
    for it in range(1 + cfg.iterations):
        with torch.no_grad(), Timer(dev) as t_gen:
            seq = lm.generate(input_ids=q, attention_mask=(q != pad).long(), **gen_kwargs)
        assert seq.shape[1] == P + T, seq.shape
        mask = torch.cat([(q != pad).long(), torch.ones_like(seq[:, P:])], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad(), Timer(dev) as t_fwd:
            lm(input_ids=seq, attention_mask=mask, position_ids=pos)
        with Timer(dev) as t_bwd:
            logits = lm(input_ids=seq, attention_mask=mask, position_ids=pos).logits[:, P - 1 : -1].float()
            logp = torch.log_softmax(logits / cfg.temperature, -1).gather(-1, seq[:, P:, None])
            logp.mean().backward()
            lm.zero_grad(set_to_none=True)
        if it >= 1:
            for key, t in zip(out, (t_gen, t_fwd, t_bwd)):
                out[key].append(t.seconds)
        log(
            f"  limits it {it}{' (warm-up)' if it == 0 else ''}: generate {t_gen.seconds:.2f}s "
            f"forward {t_fwd.seconds:.2f}s fwd+bwd {t_bwd.seconds:.2f}s"
        )
    g, f, b = (float(np.mean(out[k])) for k in out)
    seq_tokens = n * (P + T)
    return {
        "generate_s": g,
        "forward_s": f,
        "forward_backward_s": b,
        "tokens_per_iteration": n * T,
        "generate_tokens_per_s": n * T / g,
        "forward_seq_tokens_per_s": seq_tokens / f,
        "forward_backward_seq_tokens_per_s": seq_tokens / b,
    }


# ----------------------------------------------------------------------------- (a), (b), (e) SB3 agents
def _drive(agent, cfg: Config, dev: str, update: bool, count_tokens, label: str) -> dict:
    """Warm-up + timed iterations of ``collect_rollouts`` (+ ``train``), outside ``learn``'s step budget."""
    _, callback = agent._setup_learn(10**12, callback=None)
    callback.on_training_start(locals(), globals())
    its = []
    for it in range(1 + cfg.iterations):
        with Timer(dev) as t_roll:
            agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, n_rollout_steps=agent.n_steps)
        gen_s = agent.logger.name_to_value.get("time/generation_s")
        t_upd = None
        if update:
            with Timer(dev) as t:
                agent.train()
            t_upd = t.seconds
        tokens = count_tokens(agent)
        if it >= 1:
            its.append({"tokens": tokens, "rollout_s": t_roll.seconds, "update_s": t_upd, "generation_s": gen_s})
        log(
            f"  {label} it {it}{' (warm-up)' if it == 0 else ''}: {tokens} tokens, rollout {t_roll.seconds:.2f}s"
            + (f", update {t_upd:.2f}s" if t_upd is not None else "")
        )
    return summarize_iterations(its)


def run_generic(cfg: Config, n: int, seed: int, prompts: list[str], dev: str, tokenizer, naive: bool = False, **_):
    import agents

    reward = SequenceClassifierReward(
        build_score_model(cfg.model, seed, dev), tokenizer, cfg.max_prompt_tokens, cfg.max_new_tokens
    )
    n_envs = 1 if naive else n
    env = make_env(cfg, n_envs, seed, prompts, reward)
    transitions = n_envs * cfg.max_new_tokens
    agent = agents.make_agent(
        "ppo",
        env,
        n_steps=cfg.max_new_tokens,
        batch_size=max(2, min(cfg.generic_batch_size or transitions, transitions)),
        n_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        temperature=cfg.temperature,
        kl_coef=cfg.kl_coef,
        adaptive_kl=False,
        seed=seed,
        device=dev,
        policy_kwargs={"kv_cache": not naive},
    )
    update = not naive and n <= cfg.generic_max_batch
    out = _drive(agent, cfg, dev, update, lambda a: a.n_steps * a.n_envs, "naive" if naive else "generic")
    out["update_skipped"] = not update
    env.close()
    return out


def run_naive(cfg: Config, n: int, **kwargs):
    return run_generic(cfg, n, naive=True, **kwargs)


def run_fast(cfg: Config, n: int, seed: int, prompts: list[str], dev: str, tokenizer, **_):
    from agents import LMActorCriticPolicy
    from agents.rlhf_ppo import RLHFPPO

    reward = SequenceClassifierReward(
        build_score_model(cfg.model, seed, dev), tokenizer, cfg.max_prompt_tokens, cfg.max_new_tokens
    )
    env = make_env(cfg, n, seed, prompts, reward)
    agent = RLHFPPO(
        LMActorCriticPolicy,
        env,
        policy_kwargs={"model": cfg.model, "temperature": cfg.temperature},
        n_epochs=cfg.epochs,
        batch_size=None,
        learning_rate=cfg.learning_rate,
        kl_coef=cfg.kl_coef,
        adaptive_kl=False,
        seed=seed,
        device=dev,
    )
    out = _drive(agent, cfg, dev, True, lambda a: int(a._batch.mask.sum()), "fast")
    env.close()
    return out


# ----------------------------------------------------------------------------- (c) TRL 1.12 PPO
def run_trl(cfg: Config, n: int, seed: int, prompt_ids: torch.Tensor, dev: str, tokenizer, **_) -> dict:
    """TRL's own ``train()``; phases timed by wrapping its module-level ``batch_generation`` (generation)
    and ``forward`` (the first call with gradients starts the update) plus a step-end callback."""
    import trl.experimental.ppo.ppo_trainer as pt
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from textenv import load_model

    P, T, eos = cfg.max_prompt_tokens, cfg.max_new_tokens, tokenizer.eos_token_id
    policy, ref = load_model(cfg.model), load_model(cfg.model)
    reward_model, value_model = build_score_model(cfg.model, seed, dev), build_score_model(cfg.model, seed, dev)
    reps = -(-n // len(prompt_ids))  # the dataloader drops incomplete batches: need >= n rows
    dataset = Dataset.from_dict({"input_ids": prompt_ids.repeat(reps, 1).tolist()})
    tmp = tempfile.mkdtemp(prefix="trl-bench-")
    args = PPOConfig(
        output_dir=tmp,
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=cfg.epochs,
        total_episodes=n * (1 + cfg.iterations),
        response_length=T,
        temperature=cfg.temperature,
        stop_token="eos",
        kl_coef=cfg.kl_coef,
        kl_estimator="k1",
        learning_rate=cfg.learning_rate,
        local_rollout_forward_batch_size=n,
        num_sample_generations=0,
        # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
        missing_eos_penalty=None,
        activation_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=(dev == "cpu"),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=seed,
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        eval_dataset=dataset,
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)

    state = {"t0": None, "update_t0": None, "gen_s": 0.0, "tokens": 0}
    its: list[dict] = []

    def timed_generation(*a, **k):
        with Timer(dev) as t:
            query_responses, logits = orig_generation(*a, **k)
        resp = query_responses[:, P:]
        is_eos = resp == eos
        first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(resp[:, 0], resp.shape[1]))
        state["tokens"] += int(first.sum())
        state["gen_s"] += t.seconds
        return query_responses, logits

    def timed_forward(*a, **k):
        if torch.is_grad_enabled() and state["update_t0"] is None:
            sync(dev)
            state["update_t0"] = time.perf_counter()
        return orig_forward(*a, **k)

    class StepTimes(TrainerCallback):
        def on_train_begin(self, *a, **k):
            sync(dev)
            state["t0"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync(dev)
            now = time.perf_counter()
            it = len(its)
            rec = {
                "tokens": state["tokens"],
                "rollout_s": state["update_t0"] - state["t0"],
                "update_s": now - state["update_t0"],
                "generation_s": state["gen_s"],
            }
            its.append(rec)
            log(
                f"  trl it {it}{' (warm-up)' if it == 0 else ''}: {rec['tokens']} tokens, rollout "
                f"{rec['rollout_s']:.2f}s (generate {rec['generation_s']:.2f}s), update {rec['update_s']:.2f}s"
            )
            state.update(t0=now, update_t0=None, gen_s=0.0, tokens=0)

    trainer.add_callback(StepTimes())
    orig_generation, orig_forward = pt.batch_generation, pt.forward
    pt.batch_generation, pt.forward = timed_generation, timed_forward
    try:
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints a banner; keep stdout for the table
            trainer.train()
    finally:
        pt.batch_generation, pt.forward = orig_generation, orig_forward
        shutil.rmtree(tmp, ignore_errors=True)  # TRL's output_dir: nothing is saved there (save_strategy="no")
    if len(its) != 1 + cfg.iterations:
        raise RuntimeError(f"TRL ran {len(its)} iterations, expected {1 + cfg.iterations}")
    return summarize_iterations(its[1:])


RUNNERS = {"naive": run_naive, "limits": run_limits, "generic": run_generic, "fast": run_fast, "trl": run_trl}


# ----------------------------------------------------------------------------- summaries
def summarize_iterations(its: list[dict]) -> dict:
    """One run: mean seconds per iteration, tokens/s = all tokens / all seconds of the timed iterations."""
    tokens = sum(i["tokens"] for i in its)
    roll = sum(i["rollout_s"] for i in its)
    upd = None if its[0]["update_s"] is None else sum(i["update_s"] for i in its)
    gen = None if its[0]["generation_s"] is None else sum(i["generation_s"] for i in its)
    k = len(its)
    return {
        "tokens_per_iteration": tokens / k,
        "rollout_s": roll / k,
        "update_s": None if upd is None else upd / k,
        "generation_s": None if gen is None else gen / k,
        "iteration_s": None if upd is None else (roll + upd) / k,
        "tokens_per_s": None if upd is None else tokens / (roll + upd),
        "rollout_tokens_per_s": tokens / roll,
    }


def summarize_runs(runs: list[dict]) -> dict:
    """Median over runs of every numeric field (per-run values kept under ``runs``)."""
    keys = [k for k, v in runs[0].items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: median(r[k] for r in runs) for k in keys}
    out.update({k: v for k, v in runs[0].items() if isinstance(v, bool)})
    out["runs"] = runs
    return out


def compute_ratios(res: dict, n: int, T: int) -> dict:
    trl = (res.get("trl") or {}).get("tokens_per_s")
    out = {}
    for m, r in res.items():
        if m == "limits":
            out["limits_generate_vs_trl"] = ratio(r["generate_tokens_per_s"], trl)
        elif m != "trl" and r.get("tokens_per_s") is not None:
            out[f"{m}_vs_trl"] = ratio(r["tokens_per_s"], trl)
        elif m != "trl":  # naive, or generic with its update skipped: rollout tokens/s vs TRL's whole iteration
            out[f"{m}_rollout_vs_trl"] = ratio(r["rollout_tokens_per_s"], trl)
    fast, lim, gen, naive = res.get("fast"), res.get("limits"), res.get("generic"), res.get("naive")
    if fast and lim:
        per_tok_gen = lim["generate_s"] / (n * T)
        out["fast_rollout_vs_generate"] = ratio(fast["rollout_s"] / fast["tokens_per_iteration"], per_tok_gen)
        out["fast_generation_vs_generate"] = ratio(
            (fast.get("generation_s") or float("nan")) / fast["tokens_per_iteration"], per_tok_gen
        )
    if gen and naive:
        out["generic_rollout_vs_naive"] = ratio(gen["rollout_tokens_per_s"], naive["rollout_tokens_per_s"])
    return out


# Issue 8's targets: the fast agent at >= 1.5x TRL PPO tokens/s, its rollout within 1.25x of batched
# generation, the generic SB3 path at >= 3x naive one-env-at-a-time stepping.
TARGETS = {
    "fast_vs_trl": (">=", 1.5),
    "fast_rollout_vs_generate": ("<=", 1.25),
    "generic_rollout_vs_naive": (">=", 3.0),
}


def markdown(results: dict, ratios: dict, cfg: Config) -> str:
    lines = [
        "| batch | method | tokens/s (whole iteration) | rollout s | update s | iteration s | tokens/iter "
        "| peak ΔRSS MB | × TRL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "naive": "naive (1 env, no cache, rollout only)",
        "generic": "generic SB3 PPO",
        "fast": "fast RLHFPPO",
        "trl": "TRL 1.12 PPOTrainer",
    }
    for n, res in results.items():
        for m in ("naive", "generic", "fast", "trl"):
            if m not in res:
                continue
            r = res[m]
            tps = (
                fmt(r["tokens_per_s"])
                if r["tokens_per_s"] is not None
                else f"{fmt(r['rollout_tokens_per_s'])} (rollout only)"
            )
            name = names[m] + (" (update skipped)" if m == "generic" and r.get("update_skipped") else "")
            lines.append(
                f"| {n} | {name} | {tps} | {fmt(r['rollout_s'], 2)} | {fmt(r['update_s'], 2)} | "
                f"{fmt(r['iteration_s'], 2)} | {fmt(r['tokens_per_iteration'])} | {fmt(r['peak_rss_mb'], 0)} | "
                f"{fmt(ratios[n].get(f'{m}_vs_trl', ratios[n].get(f'{m}_rollout_vs_trl')), 2)} |"
            )
        if "limits" in res:
            r = res["limits"]
            lines.append(
                f"| {n} | limit: `generate`, KV cache (new tokens/s) | {fmt(r['generate_tokens_per_s'])} | "
                f"{fmt(r['generate_s'], 2)} | - | - | {fmt(r['tokens_per_iteration'])} | {fmt(r['peak_rss_mb'], 0)} | "
                f"{fmt(ratios[n].get('limits_generate_vs_trl'), 2)} |"
            )
            lines.append(
                f"| {n} | limit: teacher-forced forward (sequence tokens/s) | {fmt(r['forward_seq_tokens_per_s'])} "
                f"| {fmt(r['forward_s'], 2)} | - | - | - | - | - |"
            )
            lines.append(
                f"| {n} | limit: forward + backward (sequence tokens/s) | "
                f"{fmt(r['forward_backward_seq_tokens_per_s'])} | - | "
                f"{fmt(r['forward_backward_s'], 2)} | - | - | - | - |"
            )
    lines.append("")
    for n, rat in ratios.items():
        parts = []
        for key, (op, target) in TARGETS.items():
            v = rat.get(key)
            if v is not None:
                ok = {">": v > target, "<=": v <= target, ">=": v >= target}[op]
                parts.append(f"{key} = {v:.2f} (target {op} {target}: {'met' if ok else 'NOT met'})")
        if parts:
            lines.append(f"- batch {n}: " + "; ".join(parts))
    lines.append(
        f"\n{cfg.model}, prompts {cfg.max_prompt_tokens} tokens, {cfg.max_new_tokens} new tokens, "
        f"temperature {cfg.temperature}, {cfg.epochs} PPO epoch(s), KL coef {cfg.kl_coef} (fixed); median "
        f"of {cfg.runs} run(s) x {cfg.iterations} iteration(s) after 1 warm-up; tokens counted (EOS ends "
        f"an episode early for fast and TRL)."
    )
    return "\n".join(lines)


THROUGHPUT_PANELS = (
    (
        "whole iteration (rollout + update)",
        "tokens_per_s",
        (("generic", "generic SB3 PPO"), ("fast", "fast RLHFPPO"), ("trl", "TRL PPO")),
    ),
    (
        "rollout only (no update)",
        "rollout_tokens_per_s",
        (
            ("naive", "naive: 1 env, no cache"),
            ("generic", "generic SB3 PPO"),
            ("fast", "fast RLHFPPO"),
            ("trl", "TRL PPO"),
            ("limits", "generate (limit)"),
        ),
    ),
)
"""The chart's two panels: (title, result key, (method, label) series). Rollout-only rates are far higher
than whole-iteration ones, so one axis for both made the rollout-only generic path look faster than the
fast agent's whole iteration."""
METHOD_COLORS = {"naive": "C0", "generic": "C1", "fast": "C2", "trl": "C3", "limits": "C4"}
"""One colour per method on both panels."""


def _panel_values(results: dict, method: str, key: str) -> list[float | None]:
    """Per batch size, ``method``'s ``key`` rate (``generate_tokens_per_s`` for the limit), or None."""
    key = "generate_tokens_per_s" if method == "limits" else key
    return [(results[n].get(method) or {}).get(key) for n in results]


def throughput_figure(results: dict):
    """Generated tokens/s per batch size: whole iterations and rollouts alone on two separate panels.

    ``results``: ``{batch size: {method: summary}}`` as :func:`main` builds it. A method with no number
    for a panel (the generic update skipped above ``--generic-max-batch``, naive has no update) has no
    bar there. Returns the ``matplotlib`` ``Figure``.
    """
    from matplotlib.figure import Figure

    sizes = list(results)
    fig = Figure(figsize=(13, 4.5))
    for ax, (title, key, series) in zip(fig.subplots(1, 2), THROUGHPUT_PANELS):
        width = 0.8 / len(series)
        for j, (method, label) in enumerate(series):
            vals = _panel_values(results, method, key)
            xs = [i + (j - (len(series) - 1) / 2) * width for i, v in enumerate(vals) if v]
            vals = [v for v in vals if v]
            if vals:  # a series with no number in this panel gets no legend entry either
                bars = ax.bar(xs, vals, width, label=label, color=METHOD_COLORS[method])
                ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7)
        ax.set_xticks(np.arange(len(sizes)), [f"batch {n}" for n in sizes])
        ax.set_ylabel(f"generated tokens / s ({title.split(' (')[0]})")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("textrlhf throughput")
    fig.tight_layout()
    return fig


def bar_chart(results: dict, path: Path) -> None:
    """Write :func:`throughput_figure` as a PNG."""
    throughput_figure(results).savefig(path, dpi=120)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(Config, argv)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    from textenv import load_prompts, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    prompts = load_prompts("bundled:reviews", split="train")
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.max_prompt_tokens)
    # Import everything up front so that no method's peak-RSS delta includes import-time memory.
    if {"naive", "generic", "fast"} & set(cfg.methods):
        import agents.rlhf_ppo  # noqa: F401  (imported for its memory only)
    if "trl" in cfg.methods:
        import trl.experimental.ppo.ppo_trainer  # noqa: F401  (imported for its memory only)
        from datasets import Dataset  # noqa: F401  (imported for its memory only)
    log(
        f"benchmark: {cfg.model} on {dev}, batch sizes {cfg.batch_sizes}, methods {cfg.methods}, "
        f"{cfg.runs} run(s) x (1 warm-up + {cfg.iterations}) iterations, torch threads {torch.get_num_threads()}"
    )
    results: dict[int, dict] = {}
    naive_done = None
    for n in cfg.batch_sizes:
        results[n] = {}
        for method in [m for m in METHODS if m in cfg.methods]:
            if method == "naive" and naive_done is not None:
                results[n]["naive"] = naive_done  # one env at a time: independent of the batch size
                continue
            runs = []
            for r in range(cfg.runs):
                seed = cfg.seed + r
                log(f"[batch {n}] {method} run {r + 1}/{cfg.runs}")
                torch.manual_seed(seed)
                with PeakRSS() as mem:
                    out = RUNNERS[method](
                        cfg, n, seed=seed, prompts=prompts, prompt_ids=prompt_ids, dev=dev, tokenizer=tokenizer
                    )
                out["peak_rss_mb"] = mem.peak_mb
                if mem.cuda_peak_mb is not None:
                    out["peak_cuda_mb"] = mem.cuda_peak_mb
                runs.append(out)
            results[n][method] = summarize_runs(runs)
            if method == "naive":
                results[n]["naive"]["batch_independent"] = True
                naive_done = results[n]["naive"]
    ratios = {n: compute_ratios(res, n, cfg.max_new_tokens) for n, res in results.items()}
    table = markdown(results, ratios, cfg)
    print(table)

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    notes = [
        "tokens_per_s = tokens generated in the timed iterations / their seconds (rollout + update); tokens are "
        "counted (EOS included; fast and TRL episodes may end early at EOS, generic always generates n*T).",
        "naive: the generic policy with kv_cache=False on one env, rollout phase only (SB3 collect_rollouts incl. "
        "the KL buffer's reference forward); measured once and shared by every batch size.",
        f"generic: update skipped above batch {cfg.generic_max_batch} (one full-window forward+backward per "
        f"transition); minibatch {cfg.generic_batch_size or 'all'} transitions.",
        "trl: rollout_s = iteration start to the first forward with gradients (generation, reference/value/reward "
        "forwards, GAE, gc); update_s = the PPO epochs plus TRL's metrics/logging to the end of the step; "
        "generation_s = its batch_generation calls.",
        "limits: generate with min_new_tokens=max_new_tokens (every row generates all tokens); forward and "
        "forward+backward over the generated (prompt + response) sequences, sequence tokens/s.",
        "peak_rss_mb: psutil-sampled RSS high-water during the method's run (model building included) minus RSS "
        "before it, after gc + malloc_trim; one process, so allocator reuse can lower later methods' numbers.",
    ]
    payload = {
        "config": config_to_dict(cfg),
        "device": dev,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "results": {str(n): r for n, r in results.items()},
        "ratios": {str(n): r for n, r in ratios.items()},
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "notes": notes,
        "markdown": table,
    }
    (cfg.run_dir / "benchmark.json").write_text(json.dumps(payload, indent=2, default=float))
    bar_chart(results, cfg.run_dir / "tokens_per_s.png")
    log(f"wrote {cfg.run_dir / 'benchmark.json'} and {cfg.run_dir / 'tokens_per_s.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
