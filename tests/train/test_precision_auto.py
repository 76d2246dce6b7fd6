"""``--train.precision auto``: bf16 where this machine's bf16 matmuls are clearly faster, fp32
where not, measured once per machine and cached; the trainer trains in what it chose."""

import json

import pytest
import torch

from buildlm import precision
from buildlm.model import GPT, ModelConfig
from buildlm.train.config import TrainConfig
from buildlm.train.trainer import Trainer
from buildlm.train.windows import TrainData


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def rates(fp32: float, bf16: float):
    """A measurement that returns the given FLOP/s and counts its calls."""
    calls = []

    def measure(dtype):
        calls.append(dtype)
        return {torch.float32: fp32, torch.bfloat16: bf16}[dtype]

    measure.calls = calls
    return measure


@pytest.mark.parametrize(
    "fp32, bf16, chosen",
    [(50e9, 120e9, "bf16"), (50e9, 0.5e9, "fp32"), (50e9, 60e9, "fp32")],
    ids=["bf16-instructions", "emulated-bf16", "only-a-little-faster"],
)
def test_the_choice_follows_the_measured_rates(cache_home, fp32, bf16, chosen):
    choice = precision.choose_precision(torch.device("cpu"), rates(fp32, bf16))
    assert choice.precision == chosen
    assert f"{bf16 / fp32:.2f}x the fp32 rate" in choice.reason


def test_the_measurement_is_cached_per_machine(cache_home, monkeypatch):
    first = rates(50e9, 120e9)
    assert precision.choose_precision(torch.device("cpu"), first).precision == "bf16"
    assert first.calls == [torch.float32, torch.bfloat16]
    cached = json.loads((cache_home / "buildlm" / "precision.json").read_text())
    assert cached[precision.cpu_key()] == {"fp32": 50e9, "bf16": 120e9}
    again = rates(1.0, 1.0)  # would choose fp32, if it were asked
    assert precision.choose_precision(torch.device("cpu"), again).precision == "bf16"
    assert again.calls == []  # read from the cache
    monkeypatch.setattr(precision, "cpu_key", lambda: "another-machine")
    other = rates(50e9, 1e9)
    assert precision.choose_precision(torch.device("cpu"), other).precision == "fp32"
    assert other.calls  # a different CPU is measured anew


def test_a_damaged_cache_is_measured_again(cache_home):
    path = cache_home / "buildlm" / "precision.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    measure = rates(50e9, 120e9)
    assert precision.choose_precision(torch.device("cpu"), measure).precision == "bf16"
    assert measure.calls and json.loads(path.read_text())


def test_a_real_measurement_gives_positive_rates():
    assert precision.matmul_rate(torch.float32, size=64, seconds=0.01) > 0


@pytest.mark.parametrize("bf16_rate, expected", [(200e9, "bf16"), (1e9, "fp32")])
def test_the_trainer_trains_in_the_chosen_precision(cache_home, bf16_rate, expected):
    path = cache_home / "buildlm" / "precision.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({precision.cpu_key(): {"fp32": 50e9, "bf16": bf16_rate}}))
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=64, context_length=16))
    tokens = torch.randint(0, 64, (2000,)).numpy()
    config = TrainConfig(
        precision="auto", max_steps=2, time_budget_s=None, batch_size=2, device="cpu", progress=False,
        tensorboard=False, eval_interval=100, checkpoint_interval=0, sample_interval=0, peak_flops=1e12,
    )  # fmt: skip
    lines = []
    trainer = Trainer(model, config, TrainData(tokens, tokens[:500]), log=lines.append)
    assert trainer.precision == expected and config.precision == "auto"  # the config as passed
    assert any(line.startswith(f"precision auto: {expected} (") for line in lines)
    x = torch.randint(0, 64, (2, 16))
    with trainer.autocast:
        logits = trainer.model(x)
    assert logits.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    assert trainer.fit().step == 2


def test_unknown_precision_names_auto():
    with pytest.raises(ValueError, match="choose one of: auto, fp32, bf16, fp16"):
        TrainConfig(precision="fp8")
