"""GPT-2's byte-level BPE tokenizer, written out in plain Python.

How byte-level BPE works
------------------------
A neural net needs a fixed vocabulary of integer ids. Characters are too many (Unicode has ~150k) and
words are unbounded, so GPT-2 works on *bytes*: any text, in any script, is a sequence of UTF-8 bytes,
and each of the 256 byte values is a token. Frequent byte strings get tokens of their own too:
b" the", b"ing", b"hello". The vocabulary file lists 50,256 byte strings, each with a *rank*; the rank
is both the token id and the merge priority (lower rank = learnt earlier = more frequent).

Encoding one piece of text:

1. Pre-tokenize: a regular expression cuts the text into pieces (words with their leading space, runs of
   digits, runs of punctuation, runs of whitespace, English contractions such as "'s"). Merges never
   cross a piece boundary, so " dog" and "dog." do not share a token with what comes before them.
2. Start from the piece's bytes, one part per byte:  b" dog" -> [b" ", b"d", b"o", b"g"].
3. Merge greedily: among all pairs of neighbouring parts whose concatenation is in the vocabulary,
   join the pair with the lowest rank (the leftmost one on a tie). Repeat until no pair is in the
   vocabulary. For b" dog" the candidate pairs are b" d" (rank 288), b"do" (4598) and b"og" (519):
       [b" ", b"d", b"o", b"g"]  ->  [b" d", b"o", b"g"]       b" d" has the lowest rank
                                 ->  [b" do", b"g"]            b" do" (466) beats b"og" (519)
                                 ->  [b" dog"]                 b" dog" (3290)
4. The ids are the ranks of the final parts:  [3290].

Decoding is the easy direction: look up each id's bytes, join them, decode UTF-8. Because step 2 starts
from bytes, every string can be encoded and decoded back exactly - there is no "unknown" token.

Matching tiktoken
-----------------
`GPT2Tokenizer.encode` gives the same ids as tiktoken's `gpt2` encoding. Caveats:

* The GPT-2 regex uses \\p{L} (letters) and \\p{N} (numbers), which Python's `re` does not have. We build
  those classes from `unicodedata` (categories L* and N*) at import. Python 3.11's `unicodedata` is
  Unicode 14.0; tiktoken's Rust regex engine may use a newer Unicode version, so text containing code
  points that were *unassigned* in the Unicode version of your Python can be cut differently.
  Every code point assigned in Unicode 14 is checked against tiktoken in tests/test_bpe.py.
* \\s is Unicode's White_Space property (what Rust's regex means by \\s). That is *not* Python's \\s:
  Python also counts the separators U+001C..U+001F as whitespace.
* `<|endoftext|>` in the text is encoded as ordinary text (seven tokens) unless you pass
  `allowed_special={"<|endoftext|>"}` or `"all"`. (tiktoken raises an error instead by default; ours
  matches tiktoken's `disallowed_special=()`.)
* A str with lone surrogates (which UTF-8 cannot represent) is cleaned up the way tiktoken does it:
  surrogate pairs are joined, lone surrogates become U+FFFD. For every other str, decode(encode(s)) == s.
"""

from __future__ import annotations

import base64
import functools
import heapq
import json
import re
import unicodedata
from pathlib import Path

import numpy as np

EOT = "<|endoftext|>"
DATA_DIR = Path(__file__).parent / "data"
BUNDLED_RANKS = DATA_DIR / "gpt2.tiktoken"

# The GPT-2 pre-tokenizer, as published (\p{L} = letters, \p{N} = numbers, \s = Unicode White_Space).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Unicode's White_Space property (= \s in Rust's regex crate). Stable since Unicode 6.3.
WHITE_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

_MAX_CACHE = 100_000  # pre-token cache entries; cleared when full so memory stays bounded


# ---------------------------------------------------------------------------------------------------
# Pre-tokenizer: the GPT-2 regex translated to Python's `re`
# ---------------------------------------------------------------------------------------------------

def _ranges(categories: str, major: str) -> str:
    """Character-class body: the code points whose category letter in `categories` is `major`, as ranges."""
    runs = [(m.start(), m.end() - 1) for m in re.finditer(f"{major}+", categories)]
    return "".join(f"\\u{lo:04x}" if lo == hi else f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in runs)


def _compile_pretokenizer() -> re.Pattern:
    # First letter of the general category of each code point up to U+FFFF: "L" letter, "N" number, ...
    categories = "".join(map(unicodedata.category, map(chr, range(0x10000))))[::2]
    L, N, S = _ranges(categories, "L"), _ranges(categories, "N"), WHITE_SPACE
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d"
        rf"| ?[{L}]+"              # ' ?\p{L}+'  an optional space, then letters
        rf"| ?[{N}]+"              # ' ?\p{N}+'  an optional space, then digits/numerals
        rf"| ?[^{S}{L}{N}]+"       # ' ?[^\s\p{L}\p{N}]+'  an optional space, then punctuation/symbols
        rf"|[{S}]+(?![^{S}])"      # '\s+(?!\S)'  a whitespace run, except the space before a word
        rf"|[{S}]+"                # '\s+'
    )


# Compiled once at import (~0.05 s). Its classes only list code points up to U+FFFF: Python's `re` keeps
# those as a fast bitmap, but would test code points above U+FFFF range by range (4x slower on all text).
_PRETOKENIZER = _compile_pretokenizer()
_ABOVE_BMP = re.compile("[\U00010000-\U0010ffff]")


@functools.lru_cache(maxsize=4096)
def _stand_in(ch: str) -> str:
    """A BMP character that the GPT-2 regex treats exactly like `ch` (a code point above U+FFFF).

    Above U+FFFF there is no whitespace, so `ch` is a letter, a number or "other". The stand-ins are
    none of the characters the regex names literally (' s t re ve m ll d and space), so only the class counts.
    """
    major = unicodedata.category(ch)[0]
    return "a" if major == "L" else "0" if major == "N" else "!"


def pretokenize(text: str) -> list[str]:
    """Cut text into the pieces GPT-2's regex finds: "Hello, world" -> ["Hello", ",", " world"]."""
    if not _ABOVE_BMP.search(text):
        return _PRETOKENIZER.findall(text)
    # Run the regex on a copy where each character above U+FFFF is replaced by a same-class stand-in
    # (same length, same matches), then cut the original text at the same places.
    stand_ins = _ABOVE_BMP.sub(lambda m: _stand_in(m.group()), text)
    return [text[m.start():m.end()] for m in _PRETOKENIZER.finditer(stand_ins)]


def safe_cut(text: str) -> int:
    """A place to cut `text` in two without changing its pieces (0 if there is none).

    Returns the last i such that pretokenize(text) == pretokenize(text[:i]) + pretokenize(text[i:]),
    among the places just before a newline (else a space) that follows a non-whitespace character.
    Why that is safe: the regex only looks ahead, never behind, so the pieces of text[i:] do not depend
    on what comes before; and no piece can run across i, because the only pieces that hold whitespace
    either start with it (" dog") or are all whitespace, and text[i - 1] is not whitespace.
    (str.isspace() is true for every Unicode White_Space character, and for a few more, so testing
    it only makes the rule stricter.) Encoding a large text chunk by chunk, cut here, gives the same
    ids as encoding it whole; `tinygpt prepare` relies on that to encode chunks in parallel.
    """
    for sep in ("\n", " "):
        i = len(text)
        while (i := text.rfind(sep, 1, i)) > 0:
            if not text[i - 1].isspace():
                return i
    return 0


# ---------------------------------------------------------------------------------------------------
# GPT-2's byte <-> unicode alphabet (used only by the Hugging Face vocab.json / merges.txt files)
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def byte_to_unicode() -> dict[int, str]:
    """The printable stand-in character for each byte, as used in GPT-2's vocab.json and merges.txt.

    Those files are text, so bytes that would be invisible or ambiguous in text (controls, space,
    0x7F-0xA0, soft hyphen 0xAD) are shifted to U+0100 onwards in byte order; e.g. space -> "Ġ" (U+0120).
    Every other byte stands for itself (its Latin-1 character).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = [b for b in range(256) if b not in table]
    for k, b in enumerate(shifted):
        table[b] = chr(256 + k)
    return table


def _token_to_text(token: bytes) -> str:
    alphabet = byte_to_unicode()
    return "".join(alphabet[b] for b in token)


# ---------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------

class GPT2Tokenizer:
    """GPT-2's byte-level BPE: `encode(str) -> list[int]`, `decode(list[int]) -> str`.

    `ranks` maps each token's bytes to its rank = id (0 .. n-1, where n = 50,256 for GPT-2); the special
    token `<|endoftext|>` gets id n. Build it with `from_tiktoken()` (bundled GPT-2 vocabulary) or
    `from_files(vocab.json, merges.txt)` (Hugging Face format).
    """

    def __init__(self, ranks: dict[bytes, int], *, bundled: bool = False, source: str = "<ranks>"):
        _check_ranks(ranks, source)
        self._ranks = ranks
        self._bundled = bundled
        self.eot_token = len(ranks)                        # 50256 for GPT-2
        self.vocab_size = len(ranks) + 1                   # 50257 for GPT-2
        self._id_to_bytes = [b""] * self.vocab_size        # id -> token bytes, for decode
        for token, rank in ranks.items():
            self._id_to_bytes[rank] = token
        self._id_to_bytes[self.eot_token] = EOT.encode()
        self._cache: dict[str, tuple[int, ...]] = {}       # pre-token -> ids (words repeat a lot)

    # ----- loading and saving ------------------------------------------------------------------------

    @classmethod
    def from_tiktoken(cls, path: str | Path | None = None) -> GPT2Tokenizer:
        """Load a tiktoken ranks file: one `base64(token bytes) rank` per line. Default: bundled GPT-2."""
        file = Path(path) if path is not None else BUNDLED_RANKS
        lines = _read_text(file, "tiktoken ranks file (lines of `base64(token) rank`)").splitlines()
        ranks = {}
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                if len(fields) != 2:
                    raise ValueError(f"expected 2 fields, found {len(fields)}")
                token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            except ValueError as e:  # binascii.Error is a ValueError
                raise ValueError(f"{file}, line {n}: {line[:60]!r} is not `base64(token bytes) rank` ({e})") from None
            if token in ranks:
                raise ValueError(f"{file}, line {n}: token {token!r} appears twice (ranks {ranks[token]} and {rank})")
            ranks[token] = rank
        return cls(ranks, bundled=path is None, source=str(file))

    @classmethod
    def from_files(cls, vocab_json: str | Path, merges_txt: str | Path) -> GPT2Tokenizer:
        """Load Hugging Face's GPT-2 `vocab.json` (token text -> id) and `merges.txt` (merge pairs).

        Token text is in GPT-2's byte-to-unicode alphabet (see `byte_to_unicode`). As in GPT-2, the ids
        must also be the merge priorities: each multi-byte token is made by one line of merges.txt, and
        the lines, in file order, make tokens with increasing ids. merges.txt is checked against that;
        encoding then only needs the ids (see the module docstring).
        """
        vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
        ranks = _ranks_from_vocab_json(vocab_json)
        _check_merges_txt(merges_txt, ranks)
        return cls(ranks, source=str(vocab_json))

    def save_hf(self, directory: str | Path) -> tuple[Path, Path]:
        """Write `vocab.json` and `merges.txt` in Hugging Face's GPT-2 format; returns their paths.

        `transformers.GPT2TokenizerFast.from_pretrained(directory)` loads them (transformers 5 ignores the
        `vocab_file=`/`merges_file=` constructor arguments outside from_pretrained). merges.txt needs the
        pair (left, right) that BPE joins to make each token; we recover it by running BPE on the token's
        own bytes using only tokens ranked below it, which stops at exactly two parts.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = {_token_to_text(self._id_to_bytes[i]): i for i in range(self.eot_token)}
        vocab[EOT] = self.eot_token
        merges = ["#version: 0.2"]
        for rank in range(self.eot_token):
            token = self._id_to_bytes[rank]
            if len(token) < 2:
                continue
            parts = self._merge(token, below_rank=rank)
            if len(parts) != 2:
                raise ValueError(f"token {rank} ({token!r}) cannot be built by merging two lower-ranked "
                                 f"tokens (BPE stops at {parts!r}); these ranks are not a BPE vocabulary")
            merges.append(f"{_token_to_text(parts[0])} {_token_to_text(parts[1])}")
        vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
        vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_path.write_text("\n".join(merges) + "\n", encoding="utf-8")
        return vocab_path, merges_path

    def to_dict(self) -> dict:
        """JSON description for a checkpoint's config: {"type": "gpt2"} = the bundled GPT-2 vocabulary."""
        if not self._bundled and self._ranks != GPT2Tokenizer.from_tiktoken()._ranks:
            raise ValueError("this tokenizer's vocabulary differs from the bundled GPT-2 one, so "
                             '{"type": "gpt2"} would not describe it; save it with save_hf(directory) instead')
        return {"type": "gpt2"}

    # ----- encoding -----------------------------------------------------------------------------------

    def encode(self, text: str, allowed_special: str | set | frozenset = frozenset()) -> list[int]:
        """Text -> token ids, identical to tiktoken's gpt2 `encode(text, disallowed_special=())`.

        allowed_special: "all" or a set containing "<|endoftext|>" turns that literal string into the
        single id 50256. By default it is encoded as ordinary text (tiktoken would raise instead).
        """
        if not isinstance(text, str):
            raise TypeError(f"GPT2Tokenizer.encode expects a str, got {type(text).__name__}")
        if allowed_special == "all":
            allowed_special = {EOT}
        elif isinstance(allowed_special, str) or not set(allowed_special) <= {EOT}:
            raise ValueError(f"allowed_special must be 'all' or a set of special tokens from {{{EOT!r}}}, "
                             f"got {allowed_special!r}")
        try:
            return self._encode(text, EOT in allowed_special)
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8 encoded. Like tiktoken: join pairs, replace the rest by U+FFFD.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode(text, EOT in allowed_special)

    def encode_array(self, text: str, allowed_special: str | set | frozenset = frozenset()) -> np.ndarray:
        """Like `encode`, as an int64 array."""
        return np.asarray(self.encode(text, allowed_special), dtype=np.int64)

    def _encode(self, text: str, eot_allowed: bool) -> list[int]:
        if not eot_allowed:
            return self._encode_ordinary(text)
        ids: list[int] = []
        for k, segment in enumerate(text.split(EOT)):  # special tokens are cut out before the regex runs
            if k > 0:
                ids.append(self.eot_token)
            ids.extend(self._encode_ordinary(segment))
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for piece in pretokenize(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = tuple(self._ranks[part] for part in self._merge(piece.encode("utf-8")))
                if len(cache) >= _MAX_CACHE:
                    cache.clear()
                cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def _merge(self, piece: bytes, below_rank: int | None = None) -> list[bytes]:
        """Byte-pair merge of one pre-token: its bytes -> the parts BPE ends with (each one a token).

        Repeatedly join the neighbouring pair whose concatenation has the lowest rank (leftmost on a tie),
        only using ranks < below_rank if given. Written with a heap so that a long piece (a 10,000-space
        run) costs O(n log n) rather than O(n^2): each candidate pair sits in the heap as
        (rank, start, end); a candidate is stale once either of its two parts has changed.
        """
        if below_rank is None and piece in self._ranks:
            return [piece]                                 # fast path: the whole piece is one token
        n = len(piece)
        end = list(range(1, n + 1))     # end[s]: the part starting at byte s is piece[s:end[s]]
        prev = list(range(-1, n - 1))   # prev[s]: start of the part before the one at s (-1: none)
        alive = [True] * n              # alive[s]: a part starts at byte s
        heap: list[tuple[int, int, int]] = []

        def push(s: int) -> None:       # candidate: join the part at s with the part after it
            if s >= 0 and end[s] < n:
                rank = self._ranks.get(piece[s:end[end[s]]])
                if rank is not None and (below_rank is None or rank < below_rank):
                    heapq.heappush(heap, (rank, s, end[end[s]]))

        for s in range(n - 1):
            push(s)
        while heap:
            rank, s, stop = heapq.heappop(heap)
            if not alive[s] or end[s] >= n or end[end[s]] != stop:
                continue                                   # stale: one of the two parts has changed
            right = end[s]
            alive[right] = False                           # join: part s now spans piece[s:stop]
            end[s] = stop
            if stop < n:
                prev[stop] = s
            push(prev[s])                                  # the two new neighbouring pairs
            push(s)
        parts, s = [], 0
        while s < n:
            parts.append(piece[s:end[s]])
            s = end[s]
        return parts

    # ----- decoding -----------------------------------------------------------------------------------

    def decode_bytes(self, ids) -> bytes:
        """Token ids -> the bytes they stand for (may end in the middle of a UTF-8 character)."""
        ids = list(ids)
        table = self._id_to_bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next((i for i in ids if not _is_valid_id(i, self.vocab_size)), ids)
            raise ValueError(f"GPT2Tokenizer.decode: unknown token id {bad!r}; "
                             f"ids must be integers in 0..{self.vocab_size - 1}") from None

    def decode(self, ids) -> str:
        """Token ids -> text. Bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(vocab_size={self.vocab_size})"


def _is_valid_id(i, vocab_size: int) -> bool:
    return isinstance(i, (int, np.integer)) and 0 <= i < vocab_size


# ---------------------------------------------------------------------------------------------------
# File checks (every error names the file and says what is wrong)
# ---------------------------------------------------------------------------------------------------

def _read_text(file: Path, what: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {file}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{file} is not UTF-8 text ({e}); expected a {what}") from None


def _check_ranks(ranks: dict[bytes, int], source: str) -> None:
    """Ranks must be exactly 0..n-1 and include all 256 single bytes (so any text can be encoded)."""
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{source}: token ranks must be exactly 0..{len(ranks) - 1}, each once")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{source}: the vocabulary lacks {len(missing)} single-byte tokens "
                         f"(e.g. {bytes(missing[:1])!r}); byte-level BPE needs all 256")


def _ranks_from_vocab_json(file: Path) -> dict[bytes, int]:
    text = _read_text(file, "Hugging Face vocab.json (token -> id)")
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON ({e}); expected vocab.json mapping token -> id") from None
    if not isinstance(vocab, dict):
        raise ValueError(f"{file}: expected a JSON object mapping token -> id, got {type(vocab).__name__}")
    from_unicode = {c: b for b, c in byte_to_unicode().items()}
    ranks = {}
    for token, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool):
            raise ValueError(f"{file}: the id of token {token!r} is {i!r}, not an integer")
        if token == EOT:
            continue
        try:
            ranks[bytes(from_unicode[c] for c in token)] = i
        except KeyError as e:
            raise ValueError(f"{file}: token {token!r} contains {e.args[0]!r}, which is not in GPT-2's "
                             f"byte-to-unicode alphabet; is this a GPT-2 (byte-level BPE) vocab.json?") from None
    if EOT in vocab and vocab[EOT] != len(ranks):
        raise ValueError(f"{file}: {EOT} has id {vocab[EOT]}; expected {len(ranks)} (right after the other tokens)")
    _check_ranks(ranks, str(file))
    return ranks


def _check_merges_txt(file: Path, ranks: dict[bytes, int]) -> None:
    """merges.txt must create every multi-byte token once, in increasing id (= rank) order."""
    lines = _read_text(file, "Hugging Face merges.txt (`#version` line, then `left right` pairs)").splitlines()
    from_unicode = {c: b for b, c in byte_to_unicode().items()}
    last_rank, count = -1, 0
    for n, line in enumerate(lines, start=1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        fields = line.split(" ")
        try:
            if len(fields) != 2:
                raise KeyError
            left, right = (bytes(from_unicode[c] for c in f) for f in fields)
            rank = ranks[left + right]
            if left not in ranks or right not in ranks:
                raise KeyError
        except KeyError:
            raise ValueError(f"{file}, line {n}: {line[:60]!r} is not a merge `left right` of two tokens "
                             f"whose concatenation is also in vocab.json") from None
        if rank <= last_rank:
            raise ValueError(f"{file}, line {n}: merge {line!r} makes token id {rank}, but the line before "
                             f"made id {last_rank}; GPT-2 merges must create ids in increasing order")
        last_rank, count = rank, count + 1
    expected = sum(1 for token in ranks if len(token) >= 2)
    if count != expected:
        raise ValueError(f"{file} has {count} merges but vocab.json has {expected} multi-byte tokens; "
                         f"do the two files belong together?")
