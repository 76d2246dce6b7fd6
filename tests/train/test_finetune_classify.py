"""Classification fine-tuning: padding-aware pooling, what trains, metrics, a run that learns."""

import json

import pytest
import torch

from buildlm.data.classify import ClassifyExample, LabelSet, collate_classify, majority_baseline
from buildlm.eval.classification import classification_report
from buildlm.finetune.classify import (
    ClassifyConfig,
    GPTClassifier,
    classify_texts,
    load_classifier,
    run_classify,
    set_trainable,
)
from buildlm.finetune.run import FinetuneData
from buildlm.model import GPT, ModelConfig
from buildlm.model.lora import LoRAConfig


def tiny_classifier(pooling: str) -> GPTClassifier:
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=97, context_length=32, d_model=32, n_layers=2, n_heads=4)
    return GPTClassifier(GPT(config), n_classes=3, pooling=pooling).eval()


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooling_ignores_padding(pooling):
    model = tiny_classifier(pooling)
    short = ClassifyExample([5, 17, 42, 8], 0)
    long = ClassifyExample(list(range(1, 20)), 1)
    alone = model(torch.tensor([short.ids]))  # (1, 3): no padding at all
    batch = collate_classify([short, long], pad_id=0)
    assert batch.ids.shape == (2, 19) and batch.mask[0].sum() == 4
    padded = model(batch.ids, batch.mask)
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-5)
    # The pads matter if the mask is ignored: the test can fail.
    assert not torch.allclose(model(batch.ids)[0], alone[0], atol=1e-3)


def test_trainable_last_blocks_freezes_the_rest():
    model = tiny_classifier("mean")
    set_trainable(model, ClassifyConfig(trainable="last", last_n_blocks=1), LoRAConfig())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("gpt.blocks.1.", "gpt.norm.", "score.")) for n in trainable)
    assert "score.weight" in trainable and not any(n.startswith("gpt.blocks.0.") for n in trainable)
    lora = LoRAConfig(rank=4)
    set_trainable(model, ClassifyConfig(), lora)  # rank > 0: LoRA adapters + head
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"score.weight", "score.bias"} | {n for n in trainable if "lora_" in n}


def test_classification_report_and_majority_baseline():
    report = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    b = report["per_class"]["b"]
    assert (b["precision"], b["recall"]) == (pytest.approx(2 / 3), 1.0)
    assert b["f1"] == pytest.approx(0.8)
    assert majority_baseline([1, 1, 0, 2], [1, 0, 0, 1, 2]) == (1, pytest.approx(0.4))


def test_unknown_label_names_where_it_came_from():
    labels = LabelSet.from_labels(["b", "a", "b"])
    assert labels.names == ["a", "b"]
    with pytest.raises(ValueError, match=r"val\.csv:3: label 'c' is not in the label set \['a', 'b'\]"):
        labels.index("c", "val.csv:3")


def test_classifier_beats_the_majority_baseline(tiny_base, ft_train, tmp_path):
    out = tmp_path / "clf"
    result = run_classify(
        str(tiny_base),
        FinetuneData(data="shakespeare-plays:julius_caesar,romeo_and_juliet"),
        ft_train(max_steps=200, lr=1e-3, min_lr=1e-4),
        ClassifyConfig(max_length=64),
        LoRAConfig(),
        out=str(out),
        log=lambda m: None,
    )
    m = result.metrics
    assert m["labels"] == ["julius_caesar", "romeo_and_juliet"] and m["n"] == 118
    assert m["majority_baseline"] == pytest.approx(64 / 118)
    assert m["accuracy"] > m["majority_baseline"] + 0.1, m  # 73% to 80% over training seeds 0 to 3
    assert (out / "confusion.png").stat().st_size > 1000
    assert json.loads((out / "eval.json").read_text())["accuracy"] == m["accuracy"]
    # The saved classifier predicts what the trained one did, with the label names.
    clf = load_classifier(out)
    assert clf.labels == ["julius_caesar", "romeo_and_juliet"]
    texts = ["Brutus, Cassius, Caesar and Antony at the Capitol.", "O Romeo, Romeo! wherefore art thou Romeo?"]
    rows = classify_texts(clf, texts)
    assert [r["label"] for r in rows] == ["julius_caesar", "romeo_and_juliet"]
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0) for r in rows)


def test_label_outside_the_label_set_and_empty_data_are_errors(tiny_base, ft_train, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\nTo be or not to be,hamlet\nFriends Romans countrymen,caesar\n")
    val = tmp_path / "val.csv"
    val.write_text("text,label\nOut damned spot,macbeth\n")
    run = dict(train=ft_train(max_steps=1), config=ClassifyConfig(), lora=LoRAConfig(), log=lambda m: None)
    with pytest.raises(ValueError, match=r"val\.csv:2: label 'macbeth' is not in the label set"):
        run_classify(str(tiny_base), FinetuneData(data=str(train), val_data=str(val)), out=str(tmp_path / "a"), **run)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        run_classify(str(tiny_base), FinetuneData(data=str(empty)), out=str(tmp_path / "b"), **run)
