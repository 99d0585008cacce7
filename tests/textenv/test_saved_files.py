"""Files the project writes for people: ordinary permissions, tokenizers that reload padding as saved, and
vector envs that build without needless tokenizer copies (issue 17)."""

from __future__ import annotations

import copy
import os
import stat

import pytest

PROMPTS = ["The film opens with a long shot of", "I watched this movie with my family and"]


@pytest.fixture
def umask():
    """Run the test under a chosen umask (restored afterwards); returns the setter."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_atomic_dir_gives_the_umask_permissions_not_mkdtemps_0700(tmp_path, umask, mask):
    from textrlhf.atomic import atomic_dir

    umask(mask)
    with atomic_dir(tmp_path / "model") as tmp:
        # Like transformers' model.safetensors: a writer that creates its file 0600.
        os.close(os.open(tmp / "weights.bin", os.O_CREAT | os.O_WRONLY, 0o600))
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "config.json").write_text("{}")
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o700)
        os.symlink("weights.bin", tmp / "link")
    out = tmp_path / "model"
    assert _mode(out) == 0o777 & ~mask
    assert _mode(out / "sub") == 0o777 & ~mask
    assert _mode(out / "weights.bin") == 0o666 & ~mask
    assert _mode(out / "sub" / "config.json") == 0o666 & ~mask
    assert _mode(out / "run.sh") == 0o777 & ~mask  # an executable stays executable
    assert os.path.islink(out / "link")


def test_current_umask_reads_proc_or_falls_back_to_the_swap(monkeypatch, umask):
    import builtins

    from textrlhf.atomic import current_umask

    umask(0o077)
    assert current_umask() == 0o077
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert current_umask() == 0o077
    assert os.umask(0o077) == 0o077  # the fallback put the umask back


def _assert_pads_like_the_project(folder) -> None:
    from transformers import AutoTokenizer

    from textenv import load_tokenizer

    ours = load_tokenizer("tiny")
    saved = AutoTokenizer.from_pretrained(str(folder))
    assert saved.padding_side == ours.padding_side == "left"
    assert saved.pad_token == ours.pad_token and saved.pad_token_id != saved.eos_token_id


def test_a_saved_tokenizer_reloads_padding_on_the_left(tmp_path):
    from textenv import load_tokenizer

    load_tokenizer("tiny").save_pretrained(tmp_path / "tok")
    _assert_pads_like_the_project(tmp_path / "tok")


def test_exported_policy_folder_is_readable_and_pads_left(tmp_path, umask):
    import agents

    umask(0o022)
    env = agents.make_vec_text_env(
        2, model="tiny", prompts=PROMPTS, max_new_tokens=2, max_prompt_tokens=12, reward="length"
    )
    agent = agents.make_agent("ppo", env, seed=0, n_steps=2, batch_size=4)
    agent.policy.save_pretrained(tmp_path / "hf")
    env.close()
    assert _mode(tmp_path / "hf") == 0o755
    for name in ("model.safetensors", "value_head.pt", "tokenizer_config.json", "config.json"):
        assert _mode(tmp_path / "hf" / name) == 0o644, name
    _assert_pads_like_the_project(tmp_path / "hf")


def test_sft_stage_model_folder_pads_left(tmp_path, umask):
    from scripts.stages.config import TINY_PRESET, build_config
    from scripts.stages.sft import run_sft

    umask(0o022)
    cfg = build_config(
        TINY_PRESET, {"run": {"run_dir": str(tmp_path / "run"), "progress": False}, "sft": {"skip": True}}
    )
    run_sft(cfg)
    folder = tmp_path / "run" / "sft" / "model"
    assert _mode(folder) == 0o755 and _mode(folder / "model.safetensors") == 0o644
    _assert_pads_like_the_project(folder)


def test_vector_env_copies_the_tokenizer_once_and_the_copy_stays_independent(monkeypatch):
    """Issue 17: the N rows of the native vector env share ONE tokenizer copy (it was one per env)."""
    from transformers import PreTrainedTokenizerBase

    import agents
    from textrlhf.models import load_tokenizer, vocab_size

    real_deepcopy, copies = copy.deepcopy, []

    def counting(obj, *args, **kwargs):
        if isinstance(obj, PreTrainedTokenizerBase):
            copies.append(type(obj).__name__)
        return real_deepcopy(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", counting)
    env = agents.make_vec_text_env(
        4, model="tiny", prompts=PROMPTS, max_new_tokens=2, max_prompt_tokens=12, reward="length"
    )
    monkeypatch.setattr(copy, "deepcopy", real_deepcopy)
    assert len(copies) == 1  # one for all rows (env.tokenizer is public and may be modified); none for sizes
    tokenizers = env.get_attr("tokenizer")
    assert all(t is tokenizers[0] for t in tokenizers)

    other_env = agents.make_vec_text_env(
        2, model="tiny", prompts=PROMPTS, max_new_tokens=2, max_prompt_tokens=12, reward="length"
    )
    first, second = tokenizers[0], other_env.get_attr("tokenizer")[0]
    n_tokens = len(second)
    first.padding_side = "right"
    first.chat_template = "{{ messages }}"
    first.add_special_tokens({"additional_special_tokens": ["<|mine|>"]})
    for other in (second, load_tokenizer("tiny")):
        assert other.padding_side == "left" and other.chat_template != "{{ messages }}"
        assert len(other) == n_tokens
    assert vocab_size("tiny") == env.get_attr("vocab_size", indices=[1])[0]
    env.close()
    other_env.close()


def test_version_is_the_installed_distributions():
    import importlib.metadata

    import textenv

    assert textenv.__version__ == importlib.metadata.version("textrlhf")
