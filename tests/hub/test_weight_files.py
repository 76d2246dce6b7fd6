"""Checkpoint layouts (single, sharded, pytorch_model.bin), dtypes, and damaged or mismatched
checkpoints, each of which must be reported by name."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from buildlm.device import DTYPES
from buildlm.hub import load_hf
from buildlm.hub.hf_config import hf_dtype_name, parse_hf_dtype
from buildlm.hub.safetensors_io import SafetensorsReader, write_safetensors


@pytest.fixture
def llama_folder(hub, tmp_path):
    hf = hub.make_hf("llama", **hub.llama_shape())
    folder = tmp_path / "llama"
    hf.save_pretrained(folder)
    return hf, folder


def _logits(model, vocab):
    idx = torch.arange(20)[None] % vocab
    with torch.no_grad():
        out = model(input_ids=idx) if not hasattr(model, "blocks") else model(idx)
    return out if isinstance(out, torch.Tensor) else out.logits


def test_sharded_safetensors(hub, tmp_path):
    hf = hub.make_hf("qwen2", **hub.llama_shape())
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    model, _ = load_hf(tmp_path)
    torch.testing.assert_close(_logits(model, 97), _logits(hf, 97), atol=1e-5, rtol=1e-5)


def test_sharded_index_naming_a_missing_shard(hub, tmp_path):
    hf = hub.make_hf("qwen2", **hub.llama_shape())
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    sorted(tmp_path.glob("model-*.safetensors"))[-1].unlink()
    with pytest.raises(FileNotFoundError, match=r"shard 'model-\d+-of-\d+.safetensors'"):
        load_hf(tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pytorch_model_bin(hub, tmp_path, family):
    """The older format: a pickled state dict (read with weights_only=True, mmap=True).

    transformers 5 no longer writes it (``safe_serialization=False`` is ignored), so the file is
    written the way transformers 4 did: ``torch.save(model.state_dict())``.
    """
    shape = hub.gpt2_shape() if family == "gpt2" else hub.llama_shape(tie_word_embeddings=True)
    hf = hub.make_hf(family, **shape)
    hf.config.save_pretrained(tmp_path)
    state = hf.state_dict()  # a tied head is saved too, as older transformers did
    if family == "gpt2":  # GPT-2's own file: no "transformer." prefix, causal-mask buffers
        state = {k.removeprefix("transformer."): v for k, v in state.items()}
        state["h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    torch.save(state, tmp_path / "pytorch_model.bin")
    model, _ = load_hf(tmp_path)
    vocab = hf.config.vocab_size
    torch.testing.assert_close(_logits(model, vocab), _logits(hf, vocab), atol=1e-5, rtol=1e-5)


def test_pickle_that_is_not_weights_is_refused(tmp_path, llama_folder):
    _, folder = llama_folder
    (folder / "model.safetensors").unlink()
    torch.save({"step": object()}, folder / "pytorch_model.bin")  # would need full unpickling
    with pytest.raises(ValueError, match="pytorch_model.bin' could not be read"):
        load_hf(folder)


def test_bf16_checkpoint_stays_bf16(hub, tmp_path):
    hf = hub.make_hf("qwen3", **hub.llama_shape(head_dim=16)).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(torch.arange(8)[None]).dtype == torch.bfloat16
    up, _ = load_hf(tmp_path, dtype="float32")
    assert {p.dtype for p in up.parameters()} == {torch.float32}
    # the same bf16 values, widened: fp32 results must agree (a fresh load, so that the RoPE
    # frequencies are computed in fp32 again rather than kept rounded to bf16)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(up, 97), _logits(ref, 97), atol=1e-5, rtol=1e-5)
    half, _ = load_hf(tmp_path, dtype=torch.float16)
    assert half.blocks[0].attn.qkv.weight.dtype == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'float33'"):
        load_hf(tmp_path, dtype="float33")


def test_hugging_face_dtype_names_translate_through_buildlms_table():
    assert [hf_dtype_name(d) for d in DTYPES.values()] == ["float32", "bfloat16", "float16"]
    for name, dtype in DTYPES.items():
        assert parse_hf_dtype(name) is dtype  # buildlm's name
        assert parse_hf_dtype(hf_dtype_name(dtype)) is dtype  # Hugging Face's, as config.json has it
        assert parse_hf_dtype(str(dtype)) is dtype  # torch's, "torch.bfloat16"
    assert parse_hf_dtype(None) is None and parse_hf_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'float64'; use fp32, bf16, fp16"):
        parse_hf_dtype("float64")  # no model of buildlm computes in it


def _rewrite(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(llama_folder):
    _, folder = llama_folder
    _rewrite(folder, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(
        ValueError, match=r"missing tensor 'model.layers.1.self_attn.k_proj.weight'"
    ):
        load_hf(folder)


def test_unexpected_tensor_is_named(llama_folder):
    _, folder = llama_folder
    _rewrite(folder, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected tensor 'model.layers.0.mlp.extra.weight'"):
        load_hf(folder)


def test_wrong_shape_is_named(llama_folder):
    _, folder = llama_folder
    name = "model.layers.0.mlp.up_proj.weight"
    _rewrite(folder, lambda t: t.update({name: torch.zeros(95, 64)}))
    with pytest.raises(ValueError, match=rf"{name}' has shape \[95, 64\].*implies \[96, 64\]"):
        load_hf(folder)


@pytest.mark.parametrize("keep", [0.5, 0.999, 5])
def test_truncated_safetensors_is_reported(llama_folder, keep):
    _, folder = llama_folder
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(ValueError, match="model.safetensors' is not a valid safetensors file"):
        load_hf(folder)


def test_no_weights_at_all(llama_folder):
    _, folder = llama_folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights in .*model.safetensors"):
        load_hf(folder)


def test_safetensors_writer_matches_the_library(tmp_path):
    """Our writer's files read back with the safetensors library (views and mixed dtypes)."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "t": base.t(),  # a non-contiguous view
        "rows": base[1:3],
        "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "i": torch.tensor([7], dtype=torch.int64),
        "h": torch.ones(3, dtype=torch.float16),
    }
    write_safetensors(tmp_path / "x.safetensors", tensors, metadata={"format": "pt"})
    back = load_file(tmp_path / "x.safetensors")
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v.contiguous())
    reader = SafetensorsReader(tmp_path / "x.safetensors")
    assert reader.metadata == {"format": "pt"}
    assert torch.equal(reader.get("t"), base.t())
    out = torch.empty(2, 6, dtype=torch.float64)
    reader.read_into("rows", out)  # converted on the way
    assert torch.equal(out, base[1:3].double())


def test_header_with_bad_offsets(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"a": torch.zeros(4)}, path)
    data = bytearray(path.read_bytes())
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert header["a"]["data_offsets"] == [0, 16]
    text = data.replace(b"[0,16]", b"[0,12]")
    path.write_bytes(bytes(text))
    with pytest.raises(ValueError, match="tensor 'a' has 12 bytes for shape \\[4\\]"):
        SafetensorsReader(path)


@pytest.mark.parametrize("escape", ["../outside/{}", "{abs}/{}", "sub/../../outside/{}"])
def test_shard_index_pointing_outside_the_folder_is_refused(hub, tmp_path, escape):
    """A shard name with ``..`` or an absolute path is refused in one line, even when the file
    it names exists and holds the right tensors (a loader must not read outside the folder)."""
    hf = hub.make_hf("qwen2", **hub.llama_shape())
    folder, outside = tmp_path / "model", tmp_path / "outside"
    hf.save_pretrained(folder, max_shard_size="40KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    outside.mkdir()
    (folder / first).rename(outside / first)
    moved = escape.format(first, abs=outside).replace(f"{outside}/{first}", str(outside / first))
    index["weight_map"] = {k: (moved if v == first else v) for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not a file inside the model folder") as err:
        load_hf(folder)
    assert "\n" not in str(err.value) and repr(moved) in str(err.value)
