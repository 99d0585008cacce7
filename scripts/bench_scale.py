"""Peak memory and tokens/s of RL at three model sizes, full fine-tuning and LoRA.

Each cell (a model shape x a LoRA rank, 0 = full fine-tuning) runs in a child process of its own, so its
peak resident memory (``getrusage``) is its own: the agent is built (policy, reference, optimizer), then
``--iterations`` rollouts + updates run. Shapes (:data:`SHAPES`):

* ``135m``: SmolLM2-135M-Instruct itself (offline);
* ``360m-shaped`` and ``1.7b-shaped``: randomly initialised models with the shapes of SmolLM2-360M and
  SmolLM2-1.7B (their ``config.json`` on the Hugging Face hub), written once to ``OUT/models/`` in
  bfloat16 and loaded in fp32 like any model folder; no weights are needed to measure memory and speed;
* ``tiny``: the test model (the script's own test).

A cell whose estimated memory (:func:`estimate_bytes`: fp32 policy, a reference copy unless LoRA, Adam
state and gradients of what trains) exceeds ``--memory-fraction`` of the machine's available memory is
not run; the table says so and gives the estimate.

Example (about 15 minutes on the 2-core machine; nothing else may run)::

    python -m scripts.bench_scale --out runs/scale
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.cli import config_to_dict, parse_args

SHAPES: dict[str, dict[str, int] | None] = {
    "tiny": None,
    "135m": None,
    "360m-shaped": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
    },
    "1.7b-shaped": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
"""Shape name -> LlamaConfig sizes of a random model (None: an existing model, see :func:`model_source`)."""


@dataclass
class Config:
    """Peak memory and tokens/s of RL iterations per model shape, full fine-tuning and LoRA."""

    shapes: list[str] = field(default_factory=lambda: ["135m", "360m-shaped", "1.7b-shaped"])
    """Model shapes (names of SHAPES: tiny 135m 360m-shaped 1.7b-shaped)."""
    lora_ranks: list[int] = field(default_factory=lambda: [0, 16])
    """LoRA ranks per shape; 0 = full fine-tuning (every weight trains, a reference copy)."""
    algo: str = "rlhf_ppo"
    """Agent (a fast agent name)."""
    n_envs: int = 4
    """Episodes per rollout."""
    max_new_tokens: int = 16
    """Tokens per episode."""
    iterations: int = 2
    """Rollouts + updates per cell (the first includes warm-up; the figures are over all of them)."""
    memory_fraction: float = 0.85
    """Skip a cell whose estimate exceeds this fraction of MemAvailable (it would swap or be killed)."""
    out: Path = Path("runs/scale")
    """Folder for models/ (the random shapes), scale.json and scale.md."""
    cell: str | None = None
    """Internal: measure the one cell SHAPE:RANK in this process and print its JSON (the parent's children)."""

    def __post_init__(self) -> None:
        bad = sorted(set(self.shapes) - set(SHAPES))
        if bad:
            raise ValueError(f"unknown shape(s) {bad}; valid: {list(SHAPES)}")
        if min(self.lora_ranks) < 0 or min(self.n_envs, self.max_new_tokens, self.iterations) < 1:
            raise ValueError("lora ranks must be >= 0; n_envs, max_new_tokens and iterations >= 1")


def model_source(shape: str, out: Path) -> str:
    """The model name or folder of ``shape``; a random shape's folder is written on first use."""
    if shape == "tiny":
        return "tiny"
    if shape == "135m":
        return "smollm2-135m-instruct"
    folder = out / "models" / shape
    if not (folder / "config.json").is_file():
        import torch
        from transformers import AutoModelForCausalLM, LlamaConfig

        from textrlhf.models import load_model_config, load_tokenizer

        base = load_model_config("smollm2-135m-instruct").to_dict()
        config = LlamaConfig(**{**base, **SHAPES[shape], "torch_dtype": "float32"})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder, safe_serialization=True)  # bf16 on disk: half the bytes
        load_tokenizer("smollm2-135m-instruct").save_pretrained(folder)
    return str(folder)


def estimate_bytes(n_params: int, n_trainable: int, lora: bool) -> int:
    """fp32 policy + reference copy (not with LoRA) + gradients and Adam's two moments of what trains."""
    return 4 * n_params * (1 if lora else 2) + 12 * n_trainable


def count_params(shape: str, out: Path) -> int:
    """Parameters of ``shape`` without loading its weights (the meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    from textrlhf.models import load_model_config

    config = load_model_config(model_source(shape, out))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def run_cell(cfg: Config, shape: str, rank: int) -> dict:
    """Build the agent and run ``cfg.iterations`` iterations in this process; figures of the cell."""
    import agents

    source = model_source(shape, cfg.out)
    t0 = time.perf_counter()
    env = agents.make_vec_text_env(
        n_envs=cfg.n_envs, model=source, reward="sentiment", max_new_tokens=cfg.max_new_tokens, max_prompt_tokens=16
    )
    kwargs = {"policy_kwargs": {"lora_r": rank}} if rank else {}
    agent = agents.make_agent(cfg.algo, env, seed=0, n_epochs=1, **kwargs)
    build_s = time.perf_counter() - t0
    history = agents.RLHFHistory()
    t0 = time.perf_counter()
    agent.learn(cfg.iterations * cfg.n_envs * cfg.max_new_tokens, callback=history)
    learn_s = time.perf_counter() - t0
    params = list(agent.policy.parameters())
    return {
        "shape": shape,
        "lora_r": rank,
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "build_s": build_s,
        "learn_s": learn_s,
        "tokens": int(agent.num_timesteps),
        "tokens_per_s": agent.num_timesteps / learn_s,
    }


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def measure(cfg: Config, shape: str, rank: int) -> dict:
    """One cell in a child process, or a row saying why it was not run."""
    n_params = count_params(shape, cfg.out)
    # LoRA trains well under 1% of the weights: the estimate counts none of them.
    estimate = estimate_bytes(n_params, 0 if rank else n_params, lora=bool(rank))
    if estimate > cfg.memory_fraction * available_bytes():
        return {"shape": shape, "lora_r": rank, "params": n_params, "estimate_gb": estimate / 1e9, "skipped": True}
    argv = [sys.executable, "-m", "scripts.bench_scale", "--cell", f"{shape}:{rank}", "--out", str(cfg.out)]
    for name in ("algo", "n_envs", "max_new_tokens", "iterations"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {shape}:{rank} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**row, "estimate_gb": estimate / 1e9, "skipped": False}


def markdown(rows: list[dict]) -> str:
    """One row per cell: parameters, trainable, peak memory (or the estimate of a skipped cell), tokens/s."""
    head = ["shape", "LoRA r", "params (M)", "trainable (M)", "peak RSS (GB)", "estimate (GB)", "tokens/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["skipped"]:
            cells = [r["shape"], str(r["lora_r"]), f"{r['params'] / 1e6:.0f}", "", "not run: does not fit"]
            cells += [f"{r['estimate_gb']:.1f}", ""]
        else:
            cells = [r["shape"], str(r["lora_r"]), f"{r['params'] / 1e6:.0f}", f"{r['trainable'] / 1e6:.2f}"]
            cells += [f"{r['peak_rss_gb']:.2f}", f"{r['estimate_gb']:.1f}", f"{r['tokens_per_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every (shape, rank) cell in a child each; print and write the table and the JSON."""
    cfg = parse_args(Config, argv)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.cell is not None:
        shape, rank = cfg.cell.rsplit(":", 1)
        print(json.dumps(run_cell(cfg, shape, int(rank))))
        return 0
    rows = []
    for shape in cfg.shapes:
        for rank in cfg.lora_ranks:
            row = measure(cfg, shape, rank)
            rows.append(row)
            print(f"[scale] {json.dumps(row)}", flush=True)
    table = markdown(rows)
    print(table)
    (cfg.out / "scale.md").write_text(table + "\n")
    payload = {"config": config_to_dict(cfg), "cpu_count": os.cpu_count(), "rows": rows}
    (cfg.out / "scale.json").write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
