"""GPT-2 byte-level BPE, checked against published facts, tiktoken and Hugging Face (when installed).

The tiktoken oracle is built offline from the bundled ranks file, loaded with our own few lines
(helpers.load_ranks_for_oracle, not with tinygpt's loader), and GPT-2's published pre-tokenizer
regex.
"""

import json
import sys
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from tinygpt.bpe import EOT, GPT2_PATTERN, GPT2Tokenizer, pretokenize, safe_cut
from tinygpt.tokenizer import tokenizer_from_dict

from helpers import load_ranks_for_oracle


@pytest.fixture(scope="module")
def tok() -> GPT2Tokenizer:
    return GPT2Tokenizer.from_tiktoken()


def make_oracle(pat_str: str):
    tiktoken = pytest.importorskip("tiktoken", reason='parity tests need tiktoken: pip install "tinygpt[parity]"')
    return tiktoken.Encoding(name="gpt2_local", pat_str=pat_str, mergeable_ranks=load_ranks_for_oracle(),
                             special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def oracle():
    return make_oracle(GPT2_PATTERN)


# Text that exercises every branch of the pre-tokenizer: whitespace runs (incl. non-ASCII White_Space
# and U+001C..U+001F, which Python calls space but Unicode does not), digits and other numerals,
# contractions, letters from many scripts, combining marks, emoji (above U+FFFF, with ZWJ and skin tones).
PIECES = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2003",
    "\u2028", "\u202f", "\u3000", "\x1c", "\x1f", "\u200b",
    "0", "7", "42", "2024", "٣", "²", "½", "Ⅻ", "𝟙", "〇",
    "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s", "''", "'x",
    "a", "s", "I", "The", " dog", "hello", "é", "naïve", "Straße", "Ωμέγα", "Привет", "你好", "한국어",
    "ﬁ", "e\u0301", "𝐀𝐁", "ǅ", "ʰ",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "!", "...", "--", "$", "@#", "\x00", "\x7f", "\ufeff",
    EOT, "<|", "|>",
]
assigned = st.characters(exclude_categories=("Cs", "Cn"))  # assigned in this Python's Unicode version
fragments = st.one_of(
    st.sampled_from(PIECES),
    st.text(alphabet=assigned, max_size=4),
    st.text(alphabet=" \t\n\xa0\x1c\u3000as1'.", max_size=8),
)
texts = st.lists(fragments, max_size=25).map("".join)


# ----- published facts (data README) ----------------------------------------------------------------

@pytest.mark.parametrize("text, ids", [
    ("hello world", [31373, 995]),
    ("Hello world", [15496, 995]),
    (" Hello world", [18435, 995]),
    ("The dog", [464, 3290]),
])
def test_known_ids(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_sizes(tok):
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    assert tok.decode([50256]) == EOT


@pytest.mark.parametrize("allowed", ["all", {EOT}, frozenset({EOT}), [EOT]])
def test_special_token_allowed(tok, allowed):
    assert tok.encode("hello <|endoftext|>", allowed_special=allowed) == [31373, 220, 50256]


def test_special_token_is_text_by_default(tok, oracle):
    text = "a<|endoftext|>b <|endoftext|><|endoftext|>"
    ids = tok.encode(text)
    assert 50256 not in ids
    assert ids == oracle.encode(text, disallowed_special=())
    assert tok.decode(ids) == text
    assert tok.encode(text, allowed_special="all") == oracle.encode(text, allowed_special="all")


@pytest.mark.parametrize("allowed", ["<|endoftext|>", {"<|fim_prefix|>"}])
def test_bad_allowed_special(tok, allowed):
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode("x", allowed_special=allowed)


# ----- round trip -----------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), texts))
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


@pytest.mark.parametrize("ids", [[50257], [-1], [1.5], ["a"]])
def test_unknown_id_error(tok, ids):
    with pytest.raises(ValueError, match="unknown token id"):
        tok.decode([31373] + ids)


# ----- parity with tiktoken -------------------------------------------------------------------------

def test_parity_tiny_shakespeare(tok, oracle, shakespeare):
    assert tok.encode(shakespeare) == oracle.encode(shakespeare)


@settings(max_examples=1000, deadline=None)
@given(texts)
def test_parity_hypothesis(tok, oracle, text):
    assert tok.encode(text) == oracle.encode(text, disallowed_special=())
    assert tok.encode(text, allowed_special="all") == oracle.encode(text, allowed_special="all")


def assigned_code_points(private_use: bool) -> list[str]:
    """Every character assigned in this Python's Unicode version (no surrogates); private use optional."""
    skip = ("Cn", "Cs") if private_use else ("Cn", "Cs", "Co")
    return [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) not in skip]


# Around a character c, this context gives different pieces for each class of c (letter, number,
# whitespace, other): e.g. "a" + c joins only if c is a letter, "1" + c only if a number, c + "'" only if
# other, and "  " + c keeps both spaces only if c is whitespace.
def in_context(c: str) -> str:
    return f"a{c}1{c}.{c}'s  {c}"


def test_pretokenizer_every_assigned_code_point():
    """Our re-based pre-tokenizer vs the `regex` module (installed with tiktoken), whose \\s is White_Space."""
    regex = pytest.importorskip("regex", reason='parity tests need regex (comes with tiktoken): pip install "tinygpt[parity]"')
    text = "".join(map(in_context, assigned_code_points(private_use=True)))
    assert pretokenize(text) == regex.findall(GPT2_PATTERN, text)


@settings(max_examples=300, deadline=None)
@given(texts)
def test_pretokenizer_hypothesis(text):
    regex = pytest.importorskip("regex", reason='parity tests need regex (comes with tiktoken): pip install "tinygpt[parity]"')
    assert pretokenize(text) == regex.findall(GPT2_PATTERN, text)


def test_parity_every_assigned_code_point(tok, oracle):
    """Token ids for each assigned character in context (private-use planes sampled, to keep this fast)."""
    private_use = ["\ue000", "\uf8ff", "\U000f0000", "\U000ffffd", "\U00100000", "\U0010fffd"]
    text = "".join(map(in_context, assigned_code_points(private_use=False) + private_use))
    assert tok.encode(text) == oracle.encode(text, disallowed_special=())


@pytest.mark.parametrize("text", [
    " " * 10_000 + "x",                    # long pieces: the heap-based merge must stay fast and exact
    "a" * 20_000,
    "😀" * 3_000,
    "=" * 5_000 + "\n" * 5_000,
    "a\x1c\x1cb \x1f c",                   # str.isspace() but not Unicode White_Space ...
    "x  \x1c\n\n\x1f",                     # ... which shows when a space run precedes them
    "x   \ty\n\n\n z \u3000\u3000w  ",
    "I'm  'tis 'S 'll've '''s",
])
def test_parity_edge_cases(tok, oracle, text):
    assert tok.encode(text) == oracle.encode(text, disallowed_special=())


def test_parity_with_tiktokens_own_gpt2_regex(tok):
    """tiktoken ships a rewritten (faster) GPT-2 regex; it must cut text the same way."""
    pytest.importorskip("tiktoken", reason='parity tests need tiktoken: pip install "tinygpt[parity]"')
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    modern = make_oracle(openai_public.r50k_pat_str)
    for text in PIECES + ["".join(PIECES), "  a  ", "x\n\n", " \t "]:
        assert tok.encode(text) == modern.encode(text, disallowed_special=()), repr(text)


@pytest.mark.parametrize("text", ["a\ud800b", "\ud83d\ude00 x", "x\udfff", "\udc00"])
def test_lone_surrogates_like_tiktoken(tok, oracle, text):
    # UTF-8 cannot hold a lone surrogate: both join surrogate pairs and replace the rest by U+FFFD.
    assert tok.encode(text) == oracle.encode(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=20))
def test_decode_parity(tok, oracle, ids):
    assert tok.decode_bytes(ids) == oracle.decode_bytes(ids)
    assert tok.decode(ids) == oracle.decode(ids)


# ----- Hugging Face files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_dir(tok, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2_hf")
    tok.save_hf(directory)
    return directory


@pytest.fixture(scope="module")
def reloaded(hf_dir) -> GPT2Tokenizer:
    return GPT2Tokenizer.from_files(hf_dir / "vocab.json", hf_dir / "merges.txt")


def test_hf_file_format(hf_dir):
    vocab = json.loads((hf_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 50257 and vocab[EOT] == 50256
    assert vocab["!"] == 0 and vocab["Ġ"] == 220          # GPT-2's byte-to-unicode alphabet: space -> "Ġ"
    lines = (hf_dir / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version") and lines[-1] == ""
    assert len(lines) == 1 + 50000 + 1
    assert all(len(line.split(" ")) == 2 for line in lines[1:-1])
    # Every merge joins two tokens into the next token id, in order.
    for k, line in enumerate(lines[1:-1]):
        left, right = line.split(" ")
        assert vocab[left + right] == 256 + k


def test_from_files_matches(tok, reloaded, shakespeare, oracle):
    assert reloaded.vocab_size == 50257 and reloaded.eot_token == 50256
    sample = shakespeare[:100_000]
    assert reloaded.encode(sample) == oracle.encode(sample)
    assert reloaded.to_dict() == {"type": "gpt2"}


@settings(max_examples=100, deadline=None)
@given(texts)
def test_from_files_hypothesis(reloaded, oracle, text):
    assert reloaded.encode(text) == oracle.encode(text, disallowed_special=())


def test_transformers_loads_saved_files(tok, hf_dir, shakespeare):
    transformers = pytest.importorskip("transformers", reason="optional: pip install transformers")
    # from_pretrained(directory) works across transformers 4 and 5 (in 5, the vocab_file=/merges_file=
    # constructor arguments are ignored outside from_pretrained).
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(hf_dir))
    samples = [shakespeare[:20_000], "hello world", "  multiple   spaces\n\n\tand tabs ",
               "naïve café Ωμέγα 你好 😀👍🏽", "I'm you'll they've 123 4567", "x\u3000\u3000y\xa0"]
    for text in samples:
        assert hf(text)["input_ids"] == tok.encode(text), repr(text[:40])
        assert hf.decode(tok.encode(text)) == text
    assert hf.convert_tokens_to_ids(EOT) == 50256


# ----- malformed files ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """A small valid vocabulary: the 256 bytes and GPT-2's first 44 merges (a prefix of a BPE vocab is one)."""
    ranks = {token: rank for token, rank in load_ranks_for_oracle().items() if rank < 300}
    directory = tmp_path_factory.mktemp("small_hf")
    GPT2Tokenizer(ranks).save_hf(directory)
    return directory


def _write_pair(tmp_path, small_dir, vocab_text=None, merges_text=None):
    vocab = tmp_path / "vocab.json"
    merges = tmp_path / "merges.txt"
    vocab.write_text(vocab_text if vocab_text is not None else (small_dir / "vocab.json").read_text("utf-8"), "utf-8")
    merges.write_text(merges_text if merges_text is not None else (small_dir / "merges.txt").read_text("utf-8"),
                      "utf-8")
    return vocab, merges


def test_small_vocab_is_valid(small_dir):
    small = GPT2Tokenizer.from_files(small_dir / "vocab.json", small_dir / "merges.txt")
    assert small.vocab_size == 301 and small.decode(small.encode("the cat")) == "the cat"
    with pytest.raises(ValueError, match="save_hf"):
        small.to_dict()                                   # not the bundled vocabulary


def test_missing_files(tmp_path, small_dir):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        GPT2Tokenizer.from_files(tmp_path / "vocab.json", small_dir / "merges.txt")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        GPT2Tokenizer.from_files(small_dir / "vocab.json", tmp_path / "merges.txt")
    with pytest.raises(FileNotFoundError, match="nope.tiktoken"):
        GPT2Tokenizer.from_tiktoken(tmp_path / "nope.tiktoken")


def _merges_lines(small_dir):
    return (small_dir / "merges.txt").read_text("utf-8").split("\n")


@pytest.mark.parametrize("case, pattern", [
    ("vocab not json", "vocab.json is not valid JSON"),
    ("vocab a list", "JSON object"),
    ("vocab id not int", "not an integer"),
    ("vocab foreign char", "byte-to-unicode alphabet"),
    ("vocab gap in ids", "ranks must be exactly"),
    ("merges 3 fields", "merges.txt, line 2"),
    ("merges unknown token", "merges.txt, line 3"),
    ("merges out of order", "increasing order"),
    ("merges missing one", "44 multi-byte tokens"),
])
def test_malformed_hf_files(tmp_path, small_dir, case, pattern):
    vocab = json.loads((small_dir / "vocab.json").read_text("utf-8"))
    lines = _merges_lines(small_dir)
    vocab_text = merges_text = None
    if case == "vocab not json":
        vocab_text = '{"a": 1,'
    elif case == "vocab a list":
        vocab_text = "[1, 2]"
    elif case == "vocab id not int":
        vocab_text = json.dumps({**vocab, "!": "zero"})
    elif case == "vocab foreign char":
        vocab_text = json.dumps({**vocab, "日本": 300})
    elif case == "vocab gap in ids":
        vocab_text = json.dumps({**vocab, "!": 5000})
    elif case == "merges 3 fields":
        merges_text = "\n".join([lines[0], "Ġ t x", *lines[2:]])
    elif case == "merges unknown token":
        merges_text = "\n".join([lines[0], lines[1], "q z", *lines[3:]])
    elif case == "merges out of order":
        merges_text = "\n".join([lines[0], lines[2], lines[1], *lines[3:]])
    elif case == "merges missing one":
        merges_text = "\n".join(lines[:-2] + [""])
    vocab_file, merges_file = _write_pair(tmp_path, small_dir, vocab_text, merges_text)
    with pytest.raises(ValueError, match=pattern):
        GPT2Tokenizer.from_files(vocab_file, merges_file)


@pytest.mark.parametrize("content, pattern", [
    ("IQ== 0\nnot-base64! 1\n", "line 2"),
    ("IQ== 0\nIg==\n", "line 2"),
    ("IQ== 0\nIg== x\n", "line 2"),
    ("IQ== 0\nIQ== 1\n", "appears twice"),
    ("IQ== 0\nIg== 2\n", "ranks must be exactly"),
    ("IQ== 0\nIg== 1\n", "single-byte tokens"),
])
def test_malformed_tiktoken_file(tmp_path, content, pattern):
    path = tmp_path / "bad.tiktoken"
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        GPT2Tokenizer.from_tiktoken(path)


# ----- common tokenizer protocol --------------------------------------------------------------------

def test_dict_round_trip(tok):
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "gpt2"}
    rebuilt = tokenizer_from_dict(d)
    assert isinstance(rebuilt, GPT2Tokenizer)
    assert rebuilt.encode("hello world") == [31373, 995]


# ----- cutting a long text into chunks (tinygpt prepare) ---------------------------------------------

def cut_everywhere(text: str) -> list[str]:
    """Cut text at safe_cut repeatedly, from the right: the chunks, in order."""
    chunks = []
    while (i := safe_cut(text)) > 0:
        chunks.append(text[i:])
        text = text[:i]
    return [text] + chunks[::-1]


@settings(max_examples=200, deadline=None)
@given(texts)
def test_safe_cut_keeps_the_pieces(oracle, text):
    chunks = cut_everywhere(text)
    assert "".join(chunks) == text
    assert all(chunks) or text == ""                        # every cut is strictly inside
    # the regex oracle: the pieces of the chunks are the pieces of the whole
    regex = pytest.importorskip("regex", reason='parity tests need regex (comes with tiktoken): pip install "tinygpt[parity]"')
    assert [p for c in chunks for p in regex.findall(GPT2_PATTERN, c)] == regex.findall(GPT2_PATTERN, text)
    assert [t for c in chunks for t in oracle.encode(c, disallowed_special=())] == \
        oracle.encode(text, disallowed_special=())


@pytest.mark.parametrize("text, cut", [
    ("ab\ncd x", 2), ("ab cd", 2), ("ab \ncd", 2),          # a newline first, else a space
    ("a\n\n\nb", 1), ("a  b", 1), ("  \n\n", 0), ("abc", 0), ("\nabc", 0), ("", 0),
    ("x\u3000y", 0),                                        # only newline and space are cut before
])
def test_safe_cut_places(text, cut):
    assert safe_cut(text) == cut
