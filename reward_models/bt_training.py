"""Fitting a :class:`~reward_models.bradley_terry.BradleyTerryRewardModel` to preference pairs.

:func:`train_reward_model` is built on ``transformers.Trainer`` via :class:`BradleyTerryTrainer`.
TRL's ``RewardTrainer`` would do the same job but TRL is not a dependency of this project (it pins
``transformers`` versions and its API moves fast); the only reward-model-specific part is the loss,
which a 20-line ``compute_loss`` gives. :func:`evaluate_preferences` measures a model on held-out
pairs with the metrics the Trainer reports each epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from reward_models.bradley_terry import BradleyTerryRewardModel, bradley_terry_loss
from reward_models.config import RewardTrainingConfig, config_from_dict
from reward_models.preferences import PreferencePair, pairs_to_dataset
from textrlhf.progress import bar_only
from textrlhf.stats import bootstrap


class _PairCollator:
    """Tokenize a batch of pairs into one ``2B``-row batch: chosen rows first, then rejected."""

    def __init__(self, model: BradleyTerryRewardModel):
        self.model = model

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [r["prompt"] for r in rows] * 2
        responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        enc = {k: v.cpu() for k, v in self.model.tokenize(prompts, responses).items()}
        enc["margin"] = torch.tensor([float(r.get("margin", 0.0)) for r in rows], dtype=torch.float32)
        return enc


class BradleyTerryTrainer(Trainer):
    """``transformers.Trainer`` with the Bradley-Terry loss (TRL's RewardTrainer is not a dependency).

    Each batch holds ``B`` chosen rows then ``B`` rejected rows, scored in one forward pass.

    Args:
        margin: constant margin added to each pair's own margin in the loss.
        *args, **kwargs: as for ``transformers.Trainer``.
    """

    def __init__(self, *args: Any, margin: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.margin = margin

    def _rewards(self, model, inputs):
        features = {k: v for k, v in inputs.items() if k != "margin"}
        rewards = model(**features)
        n = rewards.shape[0] // 2
        return rewards[:n], rewards[n:], inputs["margin"] + self.margin

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Bradley-Terry loss of the batch (and the two reward vectors if ``return_outputs``)."""
        chosen, rejected, margin = self._rewards(model, inputs)
        loss = bradley_terry_loss(chosen, rejected, margin)
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss, ``(B, 2)`` rewards ``[chosen, rejected]`` and dummy labels, for ``compute_metrics``."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            chosen, rejected, margin = self._rewards(model, inputs)
            loss = bradley_terry_loss(chosen, rejected, margin).detach()
        if prediction_loss_only:
            return loss, None, None
        # The "label" of a pair is always "chosen wins" (column 0); Trainer wants a tensor.
        return loss, torch.stack([chosen, rejected], dim=1), torch.zeros_like(chosen)


def _compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's per-epoch metrics, from :meth:`BradleyTerryTrainer.prediction_step`'s rewards."""
    preds = np.asarray(eval_pred.predictions)  # (n_pairs, 2): [chosen, rejected]
    diff = preds[:, 0] - preds[:, 1]
    return {"accuracy": float((diff > 0).mean()), "mean_margin": float(diff.mean())}


def evaluate_preferences(
    model: BradleyTerryRewardModel,
    pairs: Sequence[PreferencePair],
    batch_size: int | None = None,
    n_resamples: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy (share of pairs with ``r_chosen > r_rejected``), mean raw margin and BT loss.

    Ties count as errors. Margins are in raw (unnormalised) reward units. A held-out set of ~100 pairs
    from ~30 prompts measures accuracy to about +-0.07 (docs/results/2026-12-01-pipeline-seeds.md), so
    with ``n_resamples`` the accuracy comes with its 95% bootstrap interval, resampling whole prompts
    (the pairs of one prompt share its samples: they are not independent).

    Args:
        model: the reward model (scored in eval mode, without gradients).
        pairs: the preference pairs.
        batch_size: pairs per forward (default: the model config's).
        n_resamples: bootstrap resamples of the accuracy's interval (0: no interval).
        seed: seed of the resampling.

    Returns:
        ``accuracy``, ``mean_margin``, ``loss`` (mean BT loss with each pair's margin) and ``n_pairs``;
        with ``n_resamples`` and pairs of at least 2 prompts, also ``accuracy_low`` and ``accuracy_high``.

    Raises:
        ValueError: no pairs.
    """
    if not pairs:
        raise ValueError("evaluate_preferences got no pairs")
    prompts = [p.prompt for p in pairs]
    raw = model.raw_scores(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], batch_size)
    chosen, rejected = raw[: len(pairs)], raw[len(pairs) :]
    margins = np.array([p.margin for p in pairs])
    diff = chosen - rejected
    loss = float(np.mean(np.logaddexp(0.0, -(diff - margins))))  # -logsigmoid(x) = log(1 + e^-x)
    result = {
        "accuracy": float((diff > 0).mean()),
        "mean_margin": float(diff.mean()),
        "loss": loss,
        "n_pairs": len(pairs),
    }
    ids = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    if n_resamples and len(ids) > 1:
        group = np.array([ids[p] for p in prompts])  # (n_pairs,) prompt index of each pair
        hits, counts = np.bincount(group, weights=diff > 0), np.bincount(group)  # (n_prompts,) each
        # The statistic is the accuracy over the drawn prompts' pairs (not a mean of per-prompt accuracies),
        # so the estimate is the accuracy above.
        ci = bootstrap(lambda idx: hits[idx].sum() / counts[idx].sum(), len(ids), n_resamples=n_resamples, seed=seed)
        result.update(accuracy_low=ci.low, accuracy_high=ci.high)
    return result


def training_arguments(
    cfg: RewardTrainingConfig, n_pairs: int, evaluate: bool, output_dir: str | os.PathLike
) -> TrainingArguments:
    """The ``transformers.TrainingArguments`` of one reward-model training run.

    Args:
        cfg: the training config.
        n_pairs: training pairs (sets the warm-up steps, ``warmup_ratio`` of all steps).
        evaluate: whether to evaluate after each epoch.
        output_dir: where the Trainer may write logs (nothing is saved: ``save_strategy="no"``).

    Returns:
        Linear warm-up and decay, no checkpoints, no reporting, seeded data order, CPU unless CUDA exists.
    """
    steps_per_epoch = math.ceil(n_pairs / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.num_epochs))
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 32),
        num_train_epochs=cfg.num_epochs,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        warmup_steps=int(cfg.warmup_ratio * total_steps),
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        eval_strategy="epoch" if evaluate else "no",
        remove_unused_columns=False,
        disable_tqdm=not cfg.progress_bar,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def train_reward_model(
    model: BradleyTerryRewardModel,
    train_pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair] | None = None,
    config: RewardTrainingConfig | Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on the Bradley-Terry loss; evaluate on ``eval_pairs`` each epoch.

    Args:
        model: a :class:`BradleyTerryRewardModel` (its normalisation is reset to gain 1, bias 0:
            fit it again after training).
        train_pairs: training pairs.
        eval_pairs: held-out pairs (optional).
        config: a :class:`RewardTrainingConfig` or a dict of its fields.
        output_dir: where the Trainer may write logs (default: a temporary folder, deleted).

    Returns:
        Metrics: ``train_loss``, ``train_seconds``, ``steps``, ``train_pairs`` and, with ``eval_pairs``,
        ``eval_accuracy``, ``eval_mean_margin``, ``eval_loss``, ``eval_n_pairs``.

    Raises:
        ValueError: no training pairs, or an unknown config key.
    """
    cfg = config_from_dict(RewardTrainingConfig, config)
    if not train_pairs:
        raise ValueError("train_reward_model got no training pairs")
    model.gain, model.bias = 1.0, 0.0
    model.dropout_enabled = not cfg.disable_dropout
    tmp = tempfile.mkdtemp(prefix="rm-trainer-") if output_dir is None else None
    try:
        args = training_arguments(cfg, len(train_pairs), bool(eval_pairs), output_dir or tmp)
        result = _run_trainer(model, args, train_pairs, eval_pairs, cfg.margin)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    metrics = {
        "train_loss": float(result.training_loss),
        "train_seconds": float(result.metrics["train_runtime"]),
        "steps": int(result.global_step),
        "train_pairs": len(train_pairs),
    }
    if eval_pairs:
        final = evaluate_preferences(model, eval_pairs)
        metrics.update({f"eval_{k}": v for k, v in final.items()})
    model.metadata.update({"training": asdict(cfg), "train_metrics": metrics})
    return metrics


def _run_trainer(
    model: BradleyTerryRewardModel,
    args: TrainingArguments,
    train_pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair] | None,
    margin: float,
):
    """Build a :class:`BradleyTerryTrainer` and train; returns its ``TrainOutput``."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "not a PreTrainedModel" notices: expected for a custom module
    try:
        trainer = BradleyTerryTrainer(
            model=model,
            args=args,
            train_dataset=pairs_to_dataset(train_pairs),
            eval_dataset=pairs_to_dataset(eval_pairs) if eval_pairs else None,
            data_collator=_PairCollator(model),
            compute_metrics=_compute_metrics,
            margin=margin,
        )
        return bar_only(trainer, "reward model").train()  # the logs go to metrics / train_log.csv, not stdout
    finally:
        hf_logging.set_verbosity(verbosity)


__all__ = ["BradleyTerryTrainer", "evaluate_preferences", "train_reward_model", "training_arguments"]
