"""tinygpt/tokenizer.py: CharTokenizer, checked against plain-Python references (sorted set, dict lookup) and the data README."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygpt.tokenizer import CharTokenizer, tokenizer_from_dict


def reference_encode(chars: str, text: str) -> list[int]:
    index = {c: i for i, c in enumerate(chars)}
    return [index[c] for c in text]


def test_tiny_shakespeare_vocab_and_round_trip(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    # data README: 1,115,394 characters, 65 distinct
    assert tok.vocab_size == 65
    assert tok.chars == "".join(sorted(set(shakespeare)))
    ids = tok.encode_array(shakespeare)
    assert ids.dtype == np.int64 and ids.shape == (1_115_394,)
    assert ids.tolist() == reference_encode(tok.chars, shakespeare)
    assert tok.decode(ids) == shakespeare
    assert tok.decode(ids.tolist()) == shakespeare


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1), st.data())
def test_round_trip_any_text(train_text, data):
    tok = CharTokenizer.from_text(train_text)
    text = data.draw(st.text(alphabet=st.sampled_from(sorted(set(train_text)))))
    ids = tok.encode(text)
    assert ids == reference_encode(tok.chars, text)
    assert tok.decode(ids) == text
    assert tok.encode_array(text).tolist() == ids


def test_lone_surrogates_are_characters_too():
    tok = CharTokenizer.from_text("a\ud800b")
    assert tok.decode(tok.encode("b\ud800a")) == "b\ud800a"


@pytest.mark.parametrize("text, char, pos", [
    ("To be, or not to be: é", "é", 21),   # code point inside the lookup table's range
    ("To be 😀", "😀", 6),                  # code point beyond it
    ("\x00", "\x00", 0),
])
def test_unknown_character_error_names_it(shakespeare, text, char, pos):
    tok = CharTokenizer.from_text(shakespeare)
    with pytest.raises(ValueError) as e:
        tok.encode(text)
    message = str(e.value)
    assert repr(char) in message and f"position {pos}" in message
    assert f"U+{ord(char):04X}" in message
    # what to do, for the command-line user (who never called CharTokenizer.from_text) and in Python
    assert "--tokenizer gpt2" in message and "tinygpt prepare" in message and "from_text" in message
    assert not message.startswith("CharTokenizer")


@pytest.mark.parametrize("ids", [[0, 3], [-1], [1.5], [[0]]])
def test_unknown_id_error(ids):
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="unknown token id"):
        tok.decode(ids)


def test_empty_inputs():
    tok = CharTokenizer("abc")
    assert tok.encode("") == [] and tok.decode([]) == ""
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer("abca")


def test_dict_round_trip_through_json(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "char", "chars": tok.chars}
    for rebuilt in (CharTokenizer.from_dict(d), tokenizer_from_dict(d)):
        assert isinstance(rebuilt, CharTokenizer)
        assert rebuilt.chars == tok.chars
        assert rebuilt.encode(shakespeare[:1000]) == tok.encode(shakespeare[:1000])


@pytest.mark.parametrize("d", [{"type": "char"}, {"type": "word"}, {}, "char", {"type": "char", "chars": 5}])
def test_bad_dicts(d):
    with pytest.raises(ValueError):
        tokenizer_from_dict(d)
