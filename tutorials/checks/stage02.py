"""Checks for stage 2 (tokenization): your BPE against buildlm's ``Tokenizer`` and tiktoken.

Every check calls your function first (an unfinished stub says ``NotImplementedError`` before
anything else), then compares its answer with a reference and, when they differ, shows the
first place where they do, with a hint. Ids in your tokenizer follow buildlm's layout: byte
``b`` is id ``b``, merge ``k`` creates id ``256 + k``.
"""

from __future__ import annotations

from collections import Counter

from buildlm.tokenizer import Tokenizer


def _fail(what: str, expected: object, got: object, hint: str) -> AssertionError:
    return AssertionError(f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


def check_get_stats(get_stats) -> None:
    """``get_stats(ids, counts=None)`` counts adjacent pairs, adding to ``counts`` if given."""
    cases = [[1, 2, 3, 1, 2], [5, 5, 5], [7], [], list(b"the theme then")]
    for ids in cases:
        got = get_stats(list(ids))
        expected = dict(Counter(zip(ids, ids[1:], strict=False)))
        if not isinstance(got, dict) or dict(got) != expected:
            raise _fail(f"get_stats({ids})", expected, got,
                        "count every adjacent pair (ids[i], ids[i + 1]); [5, 5, 5] holds (5, 5) "
                        "twice; fewer than two ids hold no pair")  # fmt: skip
    running = {(1, 2): 10}
    got = get_stats([1, 2, 1, 2], running)
    expected = {(1, 2): 12, (2, 1): 1}
    if got is not running or running != expected:
        raise _fail("get_stats([1, 2, 1, 2], counts={(1, 2): 10}): the dict passed in, updated",
                    expected, running if got is running else got,
                    "add to the dict you are given and return that same dict, so one dict can "
                    "collect the pairs of many chunks")  # fmt: skip
    print("get_stats: correct!")


def check_merge(merge) -> None:
    """``merge(ids, pair, idx)`` replaces each occurrence of ``pair``, left to right."""
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]),
        ([5, 5, 5], (5, 5), 7, [7, 5]),
        ([5, 5, 5, 5], (5, 5), 7, [7, 7]),
        ([1, 2], (2, 1), 9, [1, 2]),
        ([4], (4, 4), 9, [4]),
        ([], (1, 2), 9, []),
    ]
    for ids, pair, idx, expected in cases:
        original = list(ids)
        got = merge(ids, pair, idx)
        if got != expected:
            raise _fail(f"merge({original}, {pair}, {idx})", expected, got,
                        "scan left to right; after merging at i, continue at i + 2, so "
                        "overlapping occurrences ([5, 5, 5]) merge once")  # fmt: skip
        if ids != original:
            raise _fail(f"the list passed to merge({original}, ...) afterwards", original, ids,
                        "build and return a new list; leave the input alone")  # fmt: skip
    print("merge: correct!")


def _as_bytes(merges, vocab) -> list[tuple[bytes, bytes]]:
    return [(vocab[a], vocab[b]) for a, b in merges]


def check_train(train, vocab_from_merges, text: str, n_merges: int = 60) -> None:
    """Your merges on ``text`` must be buildlm's ``Tokenizer.train``'s, in the same order."""
    merges = train(text, n_merges)
    reference = Tokenizer.train(text, vocab_size=256 + n_merges + 1, progress=False)
    vocab = vocab_from_merges(merges)
    if not isinstance(merges, list) or len(merges) != len(reference.merges):
        raise _fail(f"train(text, {n_merges}): a list of {n_merges} (left id, right id) pairs",
                    f"{len(reference.merges)} pairs", f"{type(merges).__name__} of "
                    f"{len(merges) if hasattr(merges, '__len__') else '?'}",
                    "one pair per merge, in the order you chose them")  # fmt: skip
    # The table your merges imply, built here, to check vocab_from_merges on its own.
    implied = {i: bytes([i]) for i in range(256)}
    try:
        for k, (left, right) in enumerate(merges):
            implied[256 + k] = implied[left] + implied[right]
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(f"merge {k}: {merges[k]!r}", "a pair of ids made earlier", repr(err),
                    "merge k may only use bytes (0..255) and ids 256..256+k-1") from None  # fmt: skip
    for i, token in implied.items():
        if vocab.get(i) != token:
            raise _fail(f"vocab_from_merges(your merges)[{i}]", token, vocab.get(i),
                        "ids 0..255 are bytes([i]); id 256 + k is vocab[left] + vocab[right] "
                        "of merge k")  # fmt: skip
    mine = _as_bytes(merges, implied)
    for k, (got, expected) in enumerate(zip(mine, reference.merges, strict=True)):
        if got != expected:
            raise _fail(f"merge {k} (the merges before it agree)", expected, got,
                        "count the pairs of every chunk together (regex.findall(GPT2, text)) "
                        "and take the most frequent; on a tie the smallest "
                        "(order(left), order(right)) wins")  # fmt: skip
    print(f"train: the same {n_merges} merges as buildlm's Tokenizer.train. Correct!")


def _first_difference(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


# Where GPT-2's regex cuts differently from "split at spaces": contractions, letters against
# digits, punctuation runs, runs of spaces and newlines.
TRICKY = "We'll see: hello123 world!!!\n\n    x  =  42;\tdone.  \n"


def check_encode(encode, ranks: dict[bytes, int], reference, text: str) -> None:
    """``encode(text, ranks)`` must give ``reference.encode_ordinary(text)``, also on TRICKY."""
    name = type(reference).__module__.split(".")[0]
    for sample in (text, TRICKY):
        got = encode(sample, ranks)
        expected = reference.encode_ordinary(sample)
        if got != expected:
            i = _first_difference(list(got), expected)
            raise _fail(f"the ids from position {i} on, for {sample[:40]!r}... "
                        f"({len(expected)} tokens, compared with {name})",
                        expected[i : i + 8], list(got)[i : i + 8],
                        "encode each chunk of regex.findall(GPT2, text) on its own; in a chunk, "
                        "repeatedly merge the adjacent pair whose joined bytes have the lowest "
                        "rank")  # fmt: skip
    print(f"encode: the same ids as {name}. Correct!")


def check_decode(decode, vocab: dict[int, bytes], reference, id_lists: list[list[int]]) -> None:
    """``decode(ids, vocab)`` must give ``reference.decode(ids)``, broken UTF-8 included."""
    name = type(reference).__module__.split(".")[0]
    for ids in id_lists:
        got = decode(ids, vocab)
        expected = reference.decode(ids)
        if got != expected:
            raise _fail(f"decode({ids[:8]}{'...' if len(ids) > 8 else ''}) vs {name}",
                        repr(expected[:80]), repr(got[:80]) if isinstance(got, str) else got,
                        "join the tokens' bytes first, then decode once with "
                        "errors='replace' (a token may hold half a character)")  # fmt: skip
    print(f"decode: the same text as {name}. Correct!")


def check_your_tokenizer(train, vocab_from_merges, encode, decode, text: str) -> None:
    """Your pieces together: train on ``text``, encode and decode, equal to buildlm's."""
    merges = train(text, 40)
    vocab = vocab_from_merges(merges)
    ranks = {token: i for i, token in sorted(vocab.items(), reverse=True)}  # lowest id wins
    reference = Tokenizer.train(text, vocab_size=256 + 40 + 1, progress=False)
    sample = text[:400] + " Naïve café, 1908. 🦙"
    check_encode(encode, ranks, reference, sample)
    check_decode(decode, vocab, reference, [reference.encode_ordinary(sample)])
    print("Your tokenizer: trained, encoded and decoded exactly like buildlm's. Correct!")


def check_encode_documents(encode_documents, tokenizer: Tokenizer) -> None:
    """All documents' ids with ``<|endoftext|>`` between consecutive ones."""
    docs = ["First document.", "A second, shorter one.", "Third!"]
    got = encode_documents(tokenizer, docs)
    expected = tokenizer.encode("<|endoftext|>".join(docs), allowed_special="all")
    if got != expected:
        raise _fail(f"encode_documents(tokenizer, {docs})", expected, got,
                    "encode each document with tokenizer.encode, put tokenizer.eot_token "
                    "between two documents, never at the start or the end")  # fmt: skip
    tricky = ["a <|endoftext|> inside", "b"]
    got = encode_documents(tokenizer, tricky)
    expected = [*tokenizer.encode(tricky[0], disallowed_special=()), tokenizer.eot_token,
                *tokenizer.encode(tricky[1])]  # fmt: skip
    if got != expected:
        raise _fail(f"encode_documents(tokenizer, {tricky})", expected, got,
                    "a document that merely contains the text '<|endoftext|>' is ordinary "
                    "text: encode it with disallowed_special=() (or encode_ordinary)")  # fmt: skip
    print("encode_documents: correct!")
