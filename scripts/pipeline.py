"""The whole RLHF pipeline as one command: sft -> preferences -> reward-model -> rl -> evaluate.

The three steps of InstructGPT (Ouyang et al. 2022, figure 2) on the offline "mock sentiment" task
of Ziegler et al. (2019): fine-tune SmolLM2-135M-Instruct on positive review continuations (SFT),
let a simulated annotator (VADER) label pairs of SFT samples, fit a MiniLM Bradley-Terry reward
model, optimise the SFT policy against it with a KL penalty to the SFT model (PPO, adaptive beta),
and evaluate base, SFT and RL policies on held-out prompts. Everything lands in one run directory
(``scripts/run_dir.py`` documents the layout), ending with ``report.md``.

Examples:
    python -m scripts.pipeline --run-dir runs/demo                  # everything, defaults
    python -m scripts.pipeline --tiny --run-dir /tmp/t              # every stage in seconds (tests)
    python -m scripts.pipeline --run-dir runs/demo --stages rl,evaluate --algo a2c
    python -m scripts.pipeline --run-dir runs/demo --resume         # after an interruption
    python -m scripts.pipeline --config configs/pipeline.yaml --rl.total-timesteps 4096

Stages run in pipeline order whatever order ``--stages`` lists them in; a stage reads the outputs
of earlier stages from the run directory. ``--stages report`` only redraws plots and report.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # default models ship offline; never hit the hub by accident
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from scripts.run_dir import STAGES, atomic_write_text, clear_stage, is_done  # noqa: E402
from scripts.stages.config import (  # noqa: E402
    TINY_PRESET,
    PipelineConfig,
    build_config,
    build_parser,
    cli_layer,
    load_yaml,
)

STAGE_ALIASES = {"reward_model": "reward-model", "rm": "reward-model", "eval": "evaluate"}


def resolve_config(argv: Sequence[str] | None = None) -> PipelineConfig:
    """Parse the command line into a :class:`PipelineConfig` (defaults < --tiny < YAML < flags).

    With ``--resume`` and no ``--config``, the run directory's saved ``config.yaml`` is the YAML layer.
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    cli = cli_layer(ns)
    run_cli = cli.get("run", {})
    yaml_layer: dict = {}
    try:
        if ns.config is not None:
            yaml_layer = load_yaml(ns.config)
        elif run_cli.get("resume"):
            saved = Path(run_cli.get("run_dir", "runs/default")) / "config.yaml"
            if saved.is_file():
                yaml_layer = load_yaml(saved)
                yaml_layer.get("run", {}).pop("stages", None)  # a resumed run finishes every stage unless told
        tiny = run_cli.get("tiny", yaml_layer.get("run", {}).get("tiny", False))
        cfg = build_config(TINY_PRESET if tiny else {}, yaml_layer, cli)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))  # exit status 2 with the message (valid keys listed)
    stages = []
    for s in cfg.run.stages:
        s = STAGE_ALIASES.get(s, s)
        if s not in STAGES + ("report",):
            parser.error(f"unknown stage {s!r}; valid stages: {list(STAGES)} (and 'report')")
        stages.append(s)
    cfg.run.stages = stages
    return cfg


def save_config(cfg: PipelineConfig) -> None:
    """Write the config as run to ``<run_dir>/config.yaml`` (atomically)."""
    import yaml

    header = "# Config as run by scripts/pipeline.py (sections: run, sft, preferences, reward_model, rl, evaluate)\n"
    atomic_write_text(Path(cfg.run.run_dir) / "config.yaml", header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_stage(stage: str, cfg: PipelineConfig) -> str:
    """Run one stage (imports are local: ``--help`` and config errors stay fast)."""
    if stage == "sft":
        from scripts.stages.sft import run_sft

        return run_sft(cfg)
    if stage == "preferences":
        from scripts.stages.reward import run_preferences

        return run_preferences(cfg)
    if stage == "reward-model":
        from scripts.stages.reward import run_reward_model

        return run_reward_model(cfg)
    if stage == "rl":
        from scripts.stages.rl import run_rl

        return run_rl(cfg, resume=cfg.run.resume)
    from scripts.stages.evaluate import run_evaluate

    return run_evaluate(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scripts.pipeline`` and the ``textrlhf`` console script."""
    cfg = resolve_config(argv)
    run = cfg.run
    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    if "rl" in run.stages:  # fail on a bad algorithm name before any stage's work is done (DESIGN section 6)
        from agents.registry import get_spec

        get_spec(run.algo)
    if not run.progress:  # --no-progress also silences the libraries' own bars (weights loading, datasets)
        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg)
    start = time.perf_counter()
    print(f"[pipeline] run dir {run.run_dir}, stages {','.join(run.stages)}, algo {run.algo}, model {run.model}"
          + (", tiny preset" if run.tiny else "") + (", resume" if run.resume else ""), flush=True)
    for stage in STAGES:
        if stage not in run.stages:
            continue
        if run.resume and is_done(run.run_dir, stage):
            print(f"[{stage}] already done, skipped (--resume)", flush=True)
            continue
        if stage != "rl" or not run.resume:
            clear_stage(run.run_dir, stage)  # a fresh run of a stage never mixes with older artifacts
        run_stage(stage, cfg)
    from scripts.stages.report import write_report

    report = write_report(cfg)
    print(f"[pipeline] done in {time.perf_counter() - start:.0f} s; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
