"""Text classification data: (text, label) examples, a label set, padded batches.

A classification dataset is a table with a ``text`` and a ``label`` column (CSV, TSV, JSONL or
JSON). Labels are names (``"hamlet"``, ``"positive"``); the model predicts an index, so a
:class:`LabelSet` maps names to indices and back. It is saved with the checkpoint: a classifier
without its label names cannot say what it predicts.

Batches are **right-padded**: ids (B, T) and a mask (B, T), True for real tokens. With causal
attention, a real token never attends to the pads that follow it, so its hidden state is the
same as without padding; the classifier then pools only the real positions (the last real token,
or the mean over real tokens), which makes its output independent of the padding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from buildlm.data.records import Record


@dataclass
class ClassifyExample:
    """One tokenized example: its ids, its label index and where it came from."""

    ids: list[int]
    label: int
    where: str = ""


@dataclass
class ClassifyBatch:
    """Right-padded ids (B, T), mask (B, T) True at real tokens, labels (B,)."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> ClassifyBatch:
        return ClassifyBatch(self.ids.to(device), self.mask.to(device), self.labels.to(device))


class LabelSet:
    """Label names <-> indices 0 .. n-1."""

    def __init__(self, names: Sequence[str]) -> None:
        names = [str(n) for n in names]
        if len(names) < 2:
            raise ValueError(f"a classifier needs at least two labels, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"the label set repeats a label: {names}")
        self.names = names
        self._index = {n: i for i, n in enumerate(names)}

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> LabelSet:
        """The sorted distinct labels (sorted, so the mapping does not depend on file order)."""
        return cls(sorted(set(labels)))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str, where: str = "") -> int:
        """The index of a label name; an unknown label is an error naming where it came from."""
        if name not in self._index:
            at = f"{where}: " if where else ""
            raise ValueError(
                f"{at}label {name!r} is not in the label set {self.names}; fix the label, or "
                "give every label in the training data (or in --classify.labels)"
            )
        return self._index[name]

    def name(self, index: int) -> str:
        return self.names[index]


def labelled_texts(
    records: Sequence[Record], text_field: str = "text", label_field: str = "label"
) -> list[tuple[str, str, str]]:
    """(text, label name, where) of each record; empty texts are errors."""
    out = []
    for r in records:
        text = r.get_str(text_field)
        if not text.strip():
            raise ValueError(f"{r.where}: the {text_field!r} field is empty")
        out.append((text, r.get_str(label_field).strip(), r.where))
    return out


def encode_examples(
    items: Sequence[tuple[str, str, str]], tokenizer: Any, labels: LabelSet, max_length: int
) -> list[ClassifyExample]:
    """Tokenize texts (the first ``max_length`` tokens are kept) and map labels to indices."""
    out = []
    for text, label, where in items:
        ids = tokenizer.encode(text, disallowed_special=())[:max_length]
        if not ids:
            raise ValueError(f"{where}: the text encodes to no tokens")
        out.append(ClassifyExample(ids, labels.index(label, where), where))
    return out


def collate_classify(examples: list[ClassifyExample], pad_id: int = 0) -> ClassifyBatch:
    """Right-pad a list of examples into one batch."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = True
    labels = torch.tensor([e.label for e in examples], dtype=torch.long)
    return ClassifyBatch(ids, mask, labels)


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> tuple[int, float]:
    """(label, accuracy): always predicting the most frequent training label, scored on eval."""
    counts = Counter(train_labels)
    top = min(counts, key=lambda k: (-counts[k], k))  # most frequent; ties: lowest index
    acc = sum(1 for y in eval_labels if y == top) / max(1, len(eval_labels))
    return top, acc
