"""textrlhf.threads: which decodes get fewer intra-op threads, and that the count always comes back."""

from __future__ import annotations

import pytest
import torch

from textrlhf.threads import check_decode_threads, decode_threads, intra_op_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("policy", ["PASSIVE", "passive "])
def test_auto_halves_the_threads_of_a_bf16_cpu_decode_with_passive_openmp(monkeypatch, two_threads, policy):
    monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    assert decode_threads("auto", "bf16", "cpu") == 1


def test_auto_leaves_fp32_spinning_openmp_and_other_devices_alone(monkeypatch, two_threads):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert decode_threads("auto", "fp32", "cpu") is None  # fp32 kernels need every core
    assert decode_threads("auto", "bf16", "cuda") is None
    assert decode_threads(3, "fp32", "cuda") is None  # threads are a CPU matter
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert decode_threads("auto", "bf16", "cpu") is None  # spinning threads: two are faster
    assert decode_threads(1, "fp32", "cpu") == 1  # an explicit count always applies on a CPU


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "half", None])
def test_decode_threads_must_be_auto_or_a_positive_int(bad):
    with pytest.raises(ValueError, match="decode_threads must be 'auto' or a positive int"):
        check_decode_threads(bad)


def test_intra_op_threads_restores_the_count_even_after_an_error(two_threads):
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with intra_op_threads(None):
        assert torch.get_num_threads() == 2
