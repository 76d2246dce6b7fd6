"""Fine-tuning datasets made from the bundled Shakespeare, by code, the same on every machine.

No file is downloaded or shipped: each dataset is generated from the bundled corpus
(`buildlm.data.corpora`) and a fixed seed, with fixed train/val/test splits. Pass the name where
a data file is expected (``buildlm finetune classify --data shakespeare-plays``), or write the
splits out as JSONL with ``buildlm finetune data NAME DIR`` to read or edit them.

``shakespeare-plays`` (classification)
    Which of four plays does a speech come from: ``hamlet``, ``julius_caesar``, ``macbeth``,
    ``romeo_and_juliet``? Recipe: split each play into speeches (a paragraph that starts with
    a speaker heading such as ``HAMLET.`` or ``Ham.``), drop stage directions (``[...]``), keep
    the first 3 lines of each speech joined by spaces, keep speeches of 30 to 300 characters.
    The speeches of all four plays are shuffled (seed 0) and split 80/10/10 into
    train/val/test. The classes are unbalanced (Hamlet is the longest play), so the
    *majority-class baseline* (always answering the most frequent training label) is the
    floor a classifier must beat; `buildlm.data.classify.majority_baseline` computes it.
    ``shakespeare-plays:hamlet,julius_caesar`` keeps only those plays (the same examples,
    filtered).

``instruct-tasks`` (instruction tuning)
    Alpaca-style ``{"instruction", "input", "output", "task"}`` examples of seven tasks whose
    answers can be checked exactly:

    - ``add``: "Add the two numbers." ``"23 + 58"`` -> ``"81"`` (operands 0..49);
    - ``parity``: "Is the number even or odd?" ``"37"`` -> ``"odd"`` (0..999);
    - ``reverse``: "Reverse the order of the words." ``"sword night king"`` -> ``"king night sword"``;
    - ``sort``: "Sort the words in alphabetical order." (three words);
    - ``count``: 'How many times does the letter "e" appear in the word?' ``"there"`` -> ``"2"``;
    - ``speaker``: "Who speaks this line?" ``"ROMEO: This day's black fate..."`` -> ``"ROMEO"``;
    - ``last_word``: "What is the last word of the line?" -> the line's last word.

    Words are drawn from the 400 most frequent lower-case words of 3 to 8 letters in the
    corpus, lines and speakers from the plays' speeches. Per task: 300 train, 30 val and 50
    test examples (seed 1), no (instruction, input) pair in two splits. ``instruct-tasks:add,parity``
    selects tasks.

``instruct-prefs`` (preference pairs, DPO)
    The same examples (same splits) as ``{"instruction", "input", "chosen", "rejected",
    "task"}``: ``chosen`` is the correct answer, ``rejected`` a corrupted one (a sum off by 1
    to 9, the other parity, the words in the wrong order, a count off by one, another speaker
    of the same play, another word of the line).

``instruct-tools`` and ``instruct-arith`` (instruction tuning)
    Multi-digit arithmetic (``"4821 * 37"``), answered with a call to the calculator tool and
    its result (``instruct-tools``) or with the bare answer (``instruct-arith``): see
    `buildlm.data.bundled_arith`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import cache, lru_cache
from typing import Any

from buildlm.data.bundled_arith import arith_examples
from buildlm.data.corpora import corpus_documents

PLAYS = ("hamlet", "julius_caesar", "macbeth", "romeo_and_juliet")
INSTRUCT_TASKS = ("add", "parity", "reverse", "sort", "count", "speaker", "last_word")
BUNDLED: dict[str, str] = {
    "shakespeare-plays": "classify",
    "instruct-tasks": "instruct",
    "instruct-prefs": "dpo",
    "instruct-tools": "instruct",
    "instruct-arith": "instruct",
}
SPLITS = ("train", "val", "test")
PER_TASK = {"train": 300, "val": 30, "test": 50}

# A speaker heading: "HAMLET." / "FIRST WITCH." / "Ham." / "Lady Macbeth." / "DEMETRIUS"
_HEADING = re.compile(r"^(?:[A-Z][A-Z' ]+\.?|[A-Z][a-z']+(?: [A-Z][a-z']+){0,2}\.)$")
_WORD = re.compile(r"[a-z]{3,8}")


def list_bundled() -> list[str]:
    return list(BUNDLED)


def parse_name(name: str) -> tuple[str, list[str] | None]:
    """``"instruct-tasks:add,parity"`` -> ``("instruct-tasks", ["add", "parity"])``."""
    base, _, sub = name.partition(":")
    tasks = [t.strip() for t in sub.split(",") if t.strip()] if sub else None
    return base, tasks


def is_bundled(name: str) -> bool:
    return parse_name(name)[0] in BUNDLED


# --- speeches -------------------------------------------------------------------------------


@cache
def speeches(play: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The speeches of a play as (speaker, lines), stage directions removed."""
    text = corpus_documents("shakespeare")[play].replace("\r\n", "\n")
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.strip().split("\n")]
        if len(lines) < 2 or len(lines[0]) > 30 or not _HEADING.match(lines[0]):
            continue
        speaker = lines[0].rstrip(".").strip()
        body = tuple(ln for ln in lines[1:] if ln and not ln.startswith("["))
        if body and not body[0].startswith(("ACT", "SCENE", "Scene")):
            out.append((speaker, body))
    return tuple(out)


def play_examples(plays: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The ``shakespeare-plays`` splits: ``{"train": [{"text", "label"}, ...], ...}``.

    ``plays`` keeps the examples of those plays only (each split filtered).
    """
    unknown = [p for p in plays or [] if p not in PLAYS]
    if unknown or (plays is not None and len(set(plays)) < 2):
        raise ValueError(f"shakespeare-plays: choose two or more of {', '.join(PLAYS)}; got {plays}")
    items = []
    for play in PLAYS:
        for _, lines in speeches(play):
            text = " ".join(lines[:3])
            if 30 <= len(text) <= 300:
                items.append({"text": text, "label": play})
    random.Random(0).shuffle(items)
    n_val = n_test = len(items) // 10
    n_train = len(items) - n_val - n_test
    splits = {
        "train": items[:n_train],
        "val": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }
    if plays is not None:
        splits = {k: [x for x in v if x["label"] in plays] for k, v in splits.items()}
    return splits


# --- instruction tasks ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    counts: Counter[str] = Counter()
    for play in PLAYS:
        for _, lines in speeches(play):
            for line in lines:
                counts.update(w for w in re.findall(r"[A-Za-z]+", line) if _WORD.fullmatch(w))
    return tuple(w for w, _ in counts.most_common(400))


@lru_cache(maxsize=1)
def _lines() -> tuple[tuple[str, str, str], ...]:
    """(play, speaker, line) for lines of 4 to 10 words ending in a word."""
    out = []
    for play in PLAYS:
        for speaker, lines in speeches(play):
            for line in lines:
                words = line.split()
                if 4 <= len(words) <= 10 and re.search(r"[A-Za-z]+", words[-1]):
                    out.append((play, speaker, line))
    return tuple(out)


def _last_word(line: str) -> str:
    return re.findall(r"[A-Za-z']+", line)[-1].strip("'")


def _make(task: str, rng: random.Random) -> tuple[dict[str, str], str]:
    """One example of ``task`` (instruction, input, output) and a corrupted answer."""
    vocab = _vocabulary()
    if task == "add":
        a, b = rng.randrange(50), rng.randrange(50)
        wrong = a + b + rng.choice([-1, 1]) * rng.randint(1, 9)
        return {"instruction": "Add the two numbers.", "input": f"{a} + {b}", "output": str(a + b)}, str(abs(wrong))
    if task == "parity":
        n = rng.randrange(1000)
        right, wrong = ("even", "odd") if n % 2 == 0 else ("odd", "even")
        return {"instruction": "Is the number even or odd?", "input": str(n), "output": right}, wrong
    if task in ("reverse", "sort"):
        words = rng.sample(vocab, 3)
        if task == "reverse":
            right = words[::-1]
            instruction = "Reverse the order of the words."
        else:
            right = sorted(words)
            instruction = "Sort the words in alphabetical order."
        wrong = list(right)
        while wrong == right:
            rng.shuffle(wrong)
        return {"instruction": instruction, "input": " ".join(words), "output": " ".join(right)}, " ".join(wrong)
    if task == "count":
        word = rng.choice(vocab)
        letter = rng.choice(word) if rng.random() < 0.75 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        n = word.count(letter)
        wrong = n + 1 if n == 0 or rng.random() < 0.5 else n - 1
        instruction = f'How many times does the letter "{letter}" appear in the word?'
        return {"instruction": instruction, "input": word, "output": str(n)}, str(wrong)
    lines = _lines()
    play, speaker, line = rng.choice(lines)
    if task == "speaker":
        others = sorted({s for _, s, _ in (x for x in lines if x[0] == play)} - {speaker})
        return {"instruction": "Who speaks this line?", "input": f"{speaker}: {line}", "output": speaker}, rng.choice(others)
    if task == "last_word":
        last = _last_word(line)
        others = [w.strip("'") for w in re.findall(r"[A-Za-z']+", line) if w.strip("'") != last]
        return {"instruction": "What is the last word of the line?", "input": line, "output": last}, rng.choice(others)
    raise ValueError(f"unknown instruction task {task!r}; choose from {', '.join(INSTRUCT_TASKS)}")


@cache
def _task_splits(task: str) -> dict[str, tuple[tuple[dict[str, str], str], ...]]:
    """Distinct (example, wrong answer) pairs of one task, split train/val/test."""
    rng = random.Random(f"instruct-tasks/{task}/1")
    need = sum(PER_TASK.values())
    seen: set[tuple[str, str]] = set()
    items: list[tuple[dict[str, str], str]] = []
    tries = 0
    while len(items) < need:
        tries += 1
        if tries > 50 * need:
            raise RuntimeError(f"task {task!r} cannot produce {need} distinct examples")
        example, wrong = _make(task, rng)
        key = (example["instruction"], example["input"])
        if key in seen or wrong == example["output"]:
            continue
        seen.add(key)
        items.append((example, wrong))
    out, start = {}, 0
    for split in SPLITS:
        out[split] = tuple(items[start : start + PER_TASK[split]])
        start += PER_TASK[split]
    return out


def _check_tasks(tasks: list[str] | None) -> list[str]:
    if tasks is None:
        return list(INSTRUCT_TASKS)
    unknown = [t for t in tasks if t not in INSTRUCT_TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown instruction task(s) {unknown}; choose from {', '.join(INSTRUCT_TASKS)}")
    return tasks


def instruct_examples(tasks: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The ``instruct-tasks`` splits (examples of the chosen tasks, interleaved by a seeded shuffle)."""
    out = {}
    for split in SPLITS:
        items = [{**ex, "task": t} for t in _check_tasks(tasks) for ex, _ in _task_splits(t)[split]]
        random.Random(f"instruct-tasks/{split}").shuffle(items)
        out[split] = items
    return out


def preference_examples(tasks: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The ``instruct-prefs`` splits: the same examples with ``chosen`` and ``rejected`` answers."""
    out = {}
    for split in SPLITS:
        items = [
            {"instruction": ex["instruction"], "input": ex["input"], "chosen": ex["output"], "rejected": wrong, "task": t}
            for t in _check_tasks(tasks)
            for ex, wrong in _task_splits(t)[split]
        ]
        random.Random(f"instruct-tasks/{split}").shuffle(items)
        out[split] = items
    return out


def load_bundled(name: str) -> dict[str, list[dict[str, Any]]]:
    """The train/val/test splits of a bundled dataset, as lists of dicts."""
    base, tasks = parse_name(name)
    if base not in BUNDLED:
        raise ValueError(f"unknown bundled dataset {name!r}; bundled datasets are {list_bundled()}")
    if base == "shakespeare-plays":
        return play_examples(tasks)
    if base == "instruct-tasks":
        return instruct_examples(tasks)
    if base in ("instruct-tools", "instruct-arith"):
        return arith_examples(with_tool=base == "instruct-tools", tasks=tasks)
    return preference_examples(tasks)
