"""The benchmark's reference point (``scripts/benchmark.py``): TRL 1.12's ``PPOTrainer`` doing the same work.

``trl.experimental.ppo.PPOTrainer`` (trl==1.12.0, the ``bench`` extra; later TRL removed it) runs its own
``train()`` with a separate value model. Same work as the other methods: same model, prompts, prompt
length, batch, temperature, ``response_length = max_new_tokens``, PPO epochs, fixed KL coefficient (k1)
and the same reward module (:func:`scripts.bench_setup.build_score_model`), which TRL calls on token ids.

The phases are timed from inside TRL's loop (:class:`PhaseTimer`): its module-level ``batch_generation``
is wrapped (generation seconds, and the tokens generated: each row's response up to and including its
first EOS), its module-level ``forward`` too (the first call with gradients starts the update), and a
step-end callback closes each iteration.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import torch

from scripts.bench_setup import build_score_model, log
from scripts.bench_summary import summarize_iterations
from scripts.bench_utils import Timer, sync

if TYPE_CHECKING:  # the entry module imports this one; the config is only a type here
    from scripts.benchmark import Config


def run_trl(cfg: Config, n: int, seed: int, prompt_ids: torch.Tensor, dev: str, tokenizer, **_) -> dict:
    """TRL's own ``train()`` for one warm-up plus ``cfg.iterations`` timed iterations of ``n`` prompts.

    Args:
        cfg: the benchmark config.
        n: the batch size (``per_device_train_batch_size``).
        seed: the run's seed (score heads, TRL's seed).
        prompt_ids: the encoded prompts, ``(N, max_prompt_tokens)``.
        dev: the device.
        tokenizer: the policy's tokenizer (TRL's ``processing_class``).

    Returns:
        One run's summary of the timed iterations.

    Raises:
        ImportError: TRL is not installed (``make bench`` installs the bench extra).
        RuntimeError: TRL ran another number of iterations than asked.
    """
    tmp = tempfile.mkdtemp(prefix="trl-bench-")
    try:  # TRL's output_dir: nothing is saved there (save_strategy="no")
        trainer = _ppo_trainer(cfg, n, seed, prompt_ids, dev, tokenizer, tmp)
        its = _train_timed(trainer, PhaseTimer(dev, cfg.max_prompt_tokens, tokenizer.eos_token_id))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(its) != 1 + cfg.iterations:
        raise RuntimeError(f"TRL ran {len(its)} iterations, expected {1 + cfg.iterations}")
    return summarize_iterations(its[1:])


def _ppo_trainer(cfg: Config, n: int, seed: int, prompt_ids: torch.Tensor, dev: str, tokenizer, output_dir: str):
    """TRL's ``PPOTrainer``: policy, reference, reward and value models, the prompts as a dataset."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl.experimental.ppo import PPOTrainer

    from textenv import load_model

    policy, ref = load_model(cfg.model), load_model(cfg.model)
    reward_model, value_model = build_score_model(cfg.model, seed, dev), build_score_model(cfg.model, seed, dev)
    reps = -(-n // len(prompt_ids))  # the dataloader drops incomplete batches: need >= n rows
    dataset = Dataset.from_dict({"input_ids": prompt_ids.repeat(reps, 1).tolist()})
    trainer = PPOTrainer(
        args=_ppo_config(cfg, n, seed, dev, output_dir),
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
    return trainer


def _ppo_config(cfg: Config, n: int, seed: int, dev: str, output_dir: str):
    """TRL's ``PPOConfig`` for the same work as the other methods, without saving, logging or evaluation."""
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=cfg.epochs,
        total_episodes=n * (1 + cfg.iterations),
        response_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        stop_token="eos",
        kl_coef=cfg.kl_coef,
        kl_estimator="k1",
        learning_rate=cfg.learning_rate,
        local_rollout_forward_batch_size=n,
        num_sample_generations=0,
        missing_eos_penalty=None,
        # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
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


class PhaseTimer:
    """Per-iteration tokens and seconds of TRL's PPO loop, measured from inside it.

    An iteration's rollout runs from the step's start to the first ``forward`` with gradients; its
    update from there to the step's end (the PPO epochs plus TRL's metrics and logging).

    Args:
        dev: the device (synchronised before each clock reading).
        prompt_tokens: the prompt width; generated tokens start after it.
        eos: the EOS id (a response's tokens are counted up to and including its first EOS).

    Attributes:
        iterations: one record per finished iteration, the warm-up first: ``tokens``, ``rollout_s``,
            ``update_s``, ``generation_s``.
    """

    def __init__(self, dev: str, prompt_tokens: int, eos: int):
        self.dev, self.prompt_tokens, self.eos = dev, prompt_tokens, eos
        self.iterations: list[dict[str, Any]] = []
        self._t0: float | None = None
        self._update_t0: float | None = None
        self._gen_s, self._tokens = 0.0, 0

    def wrap_generation(self, batch_generation):
        """``batch_generation`` that also times the call and counts the tokens it generated."""

        def timed_generation(*a, **k):
            with Timer(self.dev) as t:
                query_responses, logits = batch_generation(*a, **k)
            resp = query_responses[:, self.prompt_tokens :]  # (n, T)
            is_eos = resp == self.eos
            first = torch.where(
                is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(resp[:, 0], resp.shape[1])
            )  # (n,): tokens up to and including the first EOS, or all T
            self._tokens += int(first.sum())
            self._gen_s += t.seconds
            return query_responses, logits

        return timed_generation

    def wrap_forward(self, forward):
        """``forward`` whose first call with gradients in an iteration marks the update's start."""

        def timed_forward(*a, **k):
            if torch.is_grad_enabled() and self._update_t0 is None:
                sync(self.dev)
                self._update_t0 = time.perf_counter()
            return forward(*a, **k)

        return timed_forward

    def start(self) -> None:
        """The first iteration starts (``on_train_begin``)."""
        sync(self.dev)
        self._t0 = time.perf_counter()

    def end_step(self) -> None:
        """An iteration ends (``on_step_end``): record it and start the next one."""
        sync(self.dev)
        now = time.perf_counter()
        it = len(self.iterations)
        rec = {
            "tokens": self._tokens,
            "rollout_s": self._update_t0 - self._t0,
            "update_s": now - self._update_t0,
            "generation_s": self._gen_s,
        }
        self.iterations.append(rec)
        log(
            f"  trl it {it}{' (warm-up)' if it == 0 else ''}: {rec['tokens']} tokens, rollout "
            f"{rec['rollout_s']:.2f}s (generate {rec['generation_s']:.2f}s), update {rec['update_s']:.2f}s"
        )
        self._t0, self._update_t0, self._gen_s, self._tokens = now, None, 0.0, 0


def _train_timed(trainer, timer: PhaseTimer) -> list[dict[str, Any]]:
    """Run ``trainer.train()`` with TRL's ``batch_generation`` and ``forward`` wrapped by ``timer``.

    Returns:
        ``timer.iterations``. TRL's module functions are restored afterwards, whatever happens.
    """
    import trl.experimental.ppo.ppo_trainer as pt
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_train_begin(self, *a, **k):
            timer.start()

        def on_step_end(self, *a, **k):
            timer.end_step()

    trainer.add_callback(StepTimes())
    orig_generation, orig_forward = pt.batch_generation, pt.forward
    pt.batch_generation, pt.forward = timer.wrap_generation(orig_generation), timer.wrap_forward(orig_forward)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints a banner; keep stdout for the table
            trainer.train()
    finally:
        pt.batch_generation, pt.forward = orig_generation, orig_forward
    return timer.iterations


__all__ = ["PhaseTimer", "run_trl"]
