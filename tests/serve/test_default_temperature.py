"""One default temperature for people (CLI, chat page, trainer's samples), OpenAI's for the API.

The chat page is static HTML, so its slider's starting value is a literal; this test keeps it
equal to `buildlm.infer.sampling.DEFAULT_TEMPERATURE`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import buildlm.serve
from buildlm.infer.cli_args import add_sampling_args
from buildlm.infer.sampling import DEFAULT_TEMPERATURE
from buildlm.serve.limits import ServeLimits
from buildlm.serve.prompts import sampling_params_from_request
from buildlm.serve.schemas import CompletionRequest
from buildlm.train.config import TrainConfig

PAGE = Path(buildlm.serve.__file__).parent / "static" / "index.html"


def test_the_chat_page_starts_at_the_default_temperature():
    html = PAGE.read_text(encoding="utf-8")
    slider = re.search(r'<input id="temperature"[^>]*\bvalue="([0-9.]+)"', html)
    shown = re.search(r'<output id="temperature-value">([0-9.]+)</output>', html)
    assert slider and shown, "the page's temperature slider or its label is gone"
    assert float(slider[1]) == float(shown[1]) == DEFAULT_TEMPERATURE


def test_the_cli_and_the_trainer_sample_at_the_default_temperature():
    parser = argparse.ArgumentParser()
    add_sampling_args(parser)
    assert parser.parse_args([]).temperature == DEFAULT_TEMPERATURE
    assert TrainConfig().sample_temperature == DEFAULT_TEMPERATURE


def test_the_http_api_keeps_openais_default_temperature():
    request = CompletionRequest(model="m", prompt="hi")
    (params,) = sampling_params_from_request(request, ServeLimits(), stop=[], stop_token_ids=None)
    assert params.temperature == 1.0 != DEFAULT_TEMPERATURE
    schema = CompletionRequest.model_json_schema()["properties"]["temperature"]
    assert "1.0, as OpenAI" in schema["description"]
