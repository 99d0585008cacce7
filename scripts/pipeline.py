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

Resume and re-runs. ``--resume`` first deletes temporaries left by a killed process, then skips
finished stages and continues RL from its data-only checkpoint. A stage that runs invalidates every
later stage (their ``DONE.json`` and RL's checkpoint are removed, and the pipeline says which), so
re-running ``--stages sft`` with new settings never leaves an old RL policy marked as done. Before
any stage runs, the inputs that planned stages read from unplanned ones are checked (finished,
present, weights complete), and options are validated (``scripts/stages/config_sections.py``). A missing or
damaged file stops the pipeline with one line naming the file and the fix, exit status 2; a full disk with
one line naming what was not written, exit status 1 (``--resume`` continues once there is room).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # default models ship offline; never hit the hub by accident
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.run_dir import (
    MARKER,
    STAGES,
    RunDirError,
    atomic_write_json,
    atomic_write_text,
    clear_stage,
    invalidate_after,
    is_done,
    read_marker,
    remove_stale_temporaries,
    require,
    stage_dir,
)
from scripts.stages.config import TINY_PRESET, PipelineConfig, build_config, load_yaml
from scripts.stages.config_cli import build_parser, cli_layer
from textrlhf.atomic import FULL_DISK_ERRNOS, FolderWriteError
from textrlhf.cpu import release_free_memory

STAGE_ALIASES = {"reward_model": "reward-model", "rm": "reward-model", "eval": "evaluate"}
STAGE_INPUTS = {
    "sft": (),
    "preferences": ("sft",),
    "reward-model": ("preferences",),
    "rl": ("sft", "reward-model"),
    "evaluate": ("sft", "reward-model", "rl"),
}
"""The earlier stages whose outputs each stage reads."""


def _check_resources(cfg: PipelineConfig) -> None:
    """Fail on a bad algorithm name or an absent GPU before any stage's work is done (docs/design.md section 6)."""
    if "rl" in cfg.run.stages:
        from agents.registry import get_spec

        get_spec(cfg.run.algo)  # unknown names raise ValueError, listing the valid ones
    if "evaluate" in cfg.run.stages:  # a bad judge must not wait for the end of RL to show
        from reward_models import available_rewards, make_reward

        judge = cfg.evaluate.second_judge
        if judge in available_rewards():
            make_reward(judge)  # pattern_sentiment checks that textblob is installed
        elif not os.path.isdir(judge):
            raise ValueError(
                f"evaluate.second_judge {judge!r} is neither a reward name {available_rewards()} nor a reward-model "
                "folder; set --evaluate.second-judge"
            )
    if cfg.run.device == "cuda":
        from scripts.stages.common import resolve_device

        resolve_device(cfg.run.device)


def resolve_config(argv: Sequence[str] | None = None) -> PipelineConfig:
    """Parse the command line into a validated :class:`PipelineConfig` (defaults < --tiny < YAML < flags).

    A run folder's saved ``config.yaml`` is the base of everything done in it (a re-run of some stages,
    ``--resume``): defaults < ``--tiny`` < the saved config < ``--config`` < flags. Its ``stages``,
    ``run_dir`` and ``resume`` are not reused (the run folder is where it was found, even if moved).
    Any bad option exits with status 2 and a message naming the flag / YAML key to fix.
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    cli = cli_layer(ns)
    run_cli = cli.get("run", {})
    try:
        saved_layer = saved_config(run_cli.get("run_dir", "runs/default"))
        yaml_layer = load_yaml(ns.config) if ns.config is not None else {}
        tiny = run_cli.get("tiny", yaml_layer.get("run", {}).get("tiny", saved_layer.get("run", {}).get("tiny", False)))
        cfg = build_config(TINY_PRESET if tiny else {}, saved_layer, yaml_layer, cli)
        stages = []
        for s in cfg.run.stages:
            s = STAGE_ALIASES.get(s, s)
            if s not in STAGES + ("report",):
                raise ValueError(f"unknown stage {s!r}; valid stages: {list(STAGES)} (and 'report')")
            stages.append(s)
        cfg.run.stages = stages
        _check_resources(cfg)
    except (TypeError, ValueError, FileNotFoundError, ImportError) as exc:
        parser.error(str(exc))  # exit status 2 with the message (valid keys listed)
    return cfg


def saved_config(run_dir: str | os.PathLike) -> dict:
    """The config layer a run folder saved (``{}`` for a new folder), without ``stages``/``run_dir``/``resume``.

    Raises:
        ValueError: ``config.yaml`` is not valid YAML or has unknown keys (the message names the file).
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    layer = load_yaml(path)
    for key in ("stages", "run_dir", "resume"):  # what to do now is the command's, not the folder's
        layer.get("run", {}).pop(key, None)
    return layer


STAGE_SECTIONS = {
    "sft": "sft",
    "preferences": "preferences",
    "reward-model": "reward_model",
    "rl": "rl",
    "evaluate": "evaluate",
}
"""The config section each stage reads besides ``run``."""
RUN_KEYS_OF_NO_EFFECT = ("run_dir", "stages", "resume", "threads", "progress", "device", "seeds")
"""``run`` keys that do not change what a stage produces (every other ``run`` key feeds every stage)."""


def stage_settings(cfg: PipelineConfig, stage: str) -> dict[str, object]:
    """``{"section.key": value}`` of the settings ``stage`` is built with (recorded in its ``DONE.json``)."""
    now = cfg.to_dict()
    section = STAGE_SECTIONS[stage]
    return {
        **{f"run.{k}": v for k, v in now["run"].items() if k not in RUN_KEYS_OF_NO_EFFECT},
        **{f"{section}.{k}": v for k, v in now[section].items()},
    }


def record_settings(cfg: PipelineConfig, stage: str) -> None:
    """Add the settings a just-finished ``stage`` ran with to its ``DONE.json`` (see :func:`stale_settings`)."""
    marker = read_marker(cfg.run.run_dir, stage)
    atomic_write_json(stage_dir(cfg.run.run_dir, stage) / MARKER, {**marker, "settings": stage_settings(cfg, stage)})


def stale_settings(cfg: PipelineConfig, planned: Sequence[str]) -> list[str]:
    """One line per finished stage that this command keeps although its settings changed since it ran.

    Only stages before the first planned one are kept as they are (every later one is invalidated when
    the first planned stage runs). A stage's settings are those its ``DONE.json`` recorded; markers of runs
    made before they were recorded are not compared.
    """
    if not planned:
        return []
    now = {stage: stage_settings(cfg, stage) for stage in STAGE_SECTIONS}
    lines = []
    for stage in STAGES[: STAGES.index(planned[0])]:
        if not is_done(cfg.run.run_dir, stage):
            continue
        was = read_marker(cfg.run.run_dir, stage).get("settings", {})
        changed = [k for k, v in was.items() if k in now[stage] and now[stage][k] != v]
        if changed:
            lines.append(
                f"{stage} finished with other settings ({', '.join(changed)}) and is not re-run: its "
                f"outputs keep the old ones (add it to --stages to apply them)"
            )
    return lines


def save_config(cfg: PipelineConfig) -> None:
    """Write the config as run to ``<run_dir>/config.yaml`` (atomically)."""
    import yaml

    header = "# Config as run by scripts/pipeline.py (sections: run, sft, preferences, reward_model, rl, evaluate)\n"
    atomic_write_text(Path(cfg.run.run_dir) / "config.yaml", header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def plan_stages(cfg: PipelineConfig) -> list[str]:
    """The requested stages that will run, checked before any of them starts.

    Without ``--resume``, every requested stage. With it, the first unfinished requested stage and
    every requested stage after it (a stage that runs invalidates all later ones). Each planned
    stage's inputs from stages that are not planned must be finished and intact (:func:`require`),
    and must not lie after a planned stage, whose run would invalidate them.

    Raises:
        RunDirError: an input is missing, damaged, or would be invalidated; the message says what to run.
    """
    run = cfg.run
    planned: list[str] = []
    for stage in (s for s in STAGES if s in run.stages):
        if planned or not run.resume or not is_done(run.run_dir, stage):
            planned.append(stage)
    for stage in planned:
        inputs = () if stage == "preferences" and cfg.preferences.data else STAGE_INPUTS[stage]
        for dep in (d for d in inputs if d not in planned):
            if STAGES.index(dep) > STAGES.index(planned[0]):
                between = [s for s in STAGES if STAGES.index(planned[0]) <= STAGES.index(s) <= STAGES.index(stage)]
                raise RunDirError(
                    f"stage {stage!r} reads {dep!r}, which running {planned[0]!r} makes out of date; "
                    f"run the stages in between too: --stages {','.join(between)}"
                )
            require(run.run_dir, dep, stage)
    return planned


def run_stage(stage: str, cfg: PipelineConfig, resume: bool = False) -> str:
    """Run one stage (imports are local: ``--help`` and config errors stay fast); ``resume``: RL continues."""
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

        return run_rl(cfg, resume=resume)
    from scripts.stages.evaluate import run_evaluate

    return run_evaluate(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scripts.pipeline`` and the ``textrlhf`` console script.

    Returns:
        0 on success, 2 when the run folder is missing or damaged (the message names the file and the fix),
        1 when the disk is full (the message says what was not written; nothing finished is lost).
    """
    cfg = resolve_config(argv)
    if cfg.run.seeds:
        from scripts.stages.aggregate import run_seeds

        return run_seeds(cfg.run.seeds, cfg.run.run_dir, list(sys.argv[1:] if argv is None else argv), main)
    try:
        return _run(cfg)
    except RunDirError as exc:  # one clear line, no traceback: the fix is in the message
        print(f"textrlhf: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:  # a full disk; every file is written atomically (docs/design.md section 6): nothing lost
        if not isinstance(exc, FolderWriteError) and exc.errno not in FULL_DISK_ERRNOS:
            raise
        print(
            f"textrlhf: error: {exc}. Free some space and rerun the same command with --resume: finished stages "
            "and the RL stage's last checkpoint are kept",
            file=sys.stderr,
            flush=True,
        )
        return 1


def _run(cfg: PipelineConfig) -> int:
    run = cfg.run
    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    # One progress style (textrlhf.progress): the libraries' own bars (a "Loading weights" bar per model load,
    # datasets' map bars) are off; the stages show their own bars unless --no-progress.
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    from scripts.stages.aggregate import SWEEP_FILE

    if (Path(run.run_dir) / SWEEP_FILE).is_file():
        raise RunDirError(
            f"{run.run_dir} holds a --seeds sweep ({SWEEP_FILE}): resume it with the same --seeds, or give one "
            "seed's folder (seed-N) as --run-dir"
        )
    group = _process_group(cfg)
    if group is not None:
        check_launchable(plan_stages(cfg), cfg.run.algo)  # on every rank, before any of them writes or waits
    if group is not None and group.get_rank() != 0:
        return _rl_rank(cfg, group)
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    if run.resume:  # a killed process's half-written temporaries; nothing else writes here during a resume
        for line in remove_stale_temporaries(run.run_dir):
            print(f"[pipeline] {line} (a temporary left by an interrupted write)", flush=True)
    planned = plan_stages(cfg)
    if group is not None:
        group.broadcast_object_list([planned], src=0)  # what rank 0 decided, before it changes the folder
    if (Path(run.run_dir) / "config.yaml").is_file():
        print(
            f"[pipeline] settings: {Path(run.run_dir) / 'config.yaml'} as saved, this command's options on top",
            flush=True,
        )
    for line in stale_settings(cfg, planned):
        print(f"[pipeline] warning: {line}", flush=True)
    save_config(cfg)
    start = time.perf_counter()
    print(
        f"[pipeline] run dir {run.run_dir}, stages {','.join(run.stages)}, algo {run.algo}, model {run.model}"
        + (", tiny preset" if run.tiny else "")
        + (", resume" if run.resume else ""),
        flush=True,
    )
    for stage in STAGES:
        if stage not in run.stages:
            continue
        if stage not in planned:
            print(f"[{stage}] already done, skipped (--resume)", flush=True)
            continue
        invalidated = invalidate_after(run.run_dir, stage)
        if invalidated:  # built from this stage's old outputs: never resumed or skipped as done again
            print(
                f"[pipeline] running {stage} invalidates {', '.join(invalidated)}: DONE.json"
                + (" and rl/checkpoint" if "rl" in invalidated else "")
                + " removed; they rerun when requested "
                "(--resume runs every unfinished stage)",
                flush=True,
            )
        # Only the first stage to run can continue where it stopped: every later one was just invalidated.
        resume = run.resume and stage == "rl" and stage == planned[0]
        if not resume:
            clear_stage(run.run_dir, stage)  # a fresh run of a stage never mixes with older artifacts
        if stage == "rl" and group is not None:
            group.barrier()  # the other ranks have waited for the stages before RL; now all train together
        run_stage(stage, cfg, resume)
        release_free_memory()  # the next stage allocates other models and tensors (textrlhf/cpu.py)
        record_settings(cfg, stage)
    from scripts.stages.report import write_report

    report = write_report(cfg)
    print(f"[pipeline] done in {time.perf_counter() - start:.0f} s; report: {report}", flush=True)
    return 0


def _process_group(cfg: PipelineConfig):
    """``torch.distributed`` (its default group initialised) when launched by torchrun / accelerate, else None.

    Under a launch, rank 0 runs every stage as a single process would; the other ranks wait for it and join
    the RL stage's data-parallel training only (docs/scaling.md).
    """
    from agents.distributed import init_from_launcher, launched_world_size

    if launched_world_size() == 1:
        return None
    import torch
    import torch.distributed as dist

    from scripts.stages.common import resolve_device

    init_from_launcher(torch.device(resolve_device(cfg.run.device)))
    return dist


TRAINER_STAGES = ("sft", "reward-model")
"""Stages that train with ``transformers.Trainer``, which joins a launched process group by itself."""


def check_launchable(planned: Sequence[str], algo: str) -> None:
    """Refuse, under a multi-process launch, what cannot run there: stages that cannot run on rank 0
    alone, and an RL algorithm without data parallel.

    ``transformers.Trainer`` sees the launch (its accelerate state adopts the process group) and would
    train data-parallel with ranks that are waiting for RL: a hang. SB3's own algorithms (ppo, a2c, trpo,
    maskable_ppo) have no distributed training.

    Raises:
        RunDirError: a planned stage trains with Trainer, or ``algo`` is a single-process one (the message
            says what to run instead).
    """
    from agents.registry import available_algorithms, get_spec

    if "rl" in planned and get_spec(algo).buffer_class is not None:
        fast = sorted(n for n in available_algorithms() if get_spec(n).buffer_class is None)
        raise RunDirError(
            f"--algo {algo} trains in one process (SB3 has no distributed training); under a multi-process "
            f"launch use a fast agent: {fast}, or run without the launcher"
        )
    bad = [s for s in planned if s in TRAINER_STAGES]
    if bad:
        before = ",".join(s for s in STAGES if STAGES.index(s) < STAGES.index("rl"))
        raise RunDirError(
            f"stage(s) {bad} train with transformers.Trainer, which cannot run on one rank of a multi-process "
            f"launch; run them in one process first (python -m scripts.pipeline --run-dir DIR --stages {before}), "
            f"then launch the RL stage: torchrun --nproc_per_node N -m scripts.pipeline --run-dir DIR "
            f"--stages rl,evaluate"
        )


def _rl_rank(cfg: PipelineConfig, group) -> int:
    """A rank other than 0: learn in the RL stage if rank 0 plans it; rank 0 alone writes the run folder."""
    planned = [None]
    group.broadcast_object_list(planned, src=0)
    if "rl" in planned[0]:
        group.barrier()
        run_stage("rl", cfg, resume=cfg.run.resume and planned[0][0] == "rl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
