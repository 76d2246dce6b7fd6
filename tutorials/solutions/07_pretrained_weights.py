"""Worked answers for tutorials/07_pretrained_weights.ipynb, one section per exercise.

Load one into its cell with ``%load -s NAME solutions/07_pretrained_weights.py``.
"""

# %% exercise: split_qkv
def split_qkv(weight, bias):
    """Split GPT-2's fused ``c_attn`` into three ``nn.Linear``-shaped (weight, bias) pairs."""
    d = weight.shape[0]
    weights = weight.split(d, dim=1)  # three (d, d) column blocks, Conv1D layout (in, out)
    biases = bias.split(d)
    return tuple((w.t().contiguous(), b.clone()) for w, b in zip(weights, biases, strict=True))


# %% exercise: convert_gpt2
def convert_gpt2(hf_state, n_layers):
    """A state dict for ``GPTModel`` from a Hugging Face GPT-2 state dict (name -> tensor)."""
    out = {
        "tok_emb.weight": hf_state["transformer.wte.weight"],
        "pos_emb.weight": hf_state["transformer.wpe.weight"],
        "final_norm.scale": hf_state["transformer.ln_f.weight"],
        "final_norm.shift": hf_state["transformer.ln_f.bias"],
        "out_head.weight": hf_state["transformer.wte.weight"],  # tied: the same matrix
    }
    for i in range(n_layers):
        hf, me = f"transformer.h.{i}.", f"trf_blocks.{i}."
        for norm_hf, norm_me in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[me + norm_me + ".scale"] = hf_state[hf + norm_hf + ".weight"]
            out[me + norm_me + ".shift"] = hf_state[hf + norm_hf + ".bias"]
        parts = split_qkv(hf_state[hf + "attn.c_attn.weight"], hf_state[hf + "attn.c_attn.bias"])
        for layer, (w, b) in zip(("W_query", "W_key", "W_value"), parts, strict=True):
            out[me + f"att.{layer}.weight"], out[me + f"att.{layer}.bias"] = w, b
        for hf_name, me_name in (("attn.c_proj", "att.out_proj"), ("mlp.c_fc", "ff.layers.0"),
                                 ("mlp.c_proj", "ff.layers.2")):  # fmt: skip
            out[me + me_name + ".weight"] = hf_state[hf + hf_name + ".weight"].t()  # Conv1D -> Linear
            out[me + me_name + ".bias"] = hf_state[hf + hf_name + ".bias"]
    return out


# %% exercise: load_gpt2_folder
import json
from pathlib import Path

from safetensors.torch import load_file


def load_gpt2_folder(folder):
    """Your ``GPTModel`` with the weights of the Hugging Face GPT-2 folder ``folder``, in eval mode."""
    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text())
    cfg = dict(vocab_size=hf["vocab_size"], context_length=hf["n_positions"], d_model=hf["n_embd"],
               n_heads=hf["n_head"], n_layers=hf["n_layer"], eps=hf.get("layer_norm_epsilon", 1e-5))  # fmt: skip
    model = GPTModel(cfg)
    model.load_state_dict(convert_gpt2(load_file(folder / "model.safetensors"), cfg["n_layers"]), strict=True)
    return model.eval()
