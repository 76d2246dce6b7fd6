"""Device names: ``auto`` resolves, a bad or absent one is a one-line user error naming the flag.
One set of dtype names serves training precision and every ``--dtype``; autocast and seeding.

This machine has no GPU and no Mac, so what ``auto`` finds is set by replacing PyTorch's own
probes (``torch.cuda.is_available``, ``torch.backends.mps.is_available`` ...) for one test: the
resolution logic is what is tested, not the devices. The Apple MPS paths are untested on a Mac."""

import platform
import random
import sys

import numpy as np
import pytest
import torch

from buildlm import precision
from buildlm.device import (
    DTYPES,
    autocast_context,
    check_compile,
    check_dtype,
    choose_device,
    parse_dtype,
    resolve_device,
    seed_everything,
)
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


@pytest.fixture
def machine(monkeypatch):
    """``machine(gpus=0, mps=False, bf16=True, macos=14, cuda_build=True, mac=False)``: make
    PyTorch's probes report such a machine for this test."""

    def make(gpus=0, mps=False, bf16=True, macos=14, cuda_build=True, mac=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.version, "cuda", "12.4" if cuda_build else None)
        monkeypatch.setattr(torch.version, "hip", None, raising=False)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: mac)
        monkeypatch.setattr(platform, "mac_ver", lambda: (f"{macos}.1" if mac else "", ("", "", ""), ""))
        monkeypatch.setattr(sys, "platform", "darwin" if mac else "linux")

    return make


@pytest.mark.parametrize(
    "probes, device, line",
    [
        (dict(gpus=2, mps=True, mac=True), "cuda", "device: cuda (auto: CUDA GPU Fake GPU, cuda:0 of 2)"),
        (dict(mps=True, mac=True, cuda_build=False), "mps",
         "device: mps (auto: no CUDA device (a CPU-only PyTorch build), Apple MPS found)"),
        (dict(cuda_build=False), "cpu",
         "device: cpu (auto: no CUDA device (a CPU-only PyTorch build), no Apple MPS (not a Mac))"),
        (dict(mac=True), "cpu",
         "device: cpu (auto: no CUDA device, no Apple MPS (it needs Apple silicon and macOS 12.3+))"),
    ],
    ids=["cuda-first", "then-mps", "then-cpu", "mac-without-mps"],
)  # fmt: skip
def test_auto_picks_cuda_then_mps_then_cpu_and_says_why(machine, probes, device, line):
    machine(**probes)
    choice = choose_device("auto")
    assert choice.device == torch.device(device) and resolve_device("auto") == choice.device
    assert choice.line == line


def test_a_named_device_that_exists_is_taken_as_named(machine):
    machine(gpus=2)
    assert choose_device("cuda:1", "--train.device").line == "device: cuda:1 (--train.device cuda:1)"
    assert choose_device("cpu").line == "device: cpu (--device cpu)"
    machine(mps=True, mac=True)
    assert choose_device("mps").device == torch.device("mps")


@pytest.mark.parametrize(
    "probes, name, message",
    [
        (dict(cuda_build=False), "cuda",
         "--device 'cuda': this PyTorch (%s) is a CPU-only build; install a CUDA one, or use --device cpu or auto"),
        (dict(), "cuda", "--device 'cuda': no CUDA GPU is visible (see nvidia-smi and CUDA_VISIBLE_DEVICES); "
                         "use --device cpu or auto"),
        (dict(gpus=1), "cuda:3",
         "--device 'cuda:3': this machine has 1 CUDA device(s), cuda:0 to cuda:0; use one of them or --device cuda"),
        (dict(), "mps", "--device 'mps': no Apple MPS (not a Mac); use --device cpu or auto"),
        (dict(mac=True), "mps",
         "--device 'mps': no Apple MPS (it needs Apple silicon and macOS 12.3+); use --device cpu or auto"),
        (dict(mps=True, mac=True), "mps:1", "--device 'mps:1': Apple MPS has one device; use --device mps"),
    ],
    ids=["cpu-only-build", "no-gpu-visible", "cuda-index-too-high", "mps-off-apple", "mps-old-mac", "mps-index"],
)  # fmt: skip
def test_an_absent_device_is_one_line_with_the_fix(machine, probes, name, message):
    machine(**probes)
    with pytest.raises(ValueError) as err:
        choose_device(name)
    expected = message % torch.__version__ if "%s" in message else message
    assert str(err.value) == expected


@pytest.mark.parametrize(
    "probes, device, dtype, message",
    [
        (dict(gpus=1, bf16=False), "cuda", torch.bfloat16, "--dtype bf16: this GPU does not support bf16; use --dtype fp16 or fp32"),
        (dict(mps=True, mac=True, macos=13), "mps", torch.bfloat16,
         "--dtype bf16: bf16 on Apple MPS needs macOS 14 or newer; use --dtype fp16 or fp32"),
        (dict(mps=True, mac=True), "mps", torch.float64, "--dtype float64: Apple MPS has no float64; use --dtype fp32"),
    ],
    ids=["cuda-without-bf16", "mps-before-macos-14", "mps-float64"],
)  # fmt: skip
def test_a_dtype_the_device_cannot_compute_in_is_refused(machine, probes, device, dtype, message):
    machine(**probes)
    with pytest.raises(ValueError) as err:
        check_dtype(dtype, torch.device(device))
    assert str(err.value) == message


def test_the_dtypes_each_device_has_pass(machine):
    machine(gpus=1, bf16=True, mps=True, mac=True, macos=14)
    for device in ("cpu", "cuda", "mps"):
        for dtype in (None, *DTYPES.values()):
            assert check_dtype(dtype, torch.device(device)) is dtype
    machine(gpus=1, bf16=False, mps=True, mac=True, macos=13)
    assert check_dtype(torch.float16, torch.device("cuda")) is torch.float16  # fp16 on every GPU
    assert check_dtype(torch.float16, torch.device("mps")) is torch.float16


def test_training_precision_is_checked_against_the_device(machine):
    machine(gpus=1, bf16=False)
    with pytest.raises(ValueError, match=r"^--train.precision bf16: this GPU does not support bf16"):
        precision.resolve_precision("bf16", torch.device("cuda"))
    assert precision.resolve_precision("fp16", torch.device("cuda")) == "fp16"
    assert precision.resolve_precision("auto", torch.device("cuda"), log=lambda _: None) == "fp32"


def test_compile_is_refused_on_mps_only():
    check_compile(torch.device("cpu"))
    check_compile(torch.device("cuda"))
    with pytest.raises(ValueError, match=r"^--compile: torch.compile on Apple MPS"):
        check_compile(torch.device("mps"))


def test_train_checks_its_settings_against_the_device_and_logs_it_once(machine):
    from buildlm.train.distributed import Distributed
    from buildlm.train.run import check_device

    machine(gpus=1, bf16=False, cuda_build=True)
    lines = []
    assert check_device(TrainConfig(device="auto", precision="fp16"), lines.append) == torch.device("cuda")
    assert lines == ["device: cuda (auto: CUDA GPU Fake GPU, cuda:0 of 1)"]
    with pytest.raises(ValueError, match=r"^--train.precision bf16: this GPU does not support bf16"):
        check_device(TrainConfig(device="cuda", precision="bf16"), lines.append)
    machine(mps=True, mac=True)
    with pytest.raises(ValueError, match=r"^--train.compile: torch.compile on Apple MPS"):
        check_device(TrainConfig(device="mps", compile=True), lines.append)
    rank = Distributed(0, 0, 2, "ddp", torch.device("cpu"))  # under torchrun: the rank's device
    lines.clear()
    assert check_device(TrainConfig(), lines.append, rank) == torch.device("cpu")
    assert lines == ["device: cpu (torchrun: rank 0 of 2, each on the CPU (gloo))"]


def test_torchrun_with_an_absent_gpu_is_an_error_not_the_cpu(machine, monkeypatch):
    from buildlm.train.distributed import init_distributed

    machine(gpus=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"^--train.device 'cuda': no CUDA GPU is visible"):
        init_distributed("ddp", "cuda")
    with pytest.raises(ValueError, match=r"^--train.device 'mps' under torchrun: use auto, cuda or cpu"):
        init_distributed("ddp", "mps")
