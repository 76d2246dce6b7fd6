"""A model too big to train is refused in one line before anything is allocated."""

import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.train.fits import TRAINING_BYTES_PER_PARAM, check_training_fits, device_memory


def test_a_small_model_fits_and_is_counted_exactly():
    config = ModelConfig.preset("tiny", vocab_size=300, context_length=16, d_model=32, n_layers=1, n_heads=2)
    assert check_training_fits(config, torch.device("cpu")) == GPT(config).num_params()


def test_a_model_bigger_than_the_machine_is_refused_with_its_size():
    # a feed-forward layer of 2**30 units: hundreds of billions of parameters, never allocated
    config = ModelConfig.preset("tiny", vocab_size=300, context_length=16, d_ff=2**30)
    with pytest.raises(ValueError, match=r"parameters: training it needs about .* GiB") as err:
        check_training_fits(config, torch.device("cpu"))
    assert "--model." in str(err.value)
    assert device_memory(torch.device("cpu")) < 2**30 * 300 * TRAINING_BYTES_PER_PARAM


@pytest.mark.parametrize("field", ["d_model", "d_ff", "context_length"])
def test_sizes_past_what_tensors_can_index_are_refused(field):
    with pytest.raises(ValueError, match=f"ModelConfig.{field} must be a positive integer below"):
        ModelConfig.preset("tiny", **{field: 2**64})
