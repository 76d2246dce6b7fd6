"""Counting pre-tokenized chunks: the first pass of BPE training, streamed.

BPE training never looks at the corpus as one long string. It looks at *chunks*, the pieces the
pre-tokenization regex cuts the text into (``"Hello"``, ``" world"``, ``","``), because merges
never cross a chunk boundary. So the first pass reduces any amount of text to one table,
``{chunk: how often it occurs}``. Its size grows with the number of *distinct* chunks (a few tens
of thousands for 5 MB of English), not with the corpus: a 10 GB file needs no more memory than
its vocabulary of words.

**What counts as input.** ``texts`` is one of:

- a ``str``: the text itself (never a file name, however much it looks like one);
- an ``os.PathLike`` such as ``pathlib.Path``: a UTF-8 text file, always;
- an iterable (list, generator, ...) of such items, each a separate document.

So ``train_bpe("data.txt", ...)`` trains on the eight characters ``data.txt``, and
``train_bpe(Path("data.txt"), ...)`` on the file. The rule has no guessing in it.

**Special tokens are not text.** Each occurrence of a special token (``<|endoftext|>``) cuts the
text, and the pieces on either side are pre-tokenized separately, as encoding does: a separator
between documents should not teach the tokenizer merges such as ``"|><|"``. (Hugging Face's
trainer, given such text, does learn them; here they are left out on purpose.)

**Streaming in blocks, without changing a single chunk.** Files are read and decoded 1 MiB at a
time, and long strings are handled in blocks of the same size, so the list of chunks of one block
is all that is ever held. A block may only end where the regex would end a chunk anyway *and*
where it would make the same decision with the text after the cut missing. Two kinds of place
are safe for the built-in patterns (``gpt2``, ``cl100k``, ``o200k``), and the tests check it on
real and random text:

- right *after* a ``"\\n"`` that follows a non-space character and precedes a letter or digit
  (``"end.\\nNext"``): the newline is a chunk of its own or ends a punctuation chunk (cl100k's
  ``".\\n"``), and a letter or digit never joins it (o200k's ``"'\\n/"`` shows why "any
  non-space character" would not do); cutting *before* the newline would split ``".\\n"``;
- right *before* a single space that follows a non-space character and precedes a letter or
  digit (``"word next"``): the space always starts the next chunk (``" next"``); cutting
  *after* it would orphan the space.

Whitespace runs are never cut. In ``"a  \\nB"`` GPT-2's regex yields ``"  "`` and ``"\\n"``
because its ``\\s+(?!\\S)`` sees the ``B``; a block ending after the newline would end in
``"  \\n"``, one chunk. A custom regex must likewise not join text across such a single space
or newline; if it does, pass the text as several strings, each shorter than a block
(``BLOCK_CHARS``), cut where you want.
"""

from __future__ import annotations

import codecs
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from buildlm.tokenizer.patterns import Splitter

BLOCK_CHARS = 1 << 20
"""Characters of text handled at once (and bytes read at once from a file)."""

TextSource = str | os.PathLike
"""One training input: a string of text, or the path of a UTF-8 text file."""

# A safe place to end a block: after "\n" or before " ", in both cases with a non-space
# character before and a letter or digit after (see the module docstring). The cut is at the
# end of the match.
_CUT = re.compile(r"\S\n(?=[^\W_])|\S(?= [^\W_])")


def count_chunks(
    texts: TextSource | Iterable[TextSource],
    splitter: Splitter,
    special_tokens: tuple[str, ...] = (),
    progress: bool = False,
    block_chars: int = BLOCK_CHARS,
) -> Counter[str]:
    """Pre-tokenize every input with ``splitter`` and count the chunks.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is not
    UTF-8 (naming the byte offset) and ``TypeError`` for an input that is neither text nor path.
    """
    sources = _sources(texts)
    counts: Counter[str] = Counter()
    findall = splitter.findall
    split_specials = _special_splitter(special_tokens)
    keep = max(2, max(map(len, special_tokens), default=0))
    bar = tqdm(
        total=_total_size(texts),
        desc="counting chunks",
        unit="char",
        unit_scale=True,
        disable=not progress,
    )
    with bar:
        for source in sources:
            blocks = (
                _file_blocks(source, block_chars)
                if _is_path(source)
                else _str_blocks(source, block_chars)
            )
            for block in _safe_blocks(blocks, special_tokens, keep):
                for piece in split_specials(block):
                    if piece:
                        counts.update(findall(piece))
                bar.update(len(block))
                bar.set_postfix(distinct=len(counts), refresh=False)
    return counts


def _is_path(source: TextSource) -> bool:
    return not isinstance(source, str)


def _sources(texts: TextSource | Iterable[TextSource]) -> Iterator[TextSource]:
    """Check the inputs and yield them one by one (a lone text or path becomes a list of one)."""
    if isinstance(texts, str | os.PathLike):
        items: Iterable[TextSource] = [texts]
    elif isinstance(texts, bytes | bytearray | memoryview):
        raise TypeError(
            "texts is bytes; pass text as str (decode it first) or a file as pathlib.Path"
        )
    else:
        try:
            items = iter(texts)
        except TypeError:
            raise TypeError(
                f"texts must be a str, a pathlib.Path or an iterable of them, "
                f"not {type(texts).__name__}"
            ) from None
        if isinstance(texts, list | tuple):
            items = texts
            for path in filter(_is_path, texts):  # fail before any work, not halfway through
                if isinstance(path, os.PathLike):
                    _check_file(path)
    return _checked(items)


def _checked(items: Iterable[TextSource]) -> Iterator[TextSource]:
    for k, item in enumerate(items):
        if isinstance(item, str):
            yield item
        elif isinstance(item, os.PathLike):
            _check_file(item)
            yield item
        else:
            raise TypeError(
                f"training input #{k} is a {type(item).__name__}; each input must be a str (text) "
                "or a pathlib.Path (a UTF-8 file)"
            )


def _check_file(path: os.PathLike) -> None:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"training file not found: '{p}' (check the path)")
    if p.is_dir():
        raise IsADirectoryError(
            f"training input '{p}' is a directory; pass the files in it, e.g. "
            f"sorted(Path('{p}').glob('*.txt'))"
        )


def _total_size(texts: TextSource | Iterable[TextSource]) -> int | None:
    """Input size for the progress bar: characters of text plus bytes of files, when known."""
    items = [texts] if isinstance(texts, str | os.PathLike) else texts
    if not isinstance(items, list | tuple):
        return None  # a generator: its length is unknown until it is consumed
    total = 0
    for item in items:
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, os.PathLike) and Path(item).is_file():
            total += Path(item).stat().st_size
    return total


def _str_blocks(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def _file_blocks(path: os.PathLike, size: int) -> Iterator[str]:
    """Decode a UTF-8 file ``size`` bytes at a time; a bad byte raises naming its offset.

    A character may straddle two reads, so the undecoded tail of one read (at most 3 bytes)
    is kept for the next.
    """
    offset = 0  # file offset of the first byte in `pending`
    pending = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(size)
            final = not data
            buf = pending + data if pending else data
            try:
                text, used = codecs.utf_8_decode(buf, "strict", final)
            except UnicodeDecodeError as err:
                where = offset + err.start
                raise ValueError(
                    f"training file '{path}' is not valid UTF-8: byte 0x{buf[err.start]:02x} at "
                    f"byte offset {where} ({err.reason}); convert the file to UTF-8 first, e.g. "
                    f"`iconv -f latin1 -t utf-8 in.txt > out.txt`"
                ) from None
            offset += used
            pending = buf[used:]
            if text:
                yield text
            if final:
                return


def _safe_blocks(
    pieces: Iterable[str], special_tokens: tuple[str, ...], keep: int
) -> Iterator[str]:
    """Re-cut a stream of text pieces so that every block ends at a safe place.

    Text after the last safe place of a piece is carried into the next one. The carried text is
    kept as a list of parts and joined once, so a long stretch without a safe place costs linear,
    not quadratic, time. ``keep`` characters of carried text give the search its context (the
    cut pattern looks one character back, and a special token may reach back too).
    """
    # A special token may start before a cut (hence `keep`) or end after it: a cut closer than
    # `reach` to the end of the window cannot be checked yet and waits for the next piece.
    reach = max(map(len, special_tokens), default=1) - 1
    parts: list[str] = []  # carried text with no safe place in it
    tail = ""  # its last `keep` characters
    for piece in pieces:
        window = tail + piece
        cut = _last_cut(window, len(tail), reach, special_tokens)
        if cut < 0:
            parts.append(piece)
            tail = window[-keep:]
            continue
        at = cut - len(tail)  # cut position inside `piece` (cuts are never inside `tail`)
        parts.append(piece[:at])
        block = "".join(parts)
        if block:
            yield block
        rest = piece[at:]
        parts = [rest]
        tail = rest[-keep:]
    block = "".join(parts)
    if block:
        yield block


def _last_cut(window: str, lo: int, reach: int, special_tokens: tuple[str, ...]) -> int:
    """The last safe cut in ``window`` at index ``lo`` or later and ``reach`` before its end, or -1.

    The search starts near the end and widens, so a block costs little beyond its last line.
    """
    size = 4096
    end = len(window)
    while True:
        start = max(lo - 2, end - size, 0)
        for match in reversed(list(_CUT.finditer(window, start))):
            cut = match.end()
            if lo <= cut <= end - reach and not _inside_special(window, cut, special_tokens):
                return cut
        if start <= max(lo - 2, 0):
            return -1
        size *= 16


def _inside_special(text: str, cut: int, special_tokens: tuple[str, ...]) -> bool:
    """True when an occurrence of a special token spans position ``cut``."""
    for token in special_tokens:
        n = len(token)
        start = text.find(token, max(cut - n + 1, 0), cut + n - 1)
        while start >= 0:
            if start < cut < start + n:
                return True
            start = text.find(token, start + 1, cut + n - 1)
    return False


def _special_splitter(special_tokens: tuple[str, ...]):
    """A function that cuts text at every special token, dropping the tokens themselves."""
    if not special_tokens:
        return lambda text: (text,)
    # Longest first, so a special token that contains another one wins.
    alternatives = sorted(special_tokens, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, alternatives)))

    def split(text: str) -> list[str] | tuple[str]:
        if not any(token in text for token in special_tokens):
            return (text,)
        return pattern.split(text)

    return split
