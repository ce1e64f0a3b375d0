"""tinygpt/dataset.py: the bundled text and its batches, and prepared data directories (what
`tinygpt prepare` writes, and nanoGPT's train.bin / val.bin layout). The `prepare` command's
options and messages are tested in test_cli.py.

Oracles: the in-memory path (`CharTokenizer.from_text(text)`, `Dataset.from_ids`) for the ids and
the split, tiktoken's GPT-2 encoding (built offline from the bundled ranks, as in test_bpe.py) for
BPE ids, hashlib for checksums, np.fromfile for the file layout, and a data directory built the
way nanoGPT's data/*/prepare.py builds one.
"""
import codecs
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinygpt.bpe import EOT, GPT2Tokenizer
from tinygpt.dataset import (SHAKESPEARE, Dataset, is_prepared_dir, open_prepared, prepare,
                             read_text)
from tinygpt.tokenizer import CharTokenizer, tokenizer_from_dict

from helpers import load_ranks_for_oracle


@pytest.fixture(scope="module")
def gpt2_ids():
    """Text -> GPT-2 ids from tiktoken if installed (an independent implementation), else ours."""
    try:
        import tiktoken
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:
        return GPT2Tokenizer.from_tiktoken().encode
    enc = tiktoken.Encoding(name="gpt2_local", pat_str=r50k_pat_str,
                            mergeable_ranks=load_ranks_for_oracle(), special_tokens={EOT: 50256})
    return lambda text: enc.encode(text, disallowed_special=())


def read_bin(path, dtype="<u2") -> np.ndarray:
    return np.fromfile(path, dtype=dtype)


def split(ids, val_fraction=0.1):
    n_train = int(len(ids) * (1 - val_fraction))
    return np.asarray(ids[:n_train]), np.asarray(ids[n_train:])


# ----- the bundled text and its batches -----------------------------------------------------------

def test_bundled_shakespeare_facts():
    from tinygpt.tokenizer import CharTokenizer
    text = read_text()
    assert len(text) == 1_115_394                                # from shared/data/README.md
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65
    data = Dataset.from_ids(tok.encode_array(text), block_size=64)
    assert (len(data.train), len(data.val)) == (1_003_854, 111_540)


def test_batches_are_shifted_targets_and_seeded():
    data = Dataset.from_ids(np.arange(1000), block_size=8)
    x, y = data.batch("train", 4, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x + 1)
    x2, _ = data.batch("train", 4, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)


# ----- writing ---------------------------------------------------------------------------------------

def test_char_matches_training_on_the_text(tmp_path, shakespeare):
    """A prepared text gives the very ids, split and batches of training on the text in memory."""
    out = tmp_path / "data"
    meta = prepare(SHAKESPEARE, out, "char", progress=False, chunk_chars=50_000)
    tok = CharTokenizer.from_text(shakespeare)
    in_memory = Dataset.from_ids(tok.encode_array(shakespeare), block_size=64)
    assert np.array_equal(read_bin(out / "train.bin"), in_memory.train)
    assert np.array_equal(read_bin(out / "val.bin"), in_memory.val)
    assert meta == json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 65
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(in_memory.train), len(in_memory.val))
    assert meta["source"]["sha256"] == hashlib.sha256(SHAKESPEARE.read_bytes()).hexdigest()
    assert meta["source"]["bytes"] == SHAKESPEARE.stat().st_size

    data, meta2 = open_prepared(out)
    assert meta2 == meta
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16
    for split_name in ("train", "val"):
        a = data.batch(split_name, 8, 64, np.random.default_rng(5))
        b = in_memory.batch(split_name, 8, 64, np.random.default_rng(5))
        assert a[0].dtype == np.int64 and a[0].shape == (8, 64)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])

    # the tokenizer in meta.json round-trips: same vocabulary, decodes the files back to the text
    rebuilt = tokenizer_from_dict(json.loads(json.dumps(meta["tokenizer"])))
    assert rebuilt.to_dict() == tok.to_dict() == meta["tokenizer"]
    assert rebuilt.decode(np.concatenate([data.train, data.val])) == shakespeare


def test_gpt2_parallel_equals_single_process_equals_tiktoken(tmp_path, shakespeare, gpt2_ids):
    # Many small chunks, with text where a careless cut would change tokens: whitespace runs
    # across lines, spaces before newlines, non-ASCII and above-U+FFFF characters, no newline at all.
    text = (shakespeare[:150_000] + "\n\n\n  \n \t\nx" * 50 + " naïve 😀😀 Ωμέγα\u3000\u3000" * 200
            + "word " * 3_000 + "=" * 5_000 + "\n")
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    assert len(text.encode()) > 20 * 7_000            # ~25 chunks: prepare starts a pool above 4
    metas = {}
    for workers in (1, 2):
        metas[workers] = prepare(tmp_path / "corpus.txt", tmp_path / f"w{workers}", "gpt2",
                                 workers=workers, progress=False, chunk_chars=7_000)
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    assert metas[1] == {**metas[2], "source": {**metas[2]["source"], "path": metas[1]["source"]["path"]}}
    train, val = split(gpt2_ids(text))
    assert np.array_equal(read_bin(tmp_path / "w2" / "train.bin"), train)
    assert np.array_equal(read_bin(tmp_path / "w2" / "val.bin"), val)
    assert metas[2]["tokenizer"] == {"type": "gpt2"} and metas[2]["dtype"] == "uint16"


def test_directory_is_sorted_txt_documents(tmp_path, gpt2_ids):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = {"b.txt": "Second document, the end.\n" * 20, "a.txt": "First one <|endoftext|> here.\n" * 20,
            "c.txt": "", "notes.md": "not a .txt file\n"}
    for name, text in docs.items():
        (corpus / name).write_text(text, encoding="utf-8")
    a, b = docs["a.txt"], docs["b.txt"]

    meta = prepare(corpus, tmp_path / "g", "gpt2", progress=False)
    ids = np.concatenate([read_bin(tmp_path / "g" / "train.bin"), read_bin(tmp_path / "g" / "val.bin")])
    # documents joined by the single <|endoftext|> id; the literal text "<|endoftext|>" stays text
    assert ids.tolist() == gpt2_ids(a) + [50256] + gpt2_ids(b)
    assert meta["source"]["documents"] == 2 and meta["source"]["separator"] == EOT
    assert [f["name"] for f in meta["source"]["files"]] == ["a.txt", "b.txt", "c.txt"]
    lines = "".join(f"{hashlib.sha256(docs[n].encode()).hexdigest()}  {n}\n" for n in ("a.txt", "b.txt", "c.txt"))
    assert meta["source"]["sha256"] == hashlib.sha256(lines.encode()).hexdigest()

    meta = prepare(corpus, tmp_path / "c", "char", progress=False)
    data, _ = open_prepared(tmp_path / "c")
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert tok.decode(np.concatenate([data.train, data.val])) == a + "\n" + b
    assert meta["source"]["separator"] == "\n"


def test_uint32_when_the_vocabulary_does_not_fit_uint16(tmp_path):
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 20_000)] + \
            [chr(c) for c in range(0x20000, 0x20000 + 50_000)]          # 70,000 distinct characters
    text = "".join(chars) * 2
    (tmp_path / "wide.txt").write_text(text, encoding="utf-8")
    meta = prepare(tmp_path / "wide.txt", tmp_path / "d", "char", progress=False)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_000
    tok = CharTokenizer.from_text(text)
    train, val = split(tok.encode_array(text))
    assert np.array_equal(read_bin(tmp_path / "d" / "train.bin", "<u4"), train)
    assert train.max() >= 1 << 16                                      # the wide ids survive
    data, _ = open_prepared(tmp_path / "d")
    assert data.train.dtype == np.uint32 and np.array_equal(data.val, val)


# ----- nanoGPT's layout --------------------------------------------------------------------------------

def nanogpt_prepare(text: str, encode, out) -> None:
    """What nanoGPT's data/shakespeare/prepare.py does: split the text 90/10, encode, write uint16."""
    out.mkdir()
    n = len(text)
    train_ids, val_ids = encode(text[:int(n * 0.9)]), encode(text[int(n * 0.9):])
    np.array(train_ids, dtype=np.uint16).tofile(out / "train.bin")
    np.array(val_ids, dtype=np.uint16).tofile(out / "val.bin")


def test_reads_a_directory_prepared_by_nanogpt(tmp_path, shakespeare, gpt2_ids):
    text = shakespeare[:60_000]
    nanogpt_prepare(text, gpt2_ids, tmp_path / "shakespeare")
    assert is_prepared_dir(tmp_path / "shakespeare")
    data, meta = open_prepared(tmp_path / "shakespeare", block_size=64)
    assert meta["assumed"] and "no meta.json" in meta["notice"] and "GPT-2" in meta["notice"]
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert isinstance(tok, GPT2Tokenizer)
    assert tok.decode(data.train) == text[:int(len(text) * 0.9)]
    assert tok.decode(data.val) == text[int(len(text) * 0.9):]
    x, y = data.batch("train", 4, 64, np.random.default_rng(0))
    assert x.dtype == np.int64 and np.array_equal(x[:, 1:], y[:, :-1])


def test_meta_pkl_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("tinygpt tried to unpickle meta.pkl")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    out = tmp_path / "shakespeare_char"
    nanogpt_prepare("hello world\n" * 1000, lambda t: [ord(c) % 65 for c in t], out)
    (out / "meta.pkl").write_bytes(b"\x80\x04not really a pickle")
    assert is_prepared_dir(out)
    with pytest.raises(ValueError, match=r"meta\.pkl.*never unpickles.*tinygpt prepare input\.txt --tokenizer char"):
        open_prepared(out)


# ----- errors ------------------------------------------------------------------------------------------

def test_not_prepared(tmp_path):
    assert not is_prepared_dir(tmp_path)                      # empty directory
    assert not is_prepared_dir(SHAKESPEARE)                   # a text file
    with pytest.raises(ValueError, match="tinygpt prepare"):
        open_prepared(tmp_path)
    with pytest.raises(IsADirectoryError, match="tinygpt prepare"):
        read_text(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no \*\.txt files"):
        prepare(tmp_path, tmp_path / "out", progress=False)


def test_truncated_or_foreign_files(tmp_path, shakespeare):
    (tmp_path / "t.txt").write_text(shakespeare[:20_000], encoding="utf-8")
    out = tmp_path / "d"
    prepare(tmp_path / "t.txt", out, "char", progress=False)
    with pytest.raises(ValueError, match="block_size"):
        open_prepared(out, block_size=5_000)                     # val has 2,000 tokens
    train = (out / "train.bin").read_bytes()
    (out / "train.bin").write_bytes(train[:-2])
    with pytest.raises(ValueError, match=r"train\.bin has 35,998 bytes.*18,000 uint16 ids = 36,000 bytes"):
        open_prepared(out)
    (out / "train.bin").write_bytes(train)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        open_prepared(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        open_prepared(out)


def test_bad_inputs_to_prepare(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ok".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8.*byte 3"):
        prepare(tmp_path / "latin1.txt", tmp_path / "o", progress=False)
    (tmp_path / "short.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match="too few to split"):
        prepare(tmp_path / "short.txt", tmp_path / "o", "gpt2", progress=False)
    assert not (tmp_path / "o" / "meta.json").exists()           # a failed run leaves no meta.json
    assert not list((tmp_path / "o").glob("*.tmp"))
    assert not list((tmp_path / "o").glob(".prepare-*"))


def test_messages_for_what_is_not_a_text(tmp_path):
    """/dev/null exists: it is not "not found", it is not a regular file. An empty text is
    empty, whichever the tokenizer (not "0 tokens"); a single token is "1 token"."""
    if os.path.exists("/dev/null"):
        with pytest.raises(ValueError) as e:
            prepare("/dev/null", tmp_path / "o", progress=False)
        assert "/dev/null is neither a regular file nor a directory" in str(e.value)
        assert "not found" not in str(e.value)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bom-only.txt").write_bytes(codecs.BOM_UTF8)
    for name in ("empty.txt", "bom-only.txt"):
        for kind in ("char", "gpt2"):
            with pytest.raises(ValueError, match=f"{name} is empty: there is no text to prepare"):
                prepare(tmp_path / name, tmp_path / "o", kind, progress=False)
    (tmp_path / "one.txt").write_text("hello", encoding="utf-8")           # one GPT-2 token
    with pytest.raises(ValueError, match=r"gives only 1 token: too few"):
        prepare(tmp_path / "one.txt", tmp_path / "o", "gpt2", progress=False)
    with pytest.raises(ValueError, match=r"part has 1 token, but"):
        Dataset.from_ids(np.arange(10), block_size=4)                   # val: 1 id


def test_a_plain_directory_given_as_data(tmp_path):
    """`train --data DIR` with a directory that is no dataset: the error names DIR (not --out)
    and says how to prepare it into another directory."""
    from click.testing import CliRunner
    from tinygpt.cli.train import train_cmd
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text\n" * 100, encoding="utf-8")
    result = CliRunner().invoke(train_cmd, ["--data", str(corpus), "--out", str(tmp_path / "run"),
                                            "--max-iters", "1"])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith(f"Error: {corpus} is a directory but not a prepared dataset")
    assert str(tmp_path / "run") not in message
    assert f"tinygpt prepare {corpus} --out DATA_DIR" in message and "--data DATA_DIR" in message
    (corpus / "a.txt").unlink()                                   # nothing to prepare in it
    with pytest.raises(ValueError, match=r"--data takes a UTF-8 text file, or a directory written "
                                         r"by `tinygpt prepare TEXT_FILE_OR_DIR --out DATA_DIR`"):
        open_prepared(corpus)


def test_a_leading_byte_order_mark_is_not_text(tmp_path, gpt2_ids):
    """EF BB BF at the start of a file is dropped by read_text and by prepare (both tokenizers);
    the source's sha256 is still the file's. Elsewhere U+FEFF is an ordinary character."""
    text = "To be, or not to be\ufeff: that is the question.\n" * 50
    raw = codecs.BOM_UTF8 + text.encode("utf-8")
    (tmp_path / "bom.txt").write_bytes(raw)
    assert read_text(tmp_path / "bom.txt") == text
    ids = {"char": CharTokenizer.from_text(text).encode_array(text), "gpt2": gpt2_ids(text)}
    for kind in ("char", "gpt2"):
        meta = prepare(tmp_path / "bom.txt", tmp_path / kind, kind, progress=False)
        train, val = split(ids[kind])
        assert np.array_equal(read_bin(tmp_path / kind / "train.bin"), train)
        assert np.array_equal(read_bin(tmp_path / kind / "val.bin"), val)
        assert meta["source"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert meta["source"]["bytes"] == len(raw)
    assert CharTokenizer.from_text(text).chars == tokenizer_from_dict(
        json.loads((tmp_path / "char" / "meta.json").read_text())["tokenizer"]).chars
    (tmp_path / "bad.txt").write_bytes(codecs.BOM_UTF8 + b"caf\xe9")          # byte 6 is bad
    with pytest.raises(ValueError, match="byte 6"):
        read_text(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="byte 6"):
        prepare(tmp_path / "bad.txt", tmp_path / "o", progress=False)


def test_prepare_replaces_only_its_own_files(tmp_path, shakespeare):
    """Over an existing dataset: the user's other files stay; a prepare that fails leaves the
    old dataset whole (it used to remove meta.json first, leaving the old ids to be read as
    GPT-2 ids)."""
    (tmp_path / "a.txt").write_text(shakespeare[:20_000], encoding="utf-8")
    out = tmp_path / "d"
    first = prepare(tmp_path / "a.txt", out, "char", progress=False)
    (out / "notes.txt").write_text("mine\n")
    (out / "meta.pkl").write_bytes(b"nanoGPT's")
    (out / "sub").mkdir()
    (tmp_path / "short.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match="too few to split"):
        prepare(tmp_path / "short.txt", out, "gpt2", progress=False)
    data, meta = open_prepared(out)
    assert meta == first and "notice" not in meta
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert tok.decode(np.concatenate([data.train, data.val])) == shakespeare[:20_000]
    prepare(tmp_path / "a.txt", out, "gpt2", progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "meta.pkl", "notes.txt", "sub", "train.bin", "val.bin"]
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "meta.pkl").read_bytes() == b"nanoGPT's"


def test_interrupted_prepare_is_not_a_nanogpt_directory(tmp_path, shakespeare):
    """What a killed prepare of the previous release left (old train.bin/val.bin, an empty
    train.bin.tmp, no meta.json) is an error that says to prepare again, not GPT-2 ids."""
    (tmp_path / "a.txt").write_text(shakespeare[:20_000], encoding="utf-8")
    out = tmp_path / "d"
    prepare(tmp_path / "a.txt", out, "char", progress=False)
    (out / "meta.json").unlink()
    (out / "train.bin.tmp").write_bytes(b"")
    assert is_prepared_dir(out)
    with pytest.raises(ValueError, match=r"no meta\.json.*interrupted `tinygpt prepare`.*"
                                         r"train\.bin\.tmp.*Run `tinygpt prepare"):
        open_prepared(out)
    prepare(tmp_path / "a.txt", out, "char", progress=False)     # which cleans it up
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]

    # a partial directory of a process that is running (here: this one) is left alone
    (out / "meta.json").unlink()
    partial = out / f".prepare-{os.getpid()}.partial"
    partial.mkdir()
    (partial / "train.bin").write_bytes(b"\0\0")
    assert is_prepared_dir(out)
    with pytest.raises(ValueError, match=rf"`tinygpt prepare` \(PID {os.getpid()}\) is writing one"):
        open_prepared(out)
    assert partial.exists()


def test_one_prepare_at_a_time(tmp_path, shakespeare):
    fcntl = pytest.importorskip("fcntl")
    (tmp_path / "a.txt").write_text(shakespeare[:20_000], encoding="utf-8")
    out = tmp_path / "d"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)          # what a running prepare holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another `tinygpt prepare`"):
            prepare(tmp_path / "a.txt", out, "char", progress=False)
    finally:
        os.close(fd)
    prepare(tmp_path / "a.txt", out, "char", progress=False)


def test_train_says_which_dataset(tmp_path, shakespeare):
    from tinygpt.dataset import describe_prepared
    out = tmp_path / "d"
    prepare(SHAKESPEARE, out, "char", progress=False)
    data, meta = open_prepared(out)
    line = describe_prepared(out, meta)
    # the counts of the data README: 65 characters, a 90/10 split of 1,115,394
    assert line.startswith(f"data: {out}: char tokenizer, vocabulary 65, 1,003,854 train + "
                           f"111,540 val tokens (uint16), prepared from {SHAKESPEARE} "
                           f"(1,115,394 bytes")
    assert hashlib.sha256(SHAKESPEARE.read_bytes()).hexdigest()[:12] in line


def test_batch_keeps_its_random_stream():
    """In-memory batches are drawn exactly as before memory maps existed (same rng calls)."""
    ids = np.random.default_rng(1).integers(0, 65, size=5_000)
    data = Dataset.from_ids(ids, block_size=16)
    rng, ref_rng = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(5):
        x, y = data.batch("train", 4, 16, rng)
        starts = ref_rng.integers(0, len(data.train) - 16, size=4)     # the previous code's draw
        assert np.array_equal(x, np.stack([data.train[s:s + 16] for s in starts]))
        assert np.array_equal(y, np.stack([data.train[s + 1:s + 17] for s in starts]))


# ----- memory ------------------------------------------------------------------------------------------

RSS_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from tinygpt.dataset import open_prepared

    def rss_kb():      # resident memory: all of it, and the private (anonymous) part alone
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])

    start = rss_kb()
    data, meta = open_prepared(sys.argv[1])
    opened = rss_kb()
    rng = np.random.default_rng(0)
    for _ in range(64):                                    # batches spread over the whole file
        x, y = data.batch("train", 16, 256, rng)
    end = rss_kb()
    print(type(data.train).__name__, data.train.dtype, len(data.train),
          opened[0] - start[0], end[0] - opened[0], end[1] - opened[1])
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_memory_does_not_grow_with_the_corpus(tmp_path):
    n = 150_000_000                                        # 300 MB of uint16 ids
    out = tmp_path / "big"
    out.mkdir()
    ids = np.memmap(out / "train.bin", dtype="<u2", mode="w+", shape=(n,))   # sparse: fast to write
    ids[::10_000_000] = 7                                  # a few non-zero ids the batches may hit
    ids.flush()
    del ids
    np.arange(10_000, dtype="<u2").tofile(out / "val.bin")
    (out / "meta.json").write_text(json.dumps({
        "format": "tinygpt-prepared", "version": 1, "tokenizer": {"type": "gpt2"}, "vocab_size": 50257,
        "dtype": "uint16", "train_tokens": n, "val_tokens": 10_000}))
    try:
        result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(out)], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        kind, dtype, length, open_kb, batches_kb, private_kb = result.stdout.split()
        assert (kind, dtype, int(length)) == ("memmap", "uint16", n)
        # Opening reads nothing but meta.json (a copy of the ids would be 300 MB, as int64 1,200 MB).
        assert int(open_kb) < 5_000, f"opening grew RSS by {int(open_kb):,} kB"
        # Batches: no private copy of the corpus, only a bounded number of file pages. The kernel
        # maps whole pages, some around each of the 64 * 16 windows, into the resident size.
        assert int(private_kb) < 8_000, f"private memory grew by {int(private_kb):,} kB"
        assert int(batches_kb) < 60_000, f"RSS grew by {int(batches_kb):,} kB drawing 64 batches"
    finally:
        (out / "train.bin").unlink()


def test_progress_bar(tmp_path, capsys):
    prepare(SHAKESPEARE, tmp_path / "d", "char", progress=True)
    err = capsys.readouterr().err                          # not a terminal: plain lines on stderr
    assert "vocabulary [" in err and "chars 65" in err
    assert "prepare [" in err and "1,115,394/1,115,394" in err and "tokens 1,115,394" in err
