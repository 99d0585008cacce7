"""The benchmark's reference points (``scripts/benchmark.py``): TRL's ``GRPOTrainer`` and ``RLOOTrainer``.

What users of TRL pick today (trl==1.16.0, the ``bench`` extra; TRL removed its PPO trainer in 1.13, so
the PPO comparison of 2026-11-22 is a dated page of the docs). Each runs its own ``train()`` on the same
work as the project's ``grpo`` and ``rloo`` agents:

* same model (saved once to a temporary folder, from which TRL loads the policy and builds its
  reference, as it does from a hub name), same prompts (the decoded ``max_prompt_tokens`` windows every
  method gets), same batch of ``n`` responses per iteration in groups of ``group_size`` per prompt
  (``per_device_train_batch_size=n``, ``num_generations=group_size``), same temperature and
  ``max_completion_length = max_new_tokens`` (EOS ends a response);
* same reward: the one :class:`scripts.bench_setup.SequenceClassifierReward` object, called by TRL as a
  reward function on the prompt and completion texts exactly as the env calls it;
* one optimizer step per batch (``num_iterations=1``, ``steps_per_generation=1``, no gradient
  accumulation), KL coefficient ``beta = kl_coef`` (so TRL builds and runs its reference model, as the
  agents do), activation checkpointing off (TRL turns it on by default; the agents do not checkpoint).

The phases are timed from inside TRL's loop (:class:`PhaseTimer`) by wrapping three of the trainer's own
methods on the instance: ``_generate_and_score_completions`` (the rollout: generation, reward, reference
log-probs, advantages), ``_generate_single_turn`` (``generate`` alone) and ``_generate`` (whose
completion ids give the tokens generated: each response up to and including its first EOS); a step-end
callback closes each iteration, whose update is the rest of the step (loss, backward, optimizer step).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import warnings
from typing import TYPE_CHECKING, Any

from scripts.bench_setup import SequenceClassifierReward, build_score_model, log
from scripts.bench_summary import summarize_iterations
from scripts.bench_utils import Timer, fault_delta, minor_faults, sync

if TYPE_CHECKING:  # the entry module imports this one; the config is only a type here
    from scripts.benchmark import Config

# transformers 5.24 renamed gradient_checkpointing to activation_checkpointing; TRL 1.16's configs and trainers
# still use the old names, which warn (the flag itself is off here).
_RENAMED_CHECKPOINTING = r".*gradient_checkpointing.*deprecated"


def run_trl_grpo(cfg: Config, n: int, **kwargs) -> dict:
    """TRL's ``GRPOTrainer`` (arguments as :func:`run_trl`)."""
    return run_trl(cfg, n, algorithm="GRPO", **kwargs)


def run_trl_rloo(cfg: Config, n: int, **kwargs) -> dict:
    """TRL's ``RLOOTrainer`` (arguments as :func:`run_trl`)."""
    return run_trl(cfg, n, algorithm="RLOO", **kwargs)


def run_trl(
    cfg: Config, n: int, seed: int, prompts: list[str], dev: str, tokenizer, algorithm: str = "GRPO", **_
) -> dict:
    """TRL's own ``train()`` for ``cfg.warmup`` untimed plus ``cfg.iterations`` timed iterations of ``n`` responses.

    Args:
        cfg: the benchmark config.
        n: responses per iteration (``per_device_train_batch_size``), ``n / group_size`` prompts.
        seed: the run's seed (score head, TRL's seed).
        prompts: the prompt texts (the decoded windows, :func:`scripts.bench_setup.window_texts`).
        dev: the device.
        tokenizer: the policy's tokenizer (TRL's ``processing_class`` and the reward's).
        algorithm: ``"GRPO"`` or ``"RLOO"``.

    Returns:
        One run's summary of the timed iterations.

    Raises:
        ImportError: TRL is not installed (``pip install -e '.[bench]'``; ``make setup`` does).
        RuntimeError: TRL ran another number of iterations than asked.
    """
    reward = SequenceClassifierReward(
        build_score_model(cfg.model, seed, dev), tokenizer, cfg.max_prompt_tokens, cfg.max_new_tokens
    )
    tmp = tempfile.mkdtemp(prefix="trl-bench-")
    try:  # the saved model, and TRL's output_dir (nothing is saved there: save_strategy="no")
        trainer = _trainer(algorithm, cfg, n, seed, prompts, dev, tokenizer, reward, tmp)
        timer = PhaseTimer(dev, warmup=cfg.warmup)
        its = _train_timed(trainer, timer, label=f"trl_{algorithm.lower()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(its) != cfg.warmup + cfg.iterations:
        raise RuntimeError(f"TRL ran {len(its)} iterations, expected {cfg.warmup + cfg.iterations}")
    return {**summarize_iterations(its), "precision": "bf16" if trainer.args.bf16 else "fp32"}


def _trainer(algorithm: str, cfg: Config, n: int, seed: int, prompts, dev: str, tokenizer, reward, tmp: str):
    """TRL's trainer: the policy loaded (and its reference built) by TRL from the saved model."""
    import trl
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from textenv import load_model

    model_dir = f"{tmp}/model"
    load_model(cfg.model).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    def bench_reward(prompts: list[str], completions: list[str], **_) -> list[float]:
        return reward.score(prompts, completions).tolist()  # the env's reward object, on the same texts

    config_cls = {"GRPO": trl.GRPOConfig, "RLOO": trl.RLOOConfig}[algorithm]
    trainer_cls = {"GRPO": trl.GRPOTrainer, "RLOO": trl.RLOOTrainer}[algorithm]
    reps = -(-n * (cfg.warmup + cfg.iterations) // len(prompts))  # enough prompts for every step
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _RENAMED_CHECKPOINTING, FutureWarning)
        trainer = trainer_cls(
            model=model_dir,
            reward_funcs=bench_reward,
            args=config_cls(**_trl_args(cfg, n, seed, dev, f"{tmp}/out")),
            train_dataset=Dataset.from_dict({"prompt": list(prompts) * reps}),
            processing_class=tokenizer,
        )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def _trl_args(cfg: Config, n: int, seed: int, dev: str, output_dir: str) -> dict[str, Any]:
    """The ``GRPOConfig`` / ``RLOOConfig`` fields for the same work as the agents, without saving or logging."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=n,
        num_generations=cfg.group_size,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        num_iterations=cfg.epochs,
        max_steps=cfg.warmup + cfg.iterations,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=1.0,
        top_k=0,
        beta=cfg.kl_coef,
        learning_rate=cfg.learning_rate,
        gradient_checkpointing=False,
        bf16=cfg.precision == "bf16",  # TRL's default is True; the benchmark states it on both sides
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
    """Per-iteration tokens and seconds of a TRL trainer's loop, measured from inside it.

    An iteration runs from the previous step's end (or the start of training) to this step's end; its
    rollout is the trainer's ``_generate_and_score_completions`` call, its update the rest.

    Args:
        dev: the device (synchronised before each clock reading). Tokens need no EOS id: TRL's completion
            ids already stop after the first EOS.
        warmup: how many first iterations are warm-ups (flagged ``warmup`` in their records).

    Attributes:
        iterations: one record per finished iteration, the warm-ups first: ``tokens``, ``rollout_s``,
            ``update_s``, ``generation_s``, ``minor_faults``, ``warmup``.
    """

    def __init__(self, dev: str, warmup: int = 1):
        self.dev = dev
        self.warmup = warmup
        self.iterations: list[dict[str, Any]] = []
        self._t0: float | None = None
        self._faults: int | None = None
        self._rollout_s = self._gen_s = 0.0
        self._tokens = 0

    def wrap_rollout(self, generate_and_score):
        """``_generate_and_score_completions`` that also times the call (the rollout phase)."""

        def timed(*a, **k):
            with Timer(self.dev) as t:
                out = generate_and_score(*a, **k)
            self._rollout_s += t.seconds
            return out

        return timed

    def wrap_generation(self, generate_single_turn):
        """``_generate_single_turn`` that also times the call (``generate`` alone)."""

        def timed(*a, **k):
            with Timer(self.dev) as t:
                out = generate_single_turn(*a, **k)
            self._gen_s += t.seconds
            return out

        return timed

    def wrap_decode(self, generate):
        """``_generate`` that also counts the tokens generated: its completion ids, EOS included."""

        def counted(*a, **k):
            out = generate(*a, **k)
            self._tokens += sum(len(ids) for ids in out[1])  # (prompt_ids, completion_ids, ...)
            return out

        return counted

    def start(self) -> None:
        """The first iteration starts (``on_train_begin``)."""
        sync(self.dev)
        self._t0 = time.perf_counter()
        self._faults = minor_faults()

    def end_step(self, label: str = "trl") -> None:
        """An iteration ends (``on_step_end``): record it and start the next one."""
        sync(self.dev)
        now = time.perf_counter()
        it = len(self.iterations)
        rec = {
            "tokens": self._tokens,
            "rollout_s": self._rollout_s,
            "update_s": now - self._t0 - self._rollout_s,
            "generation_s": self._gen_s,
            "minor_faults": fault_delta(self._faults),
            "warmup": it < self.warmup,
        }
        self.iterations.append(rec)
        log(
            f"  {label} it {it}{' (warm-up)' if rec['warmup'] else ''}: {rec['tokens']} tokens, rollout "
            f"{rec['rollout_s']:.2f}s (generate {rec['generation_s']:.2f}s), update {rec['update_s']:.2f}s"
        )
        self._t0, self._rollout_s, self._gen_s, self._tokens = now, 0.0, 0.0, 0
        self._faults = minor_faults()


def _train_timed(trainer, timer: PhaseTimer, label: str) -> list[dict[str, Any]]:
    """Run ``trainer.train()`` with its rollout, generation and decoding methods wrapped by ``timer``.

    Returns:
        ``timer.iterations``. The wrappers are instance attributes of this one trainer, removed afterwards.
    """
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_train_begin(self, *a, **k):
            timer.start()

        def on_step_end(self, *a, **k):
            timer.end_step(label)

    trainer.add_callback(StepTimes())
    wrappers = {
        "_generate_and_score_completions": timer.wrap_rollout,
        "_generate_single_turn": timer.wrap_generation,
        "_generate": timer.wrap_decode,
    }
    for name, wrap in wrappers.items():
        setattr(trainer, name, wrap(getattr(trainer, name)))
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():  # keep stdout for the table
            warnings.filterwarnings("ignore", _RENAMED_CHECKPOINTING, FutureWarning)
            trainer.train()
    finally:
        for name in wrappers:
            delattr(trainer, name)
    return timer.iterations


__all__ = ["PhaseTimer", "run_trl", "run_trl_grpo", "run_trl_rloo"]
