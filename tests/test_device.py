"""Device names: ``auto`` resolves, a bad or absent one is a one-line user error naming the flag."""

import pytest
import torch

from buildlm.device import resolve_device


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
