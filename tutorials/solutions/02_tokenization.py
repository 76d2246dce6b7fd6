"""Worked answers for stage 2. Load one into its cell with `%load -s NAME solutions/02_tokenization.py`."""

# %% exercise: get_stats
def get_stats(ids: list[int], counts: dict | None = None) -> dict[tuple[int, int], int]:
    """Count each adjacent pair of ``ids``, adding to ``counts`` when given."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


# %% exercise: merge
def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """A new list with every occurrence of ``pair`` replaced by ``idx``, left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# %% exercise: train
import regex

from buildlm.tokenizer.patterns import GPT2


def train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """Learn ``n_merges`` merges from ``text``; merge k creates id 256 + k."""
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2, text)]

    def order(token: int) -> int:
        return BYTE_ORDER[token] if token < 256 else token

    merges = []
    for k in range(n_merges):
        stats = {}
        for ids in chunks:
            get_stats(ids, stats)
        if not stats:
            break  # every chunk is a single token: nothing left to merge
        pair = min(stats, key=lambda p: (-stats[p], order(p[0]), order(p[1])))
        chunks = [merge(ids, pair, 256 + k) for ids in chunks]
        merges.append(pair)
    return merges


def vocab_from_merges(merges: list[tuple[int, int]]) -> dict[int, bytes]:
    """id -> the bytes it stands for: 256 single bytes, then one token per merge."""
    vocab = {i: bytes([i]) for i in range(256)}
    for k, (left, right) in enumerate(merges):
        vocab[256 + k] = vocab[left] + vocab[right]
    return vocab


# %% exercise: encode



def encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of ``text``: regex chunks, each merged lowest rank first."""
    ids = []
    for chunk in regex.findall(GPT2, text):
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        while len(parts) > 1:
            candidates = [
                (ranks.get(parts[i] + parts[i + 1], float("inf")), i)
                for i in range(len(parts) - 1)
            ]
            rank, i = min(candidates)  # the lowest rank; the leftmost among equals
            if rank == float("inf"):
                break  # no adjacent pair is a token: the chunk is done
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids.extend(ranks[part] for part in parts)
    return ids


# %% exercise: decode
def decode(ids: list[int], vocab: dict[int, bytes]) -> str:
    """The text of ``ids``: the tokens' bytes joined, then decoded as UTF-8."""
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


# %% exercise: encode_documents
def encode_documents(tokenizer, docs: list[str]) -> list[int]:
    """All documents' ids, in order, with <|endoftext|> between consecutive documents."""
    ids = []
    for k, doc in enumerate(docs):
        if k:
            ids.append(tokenizer.eot_token)
        ids.extend(tokenizer.encode_ordinary(doc))
    return ids
