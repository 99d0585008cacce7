"""The benchmark's in-project methods (``scripts/benchmark.py``): raw limits, naive, generic SB3 PPO, fast agents.

* ``limits``  - batched KV-cached ``generate`` (exactly ``max_new_tokens`` new tokens per row), a
  teacher-forced forward and a forward+backward over the whole (prompt + response) sequences;
* ``naive``   - the generic policy with ``kv_cache=False`` on ONE env (a full forward of the window per
  token, no cache), rollout phase only;
* ``generic`` - ``agents.make_agent("ppo")``: SB3's own PPO, KV-cached rollouts, one forward+backward of
  the whole window per stored transition in the update (skipped above ``--generic-max-batch``);
* ``rlhf_ppo``, ``grpo``, ``rloo`` - the fast agents (``agents.make_agent``): lock-step KV-cached
  rollouts through the native vector env, sequence-level updates.

Every runner takes the same keyword arguments (``cfg, n, seed, prompts, prompt_ids, dev, tokenizer``),
ignores those it does not need, runs ``cfg.warmup`` untimed iterations plus ``cfg.iterations`` timed ones, and
returns one run's summary (:func:`scripts.bench_summary.summarize_iterations` for the agents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from scripts.bench_setup import SequenceClassifierReward, build_score_model, log, make_env
from scripts.bench_summary import summarize_iterations
from scripts.bench_utils import Timer, fault_delta, minor_faults

if TYPE_CHECKING:  # the entry module imports this one; the config is only a type here
    from scripts.benchmark import Config


def run_limits(cfg: Config, n: int, seed: int, prompt_ids: torch.Tensor, dev: str, **_) -> dict:
    """The raw limits at batch ``n``: KV-cached ``generate``, teacher-forced forward, forward+backward.

    Args:
        cfg: the benchmark config.
        n: the batch size (the first ``n`` encoded prompts).
        seed: unused (``generate`` samples from the seeded global RNG, seeded by the caller).
        prompt_ids: the encoded prompts, ``(N, max_prompt_tokens)``.
        dev: the device.

    Returns:
        Mean seconds of each phase over the timed iterations and their tokens/s (new tokens for
        ``generate``, whole-sequence tokens for the forward passes).
    """
    from textenv import load_model

    lm = load_model(cfg.model, device=dev)
    P, T = cfg.max_prompt_tokens, cfg.max_new_tokens
    q = prompt_ids[:n].to(dev)  # (n, P)
    keys = ("generate_s", "forward_s", "forward_backward_s")
    its = []
    for it in range(cfg.warmup + cfg.iterations):
        faults = minor_faults()
        seconds = _limits_iteration(lm, q, cfg, dev)
        its.append({**dict(zip(keys, seconds)), "minor_faults": fault_delta(faults), "warmup": it < cfg.warmup})
        log(
            f"  limits it {it}{' (warm-up)' if it < cfg.warmup else ''}: generate {seconds[0]:.2f}s "
            f"forward {seconds[1]:.2f}s fwd+bwd {seconds[2]:.2f}s"
        )
    g, f, b = (float(np.mean([i[k] for i in its if not i["warmup"]])) for k in keys)
    seq_tokens = n * (P + T)
    return {
        "precision": cfg.precision,
        "generate_s": g,
        "forward_s": f,
        "forward_backward_s": b,
        "tokens_per_iteration": n * T,
        "generate_tokens_per_s": n * T / g,
        "forward_seq_tokens_per_s": seq_tokens / f,
        "forward_backward_seq_tokens_per_s": seq_tokens / b,
        "iterations": its,
    }


def _limits_iteration(lm, q: torch.Tensor, cfg: Config, dev: str) -> tuple[float, float, float]:
    """Seconds of one ``generate`` of exactly ``max_new_tokens`` tokens per row from the prompts ``q``
    ``(n, P)``, then of a no-grad forward and of a forward+backward over the ``(n, P + T)`` sequences."""
    P, T = cfg.max_prompt_tokens, cfg.max_new_tokens
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
    # bf16: the trainers' mixed precision (fp32 weights, bf16 autocast), so the limits do the same arithmetic.
    autocast = torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    with torch.no_grad(), autocast, Timer(dev) as t_gen:
        seq = lm.generate(input_ids=q, attention_mask=(q != pad).long(), **gen_kwargs)  # (n, P + T)
    assert seq.shape[1] == P + T, seq.shape
    mask = torch.cat([(q != pad).long(), torch.ones_like(seq[:, P:])], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: first real token at 0 (docs/design.md section 5)
    with torch.no_grad(), autocast, Timer(dev) as t_fwd:
        lm(input_ids=seq, attention_mask=mask, position_ids=pos)
    with Timer(dev) as t_bwd:
        with autocast:
            logits = lm(input_ids=seq, attention_mask=mask, position_ids=pos).logits[:, P - 1 : -1].float()  # (n, T, V)
        logp = torch.log_softmax(logits / cfg.temperature, -1).gather(-1, seq[:, P:, None])
        logp.mean().backward()
        lm.zero_grad(set_to_none=True)
    return t_gen.seconds, t_fwd.seconds, t_bwd.seconds


# ----------------------------------------------------------------------------- SB3 agents: naive, generic, fast
def _drive(agent, cfg: Config, dev: str, update: bool, count_tokens, label: str) -> dict:
    """Warm-up + timed iterations of ``collect_rollouts`` (+ ``train``), outside ``learn``'s step budget."""
    _, callback = agent._setup_learn(10**12, callback=None)
    callback.on_training_start(locals(), globals())
    its = []
    for it in range(cfg.warmup + cfg.iterations):
        faults = minor_faults()
        with Timer(dev) as t_roll:
            agent.collect_rollouts(agent.env, callback, agent.rollout_buffer, n_rollout_steps=agent.n_steps)
        gen_s = agent.logger.name_to_value.get("time/generation_s")
        t_upd = None
        if update:
            with Timer(dev) as t:
                agent.train()
            t_upd = t.seconds
        tokens = count_tokens(agent)
        its.append(
            {
                "tokens": tokens,
                "rollout_s": t_roll.seconds,
                "update_s": t_upd,
                "generation_s": gen_s,
                "minor_faults": fault_delta(faults),
                "warmup": it < cfg.warmup,
            }
        )
        log(
            f"  {label} it {it}{' (warm-up)' if it < cfg.warmup else ''}: {tokens} tokens, "
            f"rollout {t_roll.seconds:.2f}s" + (f", update {t_upd:.2f}s" if t_upd is not None else "")
        )
    return summarize_iterations(its)


def run_generic(cfg: Config, n: int, seed: int, prompts: list[str], dev: str, tokenizer, naive: bool = False, **_):
    """SB3's own PPO (``agents.make_agent("ppo")``) on ``n`` envs with KV-cached rollouts.

    Args:
        cfg: the benchmark config.
        n: the batch size (envs).
        seed: the run's seed (score head, env, agent).
        prompts: the prompt texts.
        dev: the device.
        tokenizer: the policy's tokenizer (for the reward).
        naive: one env and no KV cache, rollout only (see :func:`run_naive`).

    Returns:
        One run's summary with ``update_skipped`` (no update when naive or above ``generic_max_batch``).
    """
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
        policy_kwargs={"kv_cache": not naive, "precision": cfg.precision},
    )
    update = not naive and n <= cfg.generic_max_batch
    out = _drive(agent, cfg, dev, update, lambda a: a.n_steps * a.n_envs, "naive" if naive else "generic")
    out["update_skipped"] = not update
    out["precision"] = agent.policy.precision
    env.close()
    return out


def run_naive(cfg: Config, n: int, **kwargs):
    """:func:`run_generic` with ``naive=True``: one env, a full window forward per token, rollout only."""
    return run_generic(cfg, n, naive=True, **kwargs)


def run_agent(cfg: Config, n: int, seed: int, prompts: list[str], dev: str, tokenizer, algo: str = "rlhf_ppo", **_):
    """A fast agent (``rlhf_ppo``, ``grpo`` or ``rloo``) on ``n`` envs (arguments as :func:`run_generic`'s).

    Returns:
        One run's summary; tokens are counted from the rollout batch's mask (EOS ends episodes early).
    """
    agent, env = build_fast_agent(cfg, n, seed, prompts, dev, tokenizer, algo)
    out = _drive(agent, cfg, dev, True, lambda a: int(a._batch.mask.sum()), algo)
    out["precision"] = agent.policy.precision  # what the agent ran in, for the report
    env.close()
    return out


def build_fast_agent(cfg: Config, n: int, seed: int, prompts: list[str], dev: str, tokenizer, algo: str):
    """The benchmark's fast agent ``algo`` and its env of ``n`` rows: ``(agent, env)``.

    ``grpo`` and ``rloo`` answer each prompt ``cfg.group_size`` times (``n / group_size`` prompts);
    ``rlhf_ppo`` answers ``n`` prompts. Every agent does one optimizer step per batch (one minibatch,
    ``cfg.epochs`` epochs) at the fixed KL coefficient. Also used by ``scripts/bench_decode_threads.py``.
    """
    import agents

    reward = SequenceClassifierReward(
        build_score_model(cfg.model, seed, dev), tokenizer, cfg.max_prompt_tokens, cfg.max_new_tokens
    )
    env = make_env(cfg, n, seed, prompts, reward)
    group = {} if algo == "rlhf_ppo" else {"group_size": cfg.group_size}
    agent = agents.make_agent(
        algo,
        env,
        temperature=cfg.temperature,
        n_epochs=cfg.epochs,
        batch_size=None,
        learning_rate=cfg.learning_rate,
        kl_coef=cfg.kl_coef,
        adaptive_kl=False,
        seed=seed,
        device=dev,
        policy_kwargs={"precision": cfg.precision},
        **group,
    )
    return agent, env


def run_rlhf_ppo(cfg: Config, n: int, **kwargs) -> dict:
    """:func:`run_agent` with ``agents.rlhf_ppo.RLHFPPO`` (GAE, value head, clipped surrogate)."""
    return run_agent(cfg, n, algo="rlhf_ppo", **kwargs)


def run_grpo(cfg: Config, n: int, **kwargs) -> dict:
    """:func:`run_agent` with the ``grpo`` agent (group-normalised advantages, k3 KL in the loss)."""
    return run_agent(cfg, n, algo="grpo", **kwargs)


def run_rloo(cfg: Config, n: int, **kwargs) -> dict:
    """:func:`run_agent` with the ``rloo`` agent (leave-one-out baseline, KL in the reward)."""
    return run_agent(cfg, n, algo="rloo", **kwargs)
