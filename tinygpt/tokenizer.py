"""Tokenizers: a character-level one (here) and GPT-2's byte-level BPE (`tinygpt.bpe`).

Both follow the same small protocol, so data loading, training and sampling can treat them alike:

    tok.encode(text) -> list[int]        tok.decode(ids) -> str
    tok.vocab_size   -> int              tok.to_dict()   -> JSON-able dict (stored in a checkpoint's config)

and `tokenizer_from_dict(d)` rebuilds either one from its dict.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Tokenizer(Protocol):
    """What the rest of tinygpt expects from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids) -> str: ...
    def to_dict(self) -> dict: ...


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a training text.

    On tiny Shakespeare that is 65 characters: "\\n", " ", "!", ..., "a".."z". Token id = position in `chars`.
    """

    def __init__(self, chars: str):
        if not isinstance(chars, str) or not chars:
            raise ValueError(f"CharTokenizer needs a non-empty str of characters, got {chars!r:.80}")
        if len(set(chars)) != len(chars):
            dupes = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"CharTokenizer: characters must be distinct, {dupes!r:.80} repeat")
        self.chars = chars
        self.vocab_size = len(chars)
        # Lookup tables both ways, indexed by code point / token id, so that encoding and decoding a
        # million characters is a few NumPy operations instead of a Python loop.
        codepoints = _codepoints(chars)                                  # (V,)
        self._id_of_codepoint = np.full(int(codepoints.max()) + 1, -1, dtype=np.int64)
        self._id_of_codepoint[codepoints] = np.arange(len(chars))
        self._codepoint_of_id = codepoints

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = every distinct character of `text`, sorted by code point."""
        if not text:
            raise ValueError("the text is empty, so it has no characters to make a vocabulary of: "
                             "give a training text with some text in it "
                             "(CharTokenizer.from_text)")
        return cls("".join(sorted(set(text))))

    # ----- encode / decode ----------------------------------------------------------------------------

    def encode_array(self, text: str) -> np.ndarray:
        """Text -> token ids as an int64 array of shape (len(text),)."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode expects a str, got {type(text).__name__}")
        cp = _codepoints(text)                                           # (T,)
        table = self._id_of_codepoint
        ids = table[np.minimum(cp, len(table) - 1)]                      # (T,) beyond the table: unknown
        unknown = (ids < 0) | (cp >= len(table))
        if unknown.any():
            pos = int(np.argmax(unknown))
            ch = text[pos]
            raise ValueError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {pos:,} of the text is not in this "
                f"character-level model's vocabulary: the {self.vocab_size:,} characters of the "
                f"text it was trained on. Leave that character out; or train on (or `tinygpt "
                f"prepare`) a text that contains it, or use --tokenizer gpt2, which encodes any "
                f"text (in Python: CharTokenizer.from_text on such a text)")
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> token ids."""
        return self.encode_array(text).tolist()

    def decode(self, ids) -> str:
        """Token ids -> text."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.dtype.kind not in "iu" or ids.ndim != 1 or ids.min() < 0 or ids.max() >= self.vocab_size:
            bad = next((i for i in ids.ravel().tolist()
                        if not (isinstance(i, int) and 0 <= i < self.vocab_size)), ids)
            raise ValueError(f"CharTokenizer.decode: unknown token id {bad!r}; ids must be a flat "
                             f"sequence of integers in 0..{self.vocab_size - 1}")
        cp = self._codepoint_of_id[ids]                                  # (T,)
        return cp.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass")

    # ----- JSON ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        if not isinstance(d, dict) or d.get("type") != "char" or not isinstance(d.get("chars"), str):
            raise ValueError(f'CharTokenizer.from_dict expects {{"type": "char", "chars": "..."}}, got {d!r:.80}')
        return cls(d["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _codepoints(text: str) -> np.ndarray:
    """The code point of each character, shape (len(text),), via UTF-32 (4 bytes per character)."""
    # "surrogatepass": a lone surrogate in a str is kept as its own code point rather than an error.
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4").astype(np.int64)


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()`: {"type": "char", ...} or {"type": "gpt2"}."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "gpt2":
        from tinygpt.bpe import GPT2Tokenizer  # lazy: loading the BPE vocabulary is not free

        return GPT2Tokenizer.from_tiktoken()
    raise ValueError(f'unknown tokenizer description {d!r:.80}; expected {{"type": "char", "chars": ...}} '
                     f'or {{"type": "gpt2"}}')
