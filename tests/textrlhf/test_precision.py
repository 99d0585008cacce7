"""The sampler's precision option (textrlhf/precision.py)."""

import pytest
import torch

from textrlhf.precision import SAMPLING_PRECISIONS, dtype_name, native_bf16, sampling_dtype


def test_explicit_precisions_are_what_they_say():
    assert sampling_dtype("fp32", "cpu") is torch.float32
    assert sampling_dtype("bf16", "cpu") is torch.bfloat16
    assert [dtype_name(sampling_dtype(p, "cpu")) for p in ("fp32", "bf16")] == ["fp32", "bf16"]


def test_auto_is_bf16_exactly_where_the_device_has_it_natively():
    cpu_has_bf16 = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert native_bf16("cpu") is cpu_has_bf16
    assert sampling_dtype("auto", "cpu") is (torch.bfloat16 if cpu_has_bf16 else torch.float32)
    assert native_bf16("meta") is False and sampling_dtype("auto", "meta") is torch.float32


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match=r"\['auto', 'fp32', 'bf16'\], got 'fp16'"):
        sampling_dtype("fp16", "cpu")
    assert SAMPLING_PRECISIONS == ("auto", "fp32", "bf16")
