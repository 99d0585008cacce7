"""Stage ``sft``: supervised fine-tuning of the base LM on demonstrations.

InstructGPT (Ouyang et al. 2022, section 3.5) fine-tunes the pretrained model on labeller
demonstrations before RL, and both the RL policy's initialisation and its KL reference are that
SFT model. Here the demonstrations are, by default, the bundled positive continuations of the train
review prompts (``textrlhf/data/demonstrations.jsonl``); ``data: best_of_n`` instead samples N
continuations of each train prompt from the base model and keeps the annotator's favourite
(a rejection-sampling SFT set); a ``.jsonl``/``.json``/``.csv`` file or a hub dataset with
``prompt``/``response`` columns works too.

Loss: the causal-LM loss on response tokens only. Prompt tokens (encoded exactly as
``TextRLHF-v0`` encodes them) get label -100, which ``transformers`` ignores, so the model learns to
continue prompts, not to write them. Training uses ``transformers.Trainer``; the result is saved
with ``save_pretrained`` (+ tokenizer) to ``sft/model``, atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from scripts.run_dir import atomic_dir, atomic_write_csv, atomic_write_json, mark_done, stage_dir
from scripts.stages.common import StageTimer, encode_prompts, fmt, make_text_env, resolve_device, seed_everything
from scripts.stages.config import PipelineConfig
from textrlhf.progress import bar_only
from textrlhf.prompts import DEMONSTRATIONS_PATH


def bundled_demonstrations() -> list[dict[str, str]]:
    """The bundled ``{"prompt", "response"}`` rows (positive continuations of train review prompts)."""
    return [json.loads(line) for line in DEMONSTRATIONS_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_demonstrations(cfg: PipelineConfig, model, tokenizer) -> list[dict[str, str]]:
    """Demonstrations as ``{"prompt", "response"}`` rows from the configured source."""
    sft = cfg.sft
    if sft.data == "bundled":
        rows = bundled_demonstrations()
    elif sft.data == "best_of_n":
        rows = best_of_n_demonstrations(cfg, model, tokenizer)
    else:
        import datasets

        ext = os.path.splitext(sft.data)[1].lower()
        if ext in (".jsonl", ".json", ".csv"):
            if not os.path.isfile(sft.data):
                raise FileNotFoundError(f"sft.data {sft.data!r} does not exist")
            ds = datasets.load_dataset("csv" if ext == ".csv" else "json", data_files=sft.data, split="train")
        else:
            ds = datasets.load_dataset(sft.data, split=sft.split)
        missing = [c for c in (sft.prompt_column, sft.response_column) if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"sft.data {sft.data!r} lacks column(s) {missing} (has {ds.column_names}); "
                f"set sft.prompt_column / sft.response_column"
            )
        rows = [{"prompt": r[sft.prompt_column], "response": r[sft.response_column]} for r in ds]
    if sft.max_examples is not None and sft.data != "best_of_n":
        rows = rows[: sft.max_examples]
    bad = [i for i, r in enumerate(rows) if not str(r["prompt"]).strip() or not str(r["response"]).strip()]
    if not rows or bad:
        raise ValueError(
            f"SFT demonstrations from {sft.data!r}: {len(rows)} rows, empty prompt/response at rows {bad[:5]}"
        )
    return rows


def best_of_n_demonstrations(cfg: PipelineConfig, model, tokenizer) -> list[dict[str, str]]:
    """For each train review prompt, the annotator's best of ``best_of_n`` samples from the base model."""
    import numpy as np

    from reward_models import make_reward
    from reward_models.annotator import load_prompt_file, sample_responses

    prompts = load_prompt_file(None, task="review", split="train")[: cfg.sft.max_examples]
    groups = sample_responses(
        model,
        tokenizer,
        prompts,
        n=cfg.sft.best_of_n,
        temperature=cfg.sft.best_of_n_temperature,
        max_new_tokens=cfg.run.max_new_tokens,
        seed=cfg.run.seed,
        progress=cfg.run.progress,
    )
    annotator = make_reward(cfg.run.annotator)
    rows = []
    for prompt, group in zip(prompts, groups):
        group = [r for r in group if r.strip()] or group
        scores = annotator.score([prompt] * len(group), group)
        rows.append({"prompt": prompt, "response": group[int(np.argmax(scores))]})
    return rows


def tokenize_demonstrations(rows, env, tokenizer, append_eos: bool, max_response_tokens: int) -> list[dict]:
    """``input_ids``/``labels`` per row: prompt as the env encodes it (labels -100), then the response."""
    prompt_ids = encode_prompts(env, [r["prompt"] for r in rows])
    out = []
    for row, p_ids in zip(rows, prompt_ids):
        r_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"][:max_response_tokens]
        if append_eos:
            r_ids = r_ids + [tokenizer.eos_token_id]
        out.append({"input_ids": p_ids + r_ids, "labels": [-100] * len(p_ids) + r_ids})
    return out


class _Collator:
    """Right-pad ``input_ids`` (pad id), ``labels`` (-100) and build the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _train(cfg: PipelineConfig, model, tokenizer, examples: list[dict], device: str) -> tuple[int, list[dict]]:
    """Fine-tune ``model`` in place with ``transformers.Trainer`` (linear decay after warm-up).

    Returns:
        The number of optimiser steps and the loss rows of the trainer's log (``train_log.csv``).
    """
    import datasets
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    sft, run = cfg.sft, cfg.run
    steps_per_epoch = -(-len(examples) // sft.batch_size)
    total = max(1, int(steps_per_epoch * sft.epochs))
    with tempfile.TemporaryDirectory(prefix="sft-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=sft.batch_size,
            num_train_epochs=sft.epochs,
            learning_rate=sft.learning_rate,
            weight_decay=sft.weight_decay,
            lr_scheduler_type="linear",
            warmup_steps=int(sft.warmup_ratio * total),
            logging_steps=max(1, total // 20),
            save_strategy="no",
            report_to="none",
            seed=run.seed,
            data_seed=run.seed,
            remove_unused_columns=False,
            disable_tqdm=not run.progress,
            dataloader_num_workers=0,
            use_cpu=device == "cpu",
        )
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            trainer = Trainer(
                model=model,
                args=args,
                train_dataset=datasets.Dataset.from_list(examples),
                data_collator=_Collator(tokenizer.pad_token_id),
            )
            result = bar_only(trainer, "sft").train()  # the logs go to train_log.csv, not stdout
        finally:
            hf_logging.set_verbosity(verbosity)
        log_rows = [
            {k: h[k] for k in ("step", "epoch", "loss", "learning_rate", "grad_norm") if k in h}
            for h in trainer.state.log_history
            if "loss" in h
        ]
    return result.global_step, log_rows


def _fine_tune(
    cfg: PipelineConfig, model, tokenizer, out: Path, device: str, timer: StageTimer
) -> tuple[str, int, list[dict]]:
    """Load and tokenize the demonstrations, train on them, write ``demonstrations.csv`` and ``train_log.csv``.

    Returns:
        The stage's summary text, the number of demonstrations and the training log rows.
    """
    run = cfg.run
    with timer.phase("data"):
        rows = load_demonstrations(cfg, model, tokenizer)
        atomic_write_csv(out / "demonstrations.csv", rows)
        env = make_text_env(cfg, run.model, [r["prompt"] for r in rows])
        examples = tokenize_demonstrations(rows, env, tokenizer, cfg.sft.append_eos, cfg.sft.max_response_tokens)
    with timer.phase("train"):
        steps, log_rows = _train(cfg, model, tokenizer, examples, device)
    model.eval()
    losses = [r["loss"] for r in log_rows]
    summary_text = (
        f"{len(rows)} demonstrations ({cfg.sft.data}), {cfg.sft.epochs:g} epochs, "
        f"{steps} steps, "
        f"loss {fmt(losses[0] if losses else None)} -> {fmt(losses[-1] if losses else None)}"
    )
    atomic_write_csv(out / "train_log.csv", log_rows, ["step", "epoch", "loss", "learning_rate", "grad_norm"])
    return summary_text, len(rows), log_rows


def run_sft(cfg: PipelineConfig) -> str:
    """Fine-tune ``run.model`` on the demonstrations; save to ``<run>/sft/model``. Returns the summary."""
    from textenv import load_model, load_tokenizer

    timer, run = StageTimer("sft"), cfg.run
    out = stage_dir(run.run_dir, "sft")
    seed_everything(run.seed)
    device = resolve_device(run.device)
    with timer.phase("load"):
        model = load_model(run.model, device=device)
        tokenizer = load_tokenizer(run.model)
    if cfg.sft.skip:
        summary_text, n_rows, log_rows = f"skipped (SFT model = base model {run.model!r})", 0, []
    else:
        summary_text, n_rows, log_rows = _fine_tune(cfg, model, tokenizer, out, device, timer)
    with timer.phase("save"), atomic_dir(out / "model") as tmp:
        model.to("cpu").save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    atomic_write_json(out / "metrics.json", {"examples": n_rows, "log": log_rows, "data": cfg.sft.data})
    summary = timer.summary(summary_text)
    mark_done(run.run_dir, "sft", summary, timer.seconds, phases=timer.phase_seconds())
    return summary
