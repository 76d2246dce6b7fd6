"""``buildlm explain``: the trace adds up to the model's own counts, and the CLI says what it sees."""

import re

import pytest
import torch

from buildlm.cli import main
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer
from buildlm.train.checkpoint import save_checkpoint
from buildlm.viz.explain import next_token_probabilities, trace_model


def _meta_gpt(config: ModelConfig) -> GPT:
    with torch.device("meta"):  # shapes only: counting needs no memory
        return GPT(config)


SMALL = dict(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4)
CONFIGS = {
    "gpt2-124m": ModelConfig.preset("gpt2-124m"),
    "llama-small": ModelConfig.preset("llama-small"),
    "tiny": ModelConfig.preset("tiny"),
    "small": ModelConfig.preset("small"),
    "post-ln,sinusoidal": ModelConfig(**SMALL, norm_placement="post", position="sinusoidal"),
    "rope,mqa,qk-norm,untied,bias": ModelConfig(
        **SMALL, position="rope", n_kv_heads=1, qk_norm=True, tie_embeddings=False
    ),
    "swiglu,qkv-bias-only,head_dim": ModelConfig(
        **SMALL, mlp="swiglu", bias=False, qkv_bias=True, head_dim=16, position="rope"
    ),
    "moe-small": ModelConfig.preset("moe-small"),
    "moe,gelu,shared,gated,first-dense": ModelConfig(
        **SMALL, n_experts=5, n_active_experts=3, moe_d_ff=24, n_shared_experts=2,
        shared_expert_gate=True, moe_first_dense=1,
    ),  # fmt: skip
    "olmo2-branch-post,qk-norm-all": ModelConfig(
        **SMALL, norm="rmsnorm", position="rope", mlp="swiglu", bias=False,
        norm_placement="branch_post", qk_norm=True, qk_norm_scope="all", n_kv_heads=2,
    ),
    "relu2,untied": ModelConfig(**SMALL, mlp="relu2", position="rope", tie_embeddings=False),
    "gemma2-sandwich,geglu": ModelConfig(
        **SMALL, norm="rmsnorm", position="rope", mlp="geglu", bias=False, norm_offset=1.0,
        norm_placement="sandwich", embed_scale=True, attn_logit_softcap=50.0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
def test_totals_equal_the_models_own_counts(name):
    config = CONFIGS[name]
    model = _meta_gpt(config)
    for seq_len in (None, 7):
        trace = trace_model(config, seq_len)
        t = config.context_length if seq_len is None else seq_len
        assert trace.total_params == model.num_params()
        assert trace.total_flops == model.flops_per_token(t)
        assert trace.stages[0].shape_out == (1, t, config.d_model)
        assert trace.stages[-1].shape_out == (1, t, config.vocab_size)


def test_gpt2_small_trace():
    trace = trace_model(ModelConfig.preset("gpt2-124m"))
    assert trace.total_params == 124_439_808  # GPT-2 small, the LM head tied to the embedding
    assert trace.stage("LM head (tied)").params == 0
    assert trace.stage("scores q k^T / sqrt(d)", layer=11).shape_out == (1, 12, 1024, 1024)
    assert trace.stage("up projection (fc)", layer=0).shape_out == (1, 1024, 3072)
    assert trace.stage("q projection", layer=0).params == 768 * 768 + 768  # its rows of qkv
    assert sum(s.group and s.depth == 0 for s in trace.stages) == 12  # one heading per block


def test_grouped_query_shapes():
    trace = trace_model(ModelConfig.preset("llama-small"), seq_len=10)
    assert trace.stage("q projection", layer=3).shape_out == (1, 8, 10, 64)
    assert trace.stage("k projection", layer=3).shape_out == (1, 2, 10, 64)  # 2 key/value heads
    assert trace.stage("RoPE on q and k", layer=3).shape_in == (1, 8, 10, 64)
    with pytest.raises(ValueError, match="seq_len must be an integer from 1 to"):
        trace_model(ModelConfig.preset("llama-small"), seq_len=1025)


def _numbers(line: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", line)]


def test_cli_prints_every_stage_and_the_totals(capsys):
    main(["explain", "--preset", "tiny", "--seq-len", "32"])
    out = capsys.readouterr().out
    model = _meta_gpt(ModelConfig.preset("tiny"))
    for stage in ("token embedding", "position embedding", "norm1", "q projection", "softmax",
                  "out projection", "residual add", "GELU (tanh)", "final norm", "LM head"):  # fmt: skip
        assert stage in out
    assert out.count("block ") >= 4
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert _numbers(total) == [model.num_params(), model.flops_per_token(32)]


def test_cli_gpt2_small_and_brief(capsys):
    main(["explain", "--brief"])  # the default: gpt2-124m, on the meta device
    out = capsys.readouterr().out
    assert "GPT.num_params() = 124,439,808" in out
    assert "GPT.flops_per_token(1024) = 854,438,400" in out
    assert out.count("q projection") == 1  # brief: block 0 only in full
    assert "block 11" in out


@pytest.fixture
def checkpoint(tmp_path):
    """A small GPT reading GPT-2's tokens, saved the way training saves it. Wide weights
    (std 0.5) make the next-token distribution peaked, so its top probabilities are large."""
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny", vocab_size=50257, context_length=32, d_model=32, n_layers=2, n_heads=4, init_std=0.5
    )
    model = GPT(config).eval()
    tokenizer = Tokenizer.pretrained("gpt2")
    folder = save_checkpoint(tmp_path / "run", 1, model, {"model": config.to_dict()}, tokenizer)
    return folder, model, tokenizer


def test_cli_text_shows_tokens_and_softmax_probabilities(checkpoint, capsys):
    folder, model, tokenizer = checkpoint
    text = "Hello world, this is"
    main(["explain", "--model", str(folder), "--text", text, "--top-k", "4", "--brief"])
    out = capsys.readouterr().out
    ids = tokenizer.encode(text)
    for i in ids:  # every token with its id and its text
        assert re.search(rf"\b{i}\s+{re.escape(repr(tokenizer.decode([i])))}", out)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids]))[0, -1], dim=-1)
    top = torch.topk(probs, 4)
    printed = re.findall(r"^\s+\d\.\s+(\d+)\s+p=([\d.e+-]+)", out, flags=re.M)
    assert [int(i) for i, _ in printed] == top.indices.tolist()
    assert [float(p) for _, p in printed] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert top.values[0] > 0.01  # 500x uniform (1/50257): the check has teeth
    # pytest.approx compares flat sequences only (pytest 9 refuses nested ones): ids exactly,
    # probabilities approximately.
    predicted = next_token_probabilities(model, ids, 4)
    assert [i for i, _ in predicted] == top.indices.tolist()
    assert [p for _, p in predicted] == pytest.approx(top.values.tolist(), rel=1e-5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "gpt5"], "unknown model preset 'gpt5'; choose one of: gpt2-124m"),
        (["--model", "no/such/run"], "'no/such/run' not found"),
        (["--preset", "tiny", "--text", "hi"], "vocab_size=1024, which matches no tokenizer"),
        (["--preset", "tiny", "--seq-len", "0"], "seq_len must be an integer from 1 to"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_1(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", *argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("buildlm explain: error: ") and message in err
    assert err.count("\n") == 1


def test_cli_shows_experts_and_active_parameters(capsys):
    main(["explain", "--preset", "moe-small", "--seq-len", "16", "--brief"])
    out = capsys.readouterr().out
    model = _meta_gpt(ModelConfig.preset("moe-small"))
    for stage in ("mixture of experts", "router", "experts", "2 of 8 experts per token"):
        assert stage in out
    line = next(x for x in out.splitlines() if x.startswith("active parameters per token"))
    assert _numbers(line)[:2] == [model.num_params(active=True), model.num_params()]


def test_local_layers_show_their_window():
    cfg = ModelConfig.preset(
        "llama-small", n_layers=2, sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    trace = trace_model(cfg, seq_len=10)
    assert "local: sees the last 64 positions" in trace.stage("attention", layer=0).note
    assert "local" not in trace.stage("attention", layer=1).note
    # at a sequence longer than the window, the local layer's score matmul covers 64 keys
    long = trace_model(cfg, seq_len=256)
    local, full = (long.stage("scores q k^T / sqrt(d)", layer=i) for i in (0, 1))
    assert local.flops * 4 == full.flops and "keys over 64 back" in local.note
    assert long.total_flops == GPT(cfg).flops_per_token(256)
