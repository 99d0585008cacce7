"""Stages ``preferences`` and ``reward-model``: label pairs of SFT samples, fit a Bradley-Terry RM.

``preferences``: the SFT policy continues each train review prompt K times and the simulated
annotator (VADER sentiment by default) labels all K(K-1)/2 pairs of each prompt, as InstructGPT's
labellers rank K responses at once (Ouyang et al. 2022) and as Ziegler et al. (2019) collect
offline "mock sentiment" comparisons. The work is done by
:func:`reward_models.generate_preference_pairs`; this stage only wires it to the run directory.

``reward-model``: a MiniLM encoder + scalar head trained on ``-log sigmoid(r_chosen - r_rejected)``
(:func:`reward_models.train_reward_model`), pairs split by prompt into train / held-out, then
normalised so that SFT-policy samples score mean 0, std 1 (Stiennon et al. 2020), so that the
KL coefficient means the same thing whatever the RM's raw scale.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from scripts.run_dir import atomic_write_csv, atomic_write_json, clear_stage, mark_done, require, stage_dir
from scripts.stages.common import StageTimer, abs_path, accuracy_band, fmt, resolve_device, seed_everything
from scripts.stages.config import PipelineConfig


def run_preferences(cfg: PipelineConfig) -> str:
    """Sample and label pairs (or load ``preferences.data``); write ``preferences/pairs.jsonl``."""
    from reward_models import load_preferences, save_preferences
    from reward_models.annotator import AnnotatorConfig, generate_preference_pairs, load_prompt_file, write_pairs

    timer, run, pc = StageTimer("preferences"), cfg.run, cfg.preferences
    out = stage_dir(run.run_dir, "preferences")
    seed_everything(run.seed)
    if pc.data:
        pairs = load_preferences(pc.data)
        save_preferences(pairs, out / "pairs.jsonl")
        text = f"{len(pairs)} pairs loaded from {pc.data!r}"
    else:
        from textenv import load_model, load_tokenizer
        from textrlhf.precision import sampling_dtype

        sft_dir = abs_path(require(run.run_dir, "sft", "preferences") / "model")
        device = resolve_device(run.device)
        dtype = sampling_dtype(pc.precision, device)  # bf16 where native: sampling trains nothing
        with timer.phase("load"):
            model = load_model(sft_dir, dtype=dtype, device=device)
            tokenizer = load_tokenizer(sft_dir)
        prompts = load_prompt_file(None, task="review", split="train")[: pc.max_prompts]
        # policy= is only recorded in pairs.jsonl and its .meta.json (the model is passed in): relative to the
        # run folder, so a copied or moved run never points back at the original one.
        acfg = AnnotatorConfig(
            policy="sft/model",
            annotator=run.annotator,
            samples_per_prompt=pc.samples_per_prompt,
            temperature=pc.temperature,
            max_new_tokens=run.max_new_tokens,
            batch_size=pc.batch_size,
            noise_temperature=pc.noise_temperature,
            min_gap=pc.min_gap,
            seed=run.seed,
            precision=pc.precision,
        )
        rows, meta = generate_preference_pairs(prompts, acfg, model=model, tokenizer=tokenizer, progress=run.progress)
        if len(rows) < 2:
            raise ValueError(
                f"the annotator {run.annotator!r} separated only {len(rows)} pair(s) out of "
                f"{meta['counts']['candidates']}; sample more (preferences.samples_per_prompt, "
                f"max_prompts) or lower preferences.min_gap"
            )
        for name, seconds in meta["seconds_by_phase"].items():
            timer.add(name, seconds)
        write_pairs(rows, out / "pairs.jsonl", meta)
        c = meta["counts"]
        text = (
            f"{c['pairs']} pairs from {c['prompts']} prompts x {pc.samples_per_prompt} samples "
            f"(annotator {run.annotator!r}; {c['skipped_ties']} ties, {c['skipped_invalid']} invalid skipped; "
            f"sampled in {meta['precision']})"
        )
    summary = timer.summary(text)
    mark_done(run.run_dir, "preferences", summary, timer.seconds, phases=timer.phase_seconds())
    return summary


@contextlib.contextmanager
def capture_trainer_logs():
    """Collect ``Trainer.state.log_history`` of :func:`reward_models.train_reward_model` (loss curves).

    ``train_reward_model`` returns final metrics only; for the loss/accuracy plot this swaps the
    ``BradleyTerryTrainer`` of the module that builds it (``reward_models.bt_training``) for a subclass
    that keeps its log history, for the duration of the block. (If ``train_reward_model`` ever returns
    ``log_history`` itself, that is used instead.) ``tests/scripts/test_pipeline.py`` checks that the
    tiny run's ``train_log.csv`` has loss rows, so a patch that misses its target fails there.
    """
    import reward_models.bt_training as bt

    history: list[dict] = []
    original = bt.BradleyTerryTrainer

    class _Recording(original):  # type: ignore[misc, valid-type]
        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            finally:
                history.extend(self.state.log_history)

    bt.BradleyTerryTrainer = _Recording
    try:
        yield history
    finally:
        bt.BradleyTerryTrainer = original


def _build_reward_model(cfg: PipelineConfig):
    """A fresh :class:`reward_models.bradley_terry.BradleyTerryRewardModel` from the ``reward_model`` section."""
    from reward_models import BradleyTerryRewardModel, RewardModelConfig

    rc = cfg.reward_model
    return BradleyTerryRewardModel.build(
        RewardModelConfig(
            backbone=rc.backbone,
            pooling=rc.pooling,
            max_length=rc.max_length,
            random_init=rc.random_init,
            config_overrides=dict(rc.config_overrides),
            seed=cfg.run.seed,
        )
    )


def _train(cfg: PipelineConfig, model, train_pairs, held) -> tuple[dict, list[dict]]:
    """Train on the Bradley-Terry loss; returns the final metrics and the trainer's log history."""
    from reward_models import RewardTrainingConfig, train_reward_model

    rc = cfg.reward_model
    train_cfg = RewardTrainingConfig(
        learning_rate=rc.learning_rate,
        num_epochs=rc.num_epochs,
        batch_size=rc.batch_size,
        warmup_ratio=rc.warmup_ratio,
        seed=cfg.run.seed,
        logging_steps=rc.logging_steps,
        progress_bar=cfg.run.progress,
    )
    with capture_trainer_logs() as history:
        metrics = train_reward_model(model, train_pairs, held or None, train_cfg)
    return metrics, metrics.pop("log_history", None) or history


def _log_rows(history: list[dict]) -> list[dict]:
    """The loss and held-out rows of a trainer log history, as ``train_log.csv`` rows."""
    return [
        {
            "step": h.get("step"),
            "epoch": h.get("epoch"),
            "loss": h.get("loss"),
            "eval_loss": h.get("eval_loss"),
            "eval_accuracy": h.get("eval_accuracy"),
        }
        for h in history
        if "loss" in h or "eval_loss" in h
    ]


def run_reward_model(cfg: PipelineConfig) -> str:
    """Train, evaluate, normalise and save the reward model to ``reward_model/model``."""
    from reward_models import evaluate_preferences, load_preferences, split_by_prompt

    timer, run, rc = StageTimer("reward-model"), cfg.run, cfg.reward_model
    pairs_path = require(run.run_dir, "preferences", "reward-model") / "pairs.jsonl"
    clear_stage(run.run_dir, "reward-model")
    out = stage_dir(run.run_dir, "reward-model")
    seed_everything(run.seed)
    pairs = load_preferences(pairs_path)
    train_pairs, held = split_by_prompt(pairs, rc.eval_fraction, seed=run.seed)
    with timer.phase("load"):
        model = _build_reward_model(cfg)
        model.to(resolve_device(run.device))
    eval_set = held or train_pairs  # tiny data may leave nothing held out: then report train accuracy
    with timer.phase("evaluate"):
        before = evaluate_preferences(model, eval_set)
    with timer.phase("train"):
        metrics, history = _train(cfg, model, train_pairs, held)
    with timer.phase("evaluate"):
        after = evaluate_preferences(model, eval_set, n_resamples=cfg.evaluate.n_resamples, seed=run.seed)
    if rc.normalize:  # the pairs' responses are SFT-policy samples: the reference distribution
        with timer.phase("normalize"):
            samples = sorted({(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)})
            model.fit_normalization([s[0] for s in samples], [s[1] for s in samples])
    model.to("cpu")
    with timer.phase("save"):
        model.save_pretrained(
            out / "model", metadata={"pipeline_run": Path(run.run_dir).resolve().name, "pipeline_stage": "reward-model"}
        )  # a name, never a path
    atomic_write_csv(out / "train_log.csv", _log_rows(history), ["step", "epoch", "loss", "eval_loss", "eval_accuracy"])
    result = {
        "train_pairs": len(train_pairs),
        "heldout_pairs": len(held),
        "accuracy_set": "held-out" if held else "train",
        "before": before,
        "after": after,
        "train": metrics,
        "gain": model.gain,
        "bias": model.bias,
    }
    atomic_write_json(out / "metrics.json", result)
    summary = timer.summary(
        f"{len(train_pairs)} train / {len(held)} held-out pairs, {'held-out' if held else 'train'} accuracy "
        f"{fmt(before['accuracy'], 2)} -> {fmt(after['accuracy'], 2)}{accuracy_band(after)}, "
        f"loss {fmt(before['loss'])} -> {fmt(after['loss'])}"
    )
    mark_done(run.run_dir, "reward-model", summary, timer.seconds, phases=timer.phase_seconds())
    return summary
