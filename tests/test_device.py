"""Device names: ``auto`` resolves, a bad or absent one is a one-line user error naming the flag.
One set of dtype names serves training precision and every ``--dtype``; autocast and seeding."""

import random

import numpy as np
import pytest
import torch

from buildlm.device import DTYPES, autocast_context, parse_dtype, resolve_device, seed_everything
from buildlm.train.config import TrainConfig


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("name", ["0", "-1", "abc", "", "nan", "cpu:x", "meta"])
def test_a_name_that_is_no_usable_device_is_a_value_error_naming_the_flag(name):
    with pytest.raises(ValueError, match="--device"):
        resolve_device(name)


def test_an_absent_gpu_names_the_flag_the_user_typed():
    """``cuda:99`` exists on no machine: with or without CUDA the error names the given flag."""
    with pytest.raises(ValueError) as err:
        resolve_device("cuda:99", "--device")
    assert "--device" in str(err.value) and "--train.device" not in str(err.value)
    with pytest.raises(ValueError, match="--train.device"):
        resolve_device("cuda:99", "--train.device")


def test_one_table_of_dtype_names_for_dtype_flags_and_training_precision():
    assert list(DTYPES.items()) == [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
    for name, dtype in DTYPES.items():
        assert parse_dtype(name) is dtype
        assert TrainConfig(precision=name).precision == name
    assert parse_dtype("auto") is None and parse_dtype(None) is None  # keep the stored dtype


@pytest.mark.parametrize("name", ["bfloat16", "float32", "fp64", "BF16", ""])
def test_a_dtype_name_outside_the_table_is_refused_by_every_flag(name):
    with pytest.raises(ValueError, match=r"unknown dtype .*choose auto, fp32, bf16, fp16"):
        parse_dtype(name)
    with pytest.raises(ValueError, match=r"unknown precision .*choose one of: auto, fp32, bf16, fp16"):
        TrainConfig(precision=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_autocast_runs_the_matmuls_in_the_precision_named(precision):
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast_context(torch.device("cpu"), precision):
        product = a @ b
    assert product.dtype == DTYPES[precision]
    assert a.dtype == torch.float32  # the tensors themselves are not converted


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(5)
    first = draws()
    seed_everything(5)
    assert draws() == first
    seed_everything(6)
    assert draws() != first
