"""Training on a shared CPU: pipeline stages idle vs next to competing CPU-bound programs.

A stage that loses part of the CPU to other programs should slow by about that share, no more. This
script measures it, one child process at a time, for several thread settings (:data:`SETTINGS`):

1. ``prepare``: once, a run folder with a short preference set and reward model (``--preferences.max-prompts
   16``), so that the RL stage has its inputs; not measured.
2. For every setting, every number of competitors (``python -c "while True: pass"``, started before the
   child and killed after it) and every workload:

   * ``sft``: the pipeline's SFT stage in a fresh run folder (the default 210 demonstrations, one epoch);
     the figure is its ``train`` phase (``transformers.Trainer.train``);
   * ``rl``: ``--rl-iterations`` iterations of the pipeline's RL stage on the prepared folder; the figure
     is generation + the rest of the rollout + the update (the stage's phases), without model loading
     and checkpointing.

Competitors run at the same priority as the child, as the other programs of a shared machine do. The
ratio ``loaded / idle`` of one setting is its slow-down; with ``c`` competitors a fair share of a
``k``-core machine for a child of ``t`` busy threads is about ``(t + c) / t`` times slower when
``t + c > k`` (e.g. 2 threads, 1 competitor, 2 cores: 1.5x).

Example (about 15 minutes on 2 cores; nothing else may run)::

    python -m scripts.bench_contention --out runs/contention
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scripts.cli import config_to_dict, parse_args
from scripts.run_dir import MARKER

_OWN = {"TEXTRLHF_OPENMP_DEFAULTS": "0", "TEXTRLHF_MALLOC_DEFAULTS": "0", "OMP_WAIT_POLICY": None}
SETTINGS: dict[str, dict[str, str | None]] = {
    "openmp-default": {**_OWN, "GOMP_SPINCOUNT": None},
    "passive-only": {**_OWN, "TEXTRLHF_OPENMP_DEFAULTS": None, "GOMP_SPINCOUNT": None},
    "project-default": {"TEXTRLHF_OPENMP_DEFAULTS": None, "TEXTRLHF_MALLOC_DEFAULTS": None, "GOMP_SPINCOUNT": None},
    "spincount-10k": {**_OWN, "GOMP_SPINCOUNT": "10000"},
}
"""Setting name -> environment of the child (None removes the variable): OpenMP's and glibc malloc's own
defaults (threads spin, then sleep; the behaviour before the project set anything), the project's OpenMP
default alone (``OMP_WAIT_POLICY=PASSIVE``, the project's default from 2026-12-01 to 2026-12-02), the
project's defaults (``textrlhf.cpu``: passive OpenMP and large blocks from malloc's heap, applied by
``scripts/__init__.py``), and a short spin (libgomp's ``GOMP_SPINCOUNT``) with glibc's malloc."""
WORKLOADS = ("sft", "rl")


@dataclass
class Config:
    """Seconds of the SFT stage and of RL iterations, idle and next to competing CPU-bound programs."""

    settings: list[str] = field(default_factory=lambda: ["openmp-default", "project-default"])
    """Settings to compare (names of SETTINGS: openmp-default passive-only project-default spincount-10k)."""
    competitors: list[int] = field(default_factory=lambda: [0, 1])
    """Numbers of competing `python -c "while True: pass"` processes; 0 is the idle baseline."""
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    """Workloads to measure: sft rl."""
    rl_iterations: int = 2
    """RL iterations (rollout + update of the pipeline's default rl.n_envs episodes) per RL measurement."""
    out: Path = Path("runs/contention")
    """Folder for the run folders, contention.json and the table (contention.md)."""

    def __post_init__(self) -> None:
        bad = sorted(set(self.settings) - set(SETTINGS)) + sorted(set(self.workloads) - set(WORKLOADS))
        if bad:
            raise ValueError(f"unknown setting(s)/workload(s) {bad}; settings {list(SETTINGS)}, workloads {WORKLOADS}")
        if 0 not in self.competitors or min(self.competitors) < 0:
            raise ValueError("competitors must include 0 (the idle baseline) and be >= 0")
        if self.rl_iterations < 1:
            raise ValueError("rl_iterations must be >= 1")


def pipeline(run_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """Run ``python -m scripts.pipeline`` in a child process (quietly; its log goes to ``run_dir.log``)."""
    cmd = [sys.executable, "-m", "scripts.pipeline", "--run-dir", str(run_dir), "--no-progress", *args]
    with open(f"{run_dir}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)


def child_env(setting: str) -> dict[str, str]:
    """The environment of a measured child under ``setting``."""
    env = dict(os.environ)
    for name, value in SETTINGS[setting].items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def measure(cfg: Config, workload: str, setting: str, competitors: int, prepared: Path) -> float:
    """Seconds of one workload in a child process under ``setting`` next to ``competitors`` spinners."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        time.sleep(0.5 if competitors else 0.0)  # let the competitors start spinning
        env = child_env(setting)
        if workload == "sft":
            run_dir = cfg.out / f"sft-{setting}-{competitors}"
            shutil.rmtree(run_dir, ignore_errors=True)
            pipeline(run_dir, "--stages", "sft", env=env)
            phases = _phases(run_dir, "sft")
            return phases["train"]
        saved = yaml.safe_load((prepared / "config.yaml").read_text())  # the settings the RL stage will run
        steps = saved["rl"]["n_envs"] * saved["run"]["max_new_tokens"] * cfg.rl_iterations
        pipeline(prepared, "--stages", "rl", "--rl.total-timesteps", str(steps), env=env)
        phases = _phases(prepared, "rl")
        return phases["generate"] + phases["rollout: reference, reward, env"] + phases["update"]
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def _phases(run_dir: Path, stage: str) -> dict[str, float]:
    return json.loads((run_dir / stage / MARKER).read_text())["phases"]


def main(argv: list[str] | None = None) -> int:
    """Prepare, measure every (workload, setting, competitors), print and write the table and the JSON."""
    cfg = parse_args(Config, argv)
    cfg.out.mkdir(parents=True, exist_ok=True)
    prepared = cfg.out / "prepared"
    if "rl" in cfg.workloads:
        print(f"[contention] preparing {prepared} (sft, 16-prompt preferences, reward model)", flush=True)
        shutil.rmtree(prepared, ignore_errors=True)
        pipeline(prepared, "--stages", "sft,preferences,reward-model", "--preferences.max-prompts", "16")
    results: dict[str, dict[str, dict[str, float]]] = {w: {s: {} for s in cfg.settings} for w in cfg.workloads}
    for workload in cfg.workloads:
        for setting in cfg.settings:
            for c in cfg.competitors:
                seconds = measure(cfg, workload, setting, c, prepared)
                results[workload][setting][str(c)] = seconds
                print(f"[contention] {workload} {setting} competitors={c}: {seconds:.1f} s", flush=True)
    table = markdown(cfg, results)
    print(table)
    (cfg.out / "contention.md").write_text(table + "\n")
    payload = {"config": config_to_dict(cfg), "cpu_count": os.cpu_count(), "seconds": results}
    (cfg.out / "contention.json").write_text(json.dumps(payload, indent=2))
    return 0


def markdown(cfg: Config, results: dict) -> str:
    """One row per (workload, setting): seconds idle and with each number of competitors, and the ratios."""
    loaded = [c for c in cfg.competitors if c]
    head = ["workload", "setting", "idle s"] + [f"{c} competitor(s): s (x idle)" for c in loaded]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for workload, by_setting in results.items():
        for setting, secs in by_setting.items():
            idle = secs["0"]
            cells = [f"{secs[str(c)]:.1f} ({secs[str(c)] / idle:.2f}x)" for c in loaded]
            lines.append(f"| {workload} | {setting} | {idle:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
