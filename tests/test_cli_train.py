"""`buildlm prepare`, `buildlm train` and `buildlm generate` end to end, in subprocesses."""

import json
import sys
from pathlib import Path

import pytest
import torch

from buildlm.data.corpora import load_corpus
from buildlm.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from cli_run import assert_one_line_error, buildlm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--model.preset", "tiny", "--train.context_length", "32", "--model.d_model", "64", "--model.n_layers", "2",
    "--train.batch_size", "4", "--train.eval_batches", "2", "--train.progress", "false",
    "--train.tensorboard", "false", "--train.peak_flops", "1e12", "--train.num_threads", "1",
    "--train.sample_tokens", "8", "--train.time_budget_s", "null",
]


def test_prepare_train_resume_generate(tmp_path):
    tok = Tokenizer.train(load_corpus("the-verdict"), 300, progress=False)
    tok.save(tmp_path / "tok.json")

    buildlm("prepare", "--input", "the-verdict", "--tokenizer", "tok.json", "--out", "data", "--quiet", cwd=tmp_path)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["splits"]["val"]["tokens"] > 100

    out = buildlm(
        "train", *TINY, "--data.prepared_dir", "data", "--train.max_steps", "4", "--train.eval_interval", "2",
        "--train.checkpoint_interval", "2", "--train.name", "run", "--model.head_dim", "8", cwd=tmp_path,
    ).stdout
    assert "baselines (val loss, nats/token): uniform" in out and "bigram" in out
    assert "final val loss" in out and "--- sample ---" in out
    run = tmp_path / "runs" / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    config = json.loads((run / "checkpoints" / "step-0000004" / "config.json").read_text())
    assert config["model"]["d_model"] == 64 and config["model"]["vocab_size"] == tok.vocab_size
    assert config["model"]["head_dim"] == 8 and config["model"]["n_kv_heads"] == 4  # resolved
    assert config["train"]["max_steps"] == 4

    # a run saved before ModelConfig resolved its automatic sizes (null, and d_head for head_dim)
    model = config["model"]
    old_style = {k: v for k, v in model.items() if k != "head_dim"}
    old_style.update(n_kv_heads=None, d_ff=None, d_head=8, qkv_bias=None)
    (run / "checkpoints" / "step-0000004" / "config.json").write_text(json.dumps({**config, "model": old_style}))

    # continue to step 6: the saved settings come back, the new max_steps overrides them
    out = buildlm("train", "--resume", "runs/run", "--train.max_steps", "6", cwd=tmp_path).stdout
    assert "resumed from" in out and "step-0000004" in out
    assert (run / "checkpoints" / "step-0000006").is_dir()
    assert json.loads((run / "checkpoints" / "step-0000006" / "config.json").read_text())["model"] == model
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,train_loss")
    val_steps = [line.split(",")[0] for line in metrics[1:] if line.split(",")[6]]
    assert val_steps == ["2", "4", "6"]

    gen = buildlm(
        "generate", "--model", "runs/run", "--prompt", "I HAD always", "--max-new-tokens", "12", "--seed", "3",
        "--temperature", "0.9", "--top-k", "20", cwd=tmp_path,
    ).stdout
    assert gen.startswith("I HAD always") and len(gen) > len("I HAD always")
    again = buildlm(
        "generate", "--model", "runs/run/checkpoints/step-0000006", "--prompt", "I HAD always",
        "--max-new-tokens", "12", "--seed", "3", "--temperature", "0.9", "--top-k", "20", cwd=tmp_path,
    ).stdout
    assert again == gen  # same checkpoint, same seed

    # a damaged weights file: one line naming it
    weights = run / "checkpoints" / "step-0000006" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(64)
    assert_one_line_error(buildlm("generate", "--model", "runs/run", cwd=tmp_path, check=False), "model.safetensors")


def test_yaml_config_with_overrides(tmp_path):
    out = buildlm(
        "train", "--config", "verdict-tiny", *TINY, "--train.max_steps", "2",
        "--train.eval_interval", "2", "--tokenizer.vocab_size", "280", "--train.out_dir", tmp_path / "runs",
        "--train.device", "auto", cwd=tmp_path,
    ).stdout
    # the device, and why, once in the log
    [device] = [line for line in out.splitlines() if line.startswith("device: ")]
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        assert device.startswith("device: cpu (auto: no CUDA device") and "no Apple MPS" in device
    assert "trained a BPE tokenizer: vocab 280" in out
    config = json.loads(next((tmp_path / "runs").glob("*/checkpoints/step-*/config.json")).read_text())
    assert config["train"]["max_steps"] == 2 and config["train"]["sample_prompt"] == "I HAD always thought"
    assert config["model"]["vocab_size"] == 280 and config["data"]["inputs"] == ["the-verdict"]


def test_help_lists_the_dataclass_fields(tmp_path):
    out = buildlm("train", "--help", cwd=tmp_path).stdout
    for flag in ("--model.preset", "--model.d_model", "--train.max_steps", "--train.precision", "--data.inputs",
                 "--tokenizer.vocab_size", "--resume", "--config"):
        assert flag in out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model.preset", "huge"], ["unknown model preset 'huge'", "tiny"]),
        (["--model.preset", "tiny", "--model.d_model", "130"], ["d_model=130", "n_heads=4"]),
        (["--train.precision", "fp8"], ["precision 'fp8'"]),
        (["--resume", "no/such/run"], ["no/such/run"]),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, fragments):
    assert_one_line_error(buildlm("train", *args, cwd=tmp_path, check=False), *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="needs a machine without CUDA and Apple MPS")  # fmt: skip
@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_absent_device_is_one_line(tmp_path, device):
    proc = buildlm("train", "--train.device", device, cwd=tmp_path, check=False)
    assert_one_line_error(proc, f"--train.device '{device}'", "use --train.device cpu or auto")
    assert "device: " not in proc.stdout and not (tmp_path / "runs").exists()  # checked first


def test_prepare_errors_are_one_line(tmp_path):
    proc = buildlm("prepare", "--input", "missing.txt", "--out", "d", cwd=tmp_path, check=False)
    assert_one_line_error(proc, "missing.txt")
    proc = buildlm("prepare", "--input", "the-verdict", "--tokenizer", "nope.json", "--out", "d", cwd=tmp_path, check=False)
    assert_one_line_error(proc, "nope.json")


@pytest.mark.parametrize("path", sorted((REPO / "src/buildlm/configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_preset_parses(path):
    from buildlm.train.cli import build_parser
    from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
    from buildlm.train.run import build_model_config, model_args_class

    cfg = build_parser().parse_args(["--config", str(path)])
    train = TrainConfig(**vars(cfg.train))
    DataConfig(**vars(cfg.data))
    TokenizerConfig(**vars(cfg.tokenizer))
    model = build_model_config(model_args_class()(**vars(cfg.model)), cfg.tokenizer.vocab_size, train.context_length)
    assert model.context_length >= (train.context_length or 0)


def test_the_no_argument_run_is_the_bundled_shakespeare_small_config():
    from buildlm.train.bundled_configs import resolve_config
    from buildlm.train.cli import build_parser
    from buildlm.train.config import TrainConfig

    plain = build_parser().parse_args([])
    spelled_out = build_parser().parse_args(["--config", resolve_config("shakespeare-small")])
    for group in ("model", "train", "data", "tokenizer"):
        assert vars(plain[group]) == vars(spelled_out[group]), group
    # the run README.md describes: 32 windows of 128 tokens for 300 s, where the library's
    # TrainConfig says 16 windows of the model's length
    assert (plain.train.batch_size, plain.train.context_length, plain.train.time_budget_s) == (32, 128, 300)
    assert (TrainConfig().batch_size, TrainConfig().context_length) == (16, None)
    # flags still win over the no-argument run's settings
    flags = build_parser().parse_args(["--train.batch_size", "4"])
    assert flags.train.batch_size == 4 and flags.train.context_length == 128
