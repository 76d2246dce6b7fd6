"""Multiple-choice scoring against transformers, a planted model, the bundled set, bad files."""

from __future__ import annotations

import json

import pytest
import torch

from buildlm.eval.bundled import _all_items, bundled_choice_items
from buildlm.eval.choice import load_choice_items, score_choices
from buildlm.eval.choice_items import ChoiceItem, load_choice_file
from buildlm.eval.scoring import encode_pair
from buildlm.infer.load import load_model

ITEMS = [
    ChoiceItem("I had always thought Jack Gisburn", ["rather a cheap genius", "a fool"], 0),
    ChoiceItem("The sketch of the donkey", ["was there.", "hung", "!", "made him laugh."], 2),
    ChoiceItem("She said\n", ["nothing at all", "\u00e9t\u00e9 d\u00e9j\u00e0 vu"], 1),
    ChoiceItem("", ["Hello there", "It was"], 1),
]


def hf_logprob(hf_model, ctx: list[int], cont: list[int]) -> float:
    """sum log p(cont | ctx) computed directly with transformers."""
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = hf_model(ids).logits[0].float()  # (T, V)
    logprobs = torch.log_softmax(logits, -1)
    return sum(float(logprobs[len(ctx) - 1 + i, tok]) for i, tok in enumerate(cont))


def test_scores_equal_transformers(hf_text_model):
    model, tokenizer = load_model(hf_text_model.path, dtype=torch.float32)
    result = score_choices(model, tokenizer, ITEMS, batch_size=3)
    for item, lls in zip(ITEMS, result.logprobs, strict=True):
        for ending, ll in zip(item.endings, lls, strict=True):
            ctx, cont = encode_pair(tokenizer, item.context, item.continuation(ending))
            assert ll == pytest.approx(hf_logprob(hf_text_model.hf, ctx, cont), rel=1e-5, abs=1e-4)
    # the accuracies follow from those scores (acc_norm: per character of the ending)
    expected = [max(range(len(lls)), key=lls.__getitem__) for lls in result.logprobs]
    normed = [
        [ll / len(e) for ll, e in zip(lls, item.endings, strict=True)]
        for lls, item in zip(result.logprobs, ITEMS, strict=True)
    ]
    expected_norm = [max(range(len(n)), key=n.__getitem__) for n in normed]
    assert result.predictions == expected and result.predictions_norm == expected_norm
    labels = [i.label for i in ITEMS]
    assert result.acc == sum(map(int.__eq__, expected, labels)) / len(ITEMS)
    assert result.acc_norm == sum(map(int.__eq__, expected_norm, labels)) / len(ITEMS)


def test_encode_pair_moves_trailing_space_and_starts_empty_context_at_eot(tokenizer):
    ctx, cont = encode_pair(tokenizer, "I had always ", "thought")
    assert ctx == tokenizer.encode("I had always")
    assert ctx + cont == tokenizer.encode("I had always thought")
    assert encode_pair(tokenizer, "", "Hi")[0] == [tokenizer.eot_token]


def test_planted_answers_score_100_percent(planted):
    model, tokenizer = load_model(planted.path)
    assert planted.final_loss < 0.5, "the planted model did not learn its texts"
    result = score_choices(model, tokenizer, planted.items, batch_size=5)
    assert result.acc == 1.0 and result.acc_norm == 1.0 and result.n == len(planted.items)


def test_bundled_shakespeare_set_is_fixed():
    items = bundled_choice_items("shakespeare-next-line")
    _all_items.cache_clear()
    again = bundled_choice_items("shakespeare-next-line", limit=50)
    assert again == items[:50]
    assert len(items) == 400 and all(len(i.endings) == 4 for i in items)
    assert all(len(set(i.endings)) == 4 and i.context.endswith("\n") for i in items)
    counts = [sum(i.label == k for i in items) for k in range(4)]
    assert min(counts) > 60  # the right answer is not always in one place
    first = items[0]
    assert first.endings[first.label] == "They would not take her life. Is not this true?"
    assert load_choice_items("shakespeare-next-line", limit=3) == items[:3]


def write(tmp_path, lines: list[str]):
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"context": "a", "endings": ["b", "c"], "label": 1})


@pytest.mark.parametrize(
    "bad,message",
    [
        (json.dumps({"context": "a", "label": 0}), r"items\.jsonl:2: has no 'endings'"),
        (json.dumps({"context": "a", "endings": ["b", "c"], "label": 2}),
         r"items\.jsonl:2: label 2 is out of range for 2 endings"),
        (json.dumps({"context": "a", "endings": ["b", "c"], "label": -1}), r":2: label -1 is out"),
        ('{"context": "a", "endings": ["b"', r"items\.jsonl:2: malformed JSON"),
        (json.dumps({"context": "a", "endings": ["b"], "label": 0}), r":2: 'endings' must be"),
        (json.dumps({"endings": ["b", "c"], "label": 0}), r":2: needs a string 'context'"),
        (json.dumps({"context": "a", "endings": ["b", "c"], "label": "x"}), r":2: needs an integer"),
        ("[1, 2]", r":2: expected a JSON object"),
    ],
)  # fmt: skip
def test_bad_lines_name_file_and_line(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        load_choice_file(write(tmp_path, [GOOD, bad, GOOD]))


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="holds no items"):
        load_choice_file(write(tmp_path, ["", "  "]))
    with pytest.raises(FileNotFoundError, match="no multiple-choice file"):
        load_choice_items(tmp_path / "absent.jsonl")
    items = load_choice_file(
        write(tmp_path, [GOOD, "", json.dumps({"ctx": "x", "endings": ["y", "z"], "label": "0"})])
    )
    assert items == [ChoiceItem("a", ["b", "c"], 1), ChoiceItem("x", ["y", "z"], 0)]
