"""Text -> token ids -> random training batches.

The bundled corpus is tiny Shakespeare (1,115,394 characters, public domain), in tinygpt/data/.
A small text is read and tokenized in memory (`read_text`, `Dataset.from_ids`). A large one is
tokenized once by `tinygpt prepare` (`prepare` below) into a *prepared data directory*, which
training then reads through memory maps (`open_prepared`): nothing is re-read or re-tokenized at
start-up or on resume, and memory does not grow with the corpus.

A prepared data directory uses nanoGPT's layout, so the two can share data:

    train.bin   the training token ids, a raw little-endian uint16 array (uint32 if the
                vocabulary has more than 65,536 tokens): np.memmap(path, dtype="<u2", mode="r")
    val.bin     the validation token ids, the same way
    meta.json   tinygpt's description: the tokenizer (for char: its vocabulary), the dtype, the
                token counts, the source files with their sha256, the format version

nanoGPT writes a meta.pkl (a pickle) for its character datasets; tinygpt never unpickles anything,
see `open_prepared` for what it does instead.

`prepare` never writes over the dataset a directory holds: it writes the new one whole into
DIR/.prepare-<pid>.partial/, then moves it in (see `_swap_in`), so a directory read by tinygpt is
always one whole dataset, the old one or the new one, whenever `prepare` is killed. Other files
in DIR are left alone.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
import re
import shutil
import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
SHAKESPEARE = DATA_DIR / "tinyshakespeare.txt"


def read_text(path: str | Path | None = None) -> str:
    """The text of a UTF-8 file (the bundled Shakespeare when path is None).

    A byte-order mark at the very start (EF BB BF, which some Windows editors write) is not
    text and is dropped, as Python's "utf-8-sig" does; `prepare` drops it the same way."""
    path = Path(path) if path is not None else SHAKESPEARE
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, not a text file. To train on a directory of .txt files (or on "
            f"a large text), tokenize it once with `tinygpt prepare {path} --out DATA_DIR`, then "
            f"train with `--data DATA_DIR`.")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")       # not "utf-8-sig": its error offsets skip the BOM
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {bom + e.start}: {e.reason}); "
                         f"convert it to UTF-8 first") from None


def plural(n: int, word: str) -> str:
    """ "1 token", "2 tokens", "1,000 tokens" """
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@dataclass
class Dataset:
    """Token ids split 90/10 into train and val, and seeded random batches from them."""
    train: np.ndarray    # (N_train,) int64 in memory, or a read-only uint16/uint32 np.memmap
    val: np.ndarray      # (N_val,)   the same

    @classmethod
    def from_ids(cls, ids: np.ndarray, block_size: int, val_fraction: float = 0.1,
                 source: str = "the text") -> "Dataset":
        ids = np.asarray(ids, dtype=np.int64)
        n_train = int(len(ids) * (1 - val_fraction))
        train, val = ids[:n_train], ids[n_train:]
        for name, part in (("training", train), ("validation", val)):
            if len(part) < block_size + 1:
                raise ValueError(
                    f"{source} is too short: its {name} part has {plural(len(part), 'token')}, but one "
                    f"training example needs block_size + 1 = {block_size + 1}. Use a longer "
                    f"text (at least {int((block_size + 1) / min(val_fraction, 1 - val_fraction)) + 1}"
                    f" tokens) or a smaller --block-size.")
        return cls(train, val)

    def batch(self, split: str, batch_size: int, block_size: int, rng: np.random.Generator):
        """x, y of shape (B, T): y is x shifted one token to the left (the next-token targets)."""
        data = self.train if split == "train" else self.val
        if len(data) < block_size + 1:
            raise ValueError(f"the {split} split has {plural(len(data), 'token')}, but one example needs "
                             f"block_size + 1 = {block_size + 1}; use a smaller --block-size")
        starts = rng.integers(0, len(data) - block_size, size=batch_size)      # (B,)
        offsets = starts[:, None] + np.arange(block_size)                      # (B, T)
        # Gathering from a memory map reads only these B windows from the file; the ids are stored
        # as uint16/uint32 and widened here (for in-memory int64 ids, asarray copies nothing).
        x = np.asarray(data[offsets], dtype=np.int64)                          # (B, T)
        y = np.asarray(data[offsets + 1], dtype=np.int64)                      # (B, T)
        return x, y


# ---------------------------------------------------------------------------------------------------
# Prepared data directories: reading
# ---------------------------------------------------------------------------------------------------

FORMAT = "tinygpt-prepared"
FORMAT_VERSION = 1
DTYPES = {"uint16": "<u2", "uint32": "<u4"}     # always little-endian on disk, as nanoGPT's files are
GPT2_VOCAB_SIZE = 50257
BINS = ("train.bin", "val.bin")

NANOGPT_NOTICE = ("{dir} has train.bin and val.bin but no meta.json: reading them as nanoGPT's "
                  "openwebtext/shakespeare layout, GPT-2 BPE token ids as uint16 (vocabulary 50,257). "
                  "If they hold other ids, run `tinygpt prepare` on the source text instead.")


def is_prepared_dir(path) -> bool:
    """Is `path` a directory meant to be read by `open_prepared` (rather than a text file)?

    True for a directory holding meta.json, train.bin, val.bin or meta.pkl, or what an
    interrupted `tinygpt prepare` left: `open_prepared` then either opens it or says exactly
    what is missing or wrong.
    """
    path = Path(path)
    return path.is_dir() and (any((path / name).exists() for name in ("meta.json", *BINS, "meta.pkl"))
                              or bool(_partials(path) or _old_leftovers(path)))


def open_prepared(data_dir, block_size: int | None = None) -> tuple[Dataset, dict]:
    """Open a prepared data directory: (Dataset whose train/val are read-only memory maps, meta).

    Nothing is read but meta.json: the token files are mapped, and each batch reads only its own
    windows from disk (for a nanoGPT directory, also the first million ids, as a sanity check).
    `meta` is meta.json as a dict; rebuild its tokenizer with
    `tinygpt.tokenizer.tokenizer_from_dict(meta["tokenizer"])`. A directory written by nanoGPT's
    prepare.py (train.bin and val.bin, no meta.json) is read as GPT-2 BPE ids; meta then has
    "assumed": True. If block_size is given, both splits are checked to hold at least one example.

    What a killed `tinygpt prepare` left is tidied first (`_recover`): a new dataset it had
    finished is moved in, an unfinished one removed. meta["notice"], if there, says what was
    done or assumed; `describe_prepared` words it all for the user.
    """
    data_dir = Path(data_dir)
    meta_file = data_dir / "meta.json"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"prepared data directory not found: {data_dir}")
    notes = _recover(data_dir, have_lock=False)
    if meta_file.exists():
        meta = _read_meta(meta_file)
        writing = [p for p in _partials(data_dir)
                   if not (p / "meta.json").exists() and _alive(_partial_pid(p))]
        if writing:      # a prepare that is running now: this run keeps the dataset there now
            notes.append(f"`tinygpt prepare` (PID {_partial_pid(writing[0])}) is writing a new "
                         f"dataset into {data_dir}; this reads the one there now, which it will "
                         f"replace when it is done.")
    elif _partials(data_dir) or _old_leftovers(data_dir):
        raise ValueError(_interrupted_message(data_dir))
    elif (data_dir / "meta.pkl").exists():
        raise ValueError(
            f"{data_dir} has a meta.pkl (nanoGPT's character vocabulary, a Python pickle) but no "
            f"meta.json. tinygpt never unpickles files: a pickle can run any code when loaded. "
            f"Prepare the source text again with tinygpt, which writes the same train.bin/val.bin "
            f"plus a meta.json, e.g. for nanoGPT's shakespeare_char: "
            f"`tinygpt prepare input.txt --tokenizer char --out {data_dir}`.")
    elif (data_dir / "train.bin").exists() or (data_dir / "val.bin").exists():
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "tokenizer": {"type": "gpt2"},
                "vocab_size": GPT2_VOCAB_SIZE, "dtype": "uint16", "assumed": True}
        notes.append(NANOGPT_NOTICE.format(dir=data_dir))
    else:
        texts = sorted(data_dir.glob("*.txt"))
        what = f"{data_dir} is a directory but not a prepared dataset (no meta.json, train.bin or val.bin)"
        if texts:
            raise ValueError(f"{what}. To train on its {plural(len(texts), '*.txt file')}, tokenize "
                             f"them once with `tinygpt prepare {data_dir} --out DATA_DIR`, then "
                             f"train with `--data DATA_DIR`; --data also takes one UTF-8 text file.")
        raise ValueError(f"{what}. --data takes a UTF-8 text file, or a directory written by "
                         f"`tinygpt prepare TEXT_FILE_OR_DIR --out DATA_DIR`.")
    if notes:
        meta["notice"] = " ".join(notes)

    dtype = np.dtype(DTYPES[meta["dtype"]])
    splits = {}
    for split in ("train", "val"):
        path = data_dir / f"{split}.bin"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; prepare the data again "
                                    f"with `tinygpt prepare`")
        size, expected = path.stat().st_size, meta.get(f"{split}_tokens")
        if expected is not None and size != expected * dtype.itemsize:
            raise ValueError(f"{path} has {size:,} bytes, but meta.json says {expected:,} "
                             f"{meta['dtype']} ids = {expected * dtype.itemsize:,} bytes; the file "
                             f"is truncated or from another preparation. Run `tinygpt prepare` again.")
        if size == 0 or size % dtype.itemsize:
            raise ValueError(f"{path} has {size:,} bytes, not a whole number of {meta['dtype']} ids "
                             f"(or none); the file is truncated. Prepare the data again.")
        splits[split] = np.memmap(path, dtype=dtype, mode="r")                 # (N,) no copy
        _expect_random_reads(splits[split])
        if block_size is not None and len(splits[split]) < block_size + 1:
            raise ValueError(f"{path} holds {plural(len(splits[split]), 'token')}, but one training example "
                             f"needs block_size + 1 = {block_size + 1}; use a smaller --block-size")
    if meta.get("assumed"):
        # A cheap sanity check of the assumption (the first million ids, not the corpus).
        head = int(splits["train"][:1_000_000].max())
        if head >= GPT2_VOCAB_SIZE:
            raise ValueError(f"{data_dir / 'train.bin'} holds id {head}, which is not a GPT-2 token "
                             f"(0..{GPT2_VOCAB_SIZE - 1}); without a meta.json tinygpt cannot know its "
                             f"tokenizer. Prepare the source text with `tinygpt prepare`.")
    return Dataset(splits["train"], splits["val"]), meta


def describe_prepared(data_dir, meta: dict) -> str:
    """One line for `tinygpt train` to print: which dataset this is (and any notice)."""
    if meta.get("assumed"):
        return meta["notice"]
    line = f"data: {data_dir}: {meta['tokenizer'].get('type')} tokenizer"
    if isinstance(meta.get("vocab_size"), int):
        line += f", vocabulary {meta['vocab_size']:,}"
    if isinstance(meta.get("train_tokens"), int) and isinstance(meta.get("val_tokens"), int):
        line += f", {meta['train_tokens']:,} train + {plural(meta['val_tokens'], 'val token')}"
    line += f" ({meta['dtype']})"
    src = meta.get("source")
    if isinstance(src, dict) and src.get("path"):
        docs = f" in {plural(src['documents'], 'document')}" if src.get("separator") else ""
        line += (f", prepared from {src['path']} ({src.get('bytes', 0):,} bytes{docs}, "
                 f"sha256 {str(src.get('sha256'))[:12]}...)")
    return f"{line}\n{meta['notice']}" if meta.get("notice") else line


def _expect_random_reads(ids: np.memmap) -> None:
    """Tell the kernel that this map is read at random places (each batch: B short windows).

    Otherwise each page fault also reads ahead up to the device's read_ahead_kb (often 128 kB,
    8 MB on some virtual disks) around the window: wasted disk reads once the corpus is larger
    than the page cache, and a resident size several times what the batches touched.
    """
    madvise = getattr(getattr(ids, "_mmap", None), "madvise", None)     # Python >= 3.8, POSIX
    if madvise is not None and hasattr(mmap, "MADV_RANDOM"):
        madvise(mmap.MADV_RANDOM)


def _read_meta(meta_file: Path) -> dict:
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_file} is not valid JSON ({e}); run `tinygpt prepare` again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} is not a tinygpt prepared-data description "
                         f'(expected "format": "{FORMAT}"); run `tinygpt prepare` again')
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{meta_file} has format version {meta.get('version')!r}; this tinygpt reads "
                         f"version {FORMAT_VERSION}. Run `tinygpt prepare` again, or upgrade tinygpt.")
    if meta.get("dtype") not in DTYPES or not isinstance(meta.get("tokenizer"), dict):
        raise ValueError(f"{meta_file}: dtype must be one of {sorted(DTYPES)} and tokenizer a JSON "
                         f"object, got dtype {meta.get('dtype')!r}; run `tinygpt prepare` again")
    return meta


# ---------------------------------------------------------------------------------------------------
# Prepared data directories: writing (`tinygpt prepare`)
# ---------------------------------------------------------------------------------------------------
#
# The corpus is streamed: read 4 MB of bytes at a time, decoded, hashed, cut into chunks of about
# CHUNK_CHARS characters at places where cutting cannot change the tokens (`bpe.safe_cut`), each
# chunk encoded (by a pool of worker processes for GPT-2's BPE) and appended to train.bin. Memory
# holds a few chunks, whatever the size of the corpus. At the end the last val_fraction of the ids
# moves to val.bin - the same split as `Dataset.from_ids`, so a prepared text gives the very
# batches that training on the text file gives.

CHUNK_CHARS = 1 << 20           # ~1 M characters per chunk (~300 k GPT-2 tokens)
READ_BYTES = 4 << 20


def source_files(source) -> list[Path]:
    """A text file -> [it]; a directory -> its *.txt files in sorted order (not recursive)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.glob("*.txt") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{source} holds no *.txt files; give a text file or a directory "
                                    f"of UTF-8 .txt files")
        return files
    if not source.exists():
        raise FileNotFoundError(f"text file or directory not found: {source}")
    if not source.is_file():
        raise ValueError(f"{source} is neither a regular file nor a directory (a device, a pipe or "
                         f"a socket); `tinygpt prepare` reads its text more than once, so save the "
                         f"text to a file first and give that file, or a directory of .txt files")
    return [source]


def _empty_message(source, files: list[Path]) -> str:
    what = (f"{source} is empty" if len(files) == 1 and Path(source).is_file()
            else f"the *.txt files in {source} ({len(files)}) are all empty")
    return f"{what}: there is no text to prepare. Give a UTF-8 text file with some text in it."


def _read_documents(files: list[Path], digests: dict | None = None, chunk_chars: int = CHUNK_CHARS):
    """(document index, text chunk, its size in bytes) over all files, cut where no token changes.

    digests, if given, receives {file: (byte count, sha256 hex)} as each file is finished. A
    byte-order mark at the start of a file is dropped, as `read_text` drops it.
    """
    from .bpe import safe_cut
    for doc, path in enumerate(files):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        sha, size, pending, skipped = hashlib.sha256(), 0, "", 0
        with open(path, "rb") as f:
            while True:
                raw = f.read(READ_BYTES)
                sha.update(raw)                          # the file's sha256: BOM and all
                data = raw
                if size == 0 and raw.startswith(codecs.BOM_UTF8):
                    data, skipped = raw[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
                size += len(raw)
                held = len(decoder.getstate()[0])        # the end of a character cut by the read
                try:
                    pending += decoder.decode(data, final=not raw)
                except UnicodeDecodeError as e:
                    at = size - len(data) - held + e.start
                    raise ValueError(f"{path} is not UTF-8 text (near byte {at:,}: {e.reason}); "
                                     f"convert it to UTF-8 first") from None
                # Cut near chunk_chars; if there is no safe place there (no space, no newline),
                # at the last one in what has been read so far.
                while len(pending) >= chunk_chars and (
                        cut := safe_cut(pending[:chunk_chars]) or safe_cut(pending)) > 0:
                    chunk, pending = pending[:cut], pending[cut:]
                    yield doc, chunk, len(chunk.encode("utf-8")) + skipped
                    skipped = 0                          # the BOM's bytes count once, for the bar
                if not raw:
                    break
        if pending:
            yield doc, pending, len(pending.encode("utf-8")) + skipped
        if digests is not None:
            digests[path] = (size, sha.hexdigest())


_worker_tokenizer = None


def _init_worker(tokenizer_dict: dict) -> None:
    global _worker_tokenizer
    if _worker_tokenizer is None:     # forked workers inherit the parent's (loading one costs ~0.3 s)
        from .tokenizer import tokenizer_from_dict
        _worker_tokenizer = tokenizer_from_dict(tokenizer_dict)


def _encode_chunk(text: str, dtype: str) -> np.ndarray:
    tok = _worker_tokenizer
    ids = tok.encode_array(text) if hasattr(tok, "encode_array") else tok.encode(text)
    return np.asarray(ids).astype(dtype)


def _encoded(chunks, tokenizer, dtype: str, workers: int):
    """(document, ids, bytes) for each chunk, in order; with workers > 1, encoded in that many processes.

    At most 2 * workers chunks are in flight, so memory stays bounded however long the corpus.
    """
    global _worker_tokenizer
    _worker_tokenizer = tokenizer
    if workers <= 1:
        for doc, text, nbytes in chunks:
            yield doc, _encode_chunk(text, dtype), nbytes
        return
    import multiprocessing
    with multiprocessing.get_context().Pool(workers, _init_worker, (tokenizer.to_dict(),)) as pool:
        pending = deque()
        for doc, text, nbytes in chunks:
            pending.append((doc, pool.apply_async(_encode_chunk, (text, dtype)), nbytes))
            if len(pending) >= 2 * workers:
                doc_, result, nbytes_ = pending.popleft()
                yield doc_, result.get(), nbytes_
        while pending:
            doc_, result, nbytes_ = pending.popleft()
            yield doc_, result.get(), nbytes_


def prepare(source, out, tokenizer: str = "char", val_fraction: float = 0.1, workers: int | None = None,
            progress: bool = True, chunk_chars: int = CHUNK_CHARS) -> dict:
    """Tokenize a text file, or the *.txt files of a directory, into a prepared data directory.

    Documents (the files of a directory, in sorted order) are joined with a separator: GPT-2's
    <|endoftext|> token for gpt2, a newline for char. A literal "<|endoftext|>" inside a text is
    encoded as ordinary text. Returns the meta dict written to out/meta.json.

    The new dataset is written whole into out/.prepare-<pid>.partial/ and then moved in
    (`_swap_in`); until then `out` keeps the dataset it had, if any. Only out/train.bin,
    val.bin and meta.json are replaced; other files in `out` are left alone.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    files = source_files(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _writer_lock(out) as have_lock:
        _recover(out, have_lock)
        partial = out / f".prepare-{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)       # this PID's own, from a killed run
        partial.mkdir()
        _kill_point("start")
        try:
            meta = _write_dataset(source, files, partial, tokenizer, val_fraction, workers,
                                  progress, chunk_chars)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        _kill_point("commit")
        _swap_in(partial, out)
    return meta


def _write_dataset(source, files, partial: Path, kind: str, val_fraction: float, workers,
                   progress: bool, chunk_chars: int) -> dict:
    """train.bin, val.bin, then meta.json into `partial`: meta.json last, because a partial
    directory holding a meta.json is a finished dataset (`_recover` moves it in)."""
    total_bytes = sum(p.stat().st_size for p in files)
    tok, separator = _prepare_tokenizer(kind, files, source, total_bytes, progress, chunk_chars)
    _kill_point("vocabulary")
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
    if workers is None:                                   # the cores this process may use
        from tensor.kernels.threads import usable_cores
        workers = usable_cores()
    if kind == "char" or total_bytes <= 4 * chunk_chars:
        workers = 1     # char ids are a NumPy lookup; a few chunks are not worth starting a pool

    train_file, val_file = partial / "train.bin", partial / "val.bin"
    digests: dict = {}
    n_tokens, documents = _write_ids(train_file, files, digests, tok, separator, dtype,
                                     workers, total_bytes, progress, chunk_chars)
    _kill_point("ids")
    if n_tokens == 0:
        raise ValueError(_empty_message(source, files))
    n_train = int(n_tokens * (1 - val_fraction))          # as Dataset.from_ids splits
    if n_train < 1 or n_tokens - n_train < 1:
        raise ValueError(f"{source} gives only {plural(n_tokens, 'token')}: too few to split into "
                         f"training and validation parts with --val-fraction {val_fraction}")
    _move_tail(train_file, val_file, n_train, np.dtype(DTYPES[dtype]))
    _kill_point("split")

    source = Path(source)
    entries = [{"name": p.name if source.is_dir() else str(p), "bytes": digests[p][0],
                "sha256": digests[p][1]} for p in files]
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "written_by": "tinygpt prepare",
        "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size, "dtype": dtype,
        "train_tokens": n_train, "val_tokens": n_tokens - n_train, "val_fraction": val_fraction,
        "source": {
            "path": str(source), "bytes": total_bytes, "documents": documents,
            "separator": None if len(files) == 1 else ("<|endoftext|>" if kind == "gpt2" else "\n"),
            # one file: its sha256 (= `sha256sum FILE`); a directory: the sha256 of the lines
            # "<sha256>  <name>\n", one per file in sorted order (= `sha256sum *.txt | sha256sum`)
            "sha256": entries[0]["sha256"] if not source.is_dir() else hashlib.sha256(
                "".join(f"{e['sha256']}  {e['name']}\n" for e in entries).encode()).hexdigest(),
            "files": entries,
        },
    }
    for path in (train_file, val_file):      # on disk before the meta.json that vouches for them
        _fsync(path)
    tmp = partial / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, partial / "meta.json")   # the commit: from here on the new dataset is whole
    _fsync(partial)
    return meta


def _prepare_tokenizer(kind: str, files, source, total_bytes: int, progress: bool,
                       chunk_chars: int):
    """(tokenizer, the ids that separate two documents or None). A character vocabulary must be
    known before the first id is written: one extra pass over the text collects it."""
    from .progress import Progress
    from .tokenizer import CharTokenizer
    if kind == "gpt2":
        from .bpe import GPT2Tokenizer
        tok = GPT2Tokenizer.from_tiktoken()
        return tok, np.array([tok.eot_token])
    if kind != "char":
        raise ValueError(f"tokenizer must be 'char' or 'gpt2', got {kind!r}")
    chars: set[str] = {"\n"} if len(files) > 1 else set()
    bar = Progress(total_bytes, desc="vocabulary", unit="B", enabled=progress)
    done = 0
    for _, text, nbytes in _read_documents(files, chunk_chars=chunk_chars):
        chars.update(text)
        done += nbytes
        bar.update(done, chars=len(chars))
    bar.close()
    if not chars:
        raise ValueError(_empty_message(source, files))
    tok = CharTokenizer("".join(sorted(chars)))
    return tok, (tok.encode_array("\n") if len(files) > 1 else None)


def _write_ids(path: Path, files, digests: dict, tok, separator, dtype: str, workers: int,
               total_bytes: int, progress: bool, chunk_chars: int) -> tuple[int, int]:
    """Every document's ids into `path`, separated; returns (tokens written, documents). Each
    file's size and sha256 go into digests as it is read."""
    from .progress import Progress
    n_tokens, done, last_doc, documents, chunks_written = 0, 0, -1, 0, 0
    bar = Progress(total_bytes, desc="prepare", unit="B", enabled=progress)
    try:
        with open(path, "wb") as f:
            chunks = _read_documents(files, digests, chunk_chars)
            for doc, ids, nbytes in _encoded(chunks, tok, dtype, workers):
                if doc != last_doc and len(ids):
                    if documents:
                        separator.astype(DTYPES[dtype]).tofile(f)
                        n_tokens += len(separator)
                    last_doc, documents = doc, documents + 1
                ids.astype(DTYPES[dtype], copy=False).tofile(f)
                n_tokens += len(ids)
                chunks_written += 1
                _kill_point(f"chunk{chunks_written}")
                done += nbytes
                bar.update(done, tokens=f"{n_tokens:,}")
    finally:
        bar.close()
    return n_tokens, documents


def _move_tail(train_file: Path, val_file: Path, n_train: int, dtype: np.dtype) -> None:
    """Copy ids [n_train:] of train_file to val_file, then cut train_file to its first n_train ids."""
    ids = np.memmap(train_file, dtype=dtype, mode="r")
    step = 1 << 24
    with open(val_file, "wb") as f:
        for start in range(n_train, len(ids), step):
            np.asarray(ids[start:start + step]).tofile(f)
    del ids                                               # release the map before truncating
    os.truncate(train_file, n_train * dtype.itemsize)


# ---------------------------------------------------------------------------------------------------
# Replacing a dataset in one step, whenever the process is killed
# ---------------------------------------------------------------------------------------------------
#
# nanoGPT's layout fixes the names train.bin, val.bin and meta.json, so the new dataset cannot
# be one directory renamed over the old (which would also take the user's other files with it).
# Instead:
#
#   1. out/.prepare-<pid>.partial/ receives train.bin, val.bin, then meta.json (written last, by
#      a rename). A partial directory without meta.json is unfinished; with one, finished.
#   2. The three files are moved into out, in the order of SWAP_ORDER, meta.json last.
#
# A kill in 1 leaves out as it was, plus an unfinished partial directory that the next
# `prepare` or `open_prepared` removes. A kill in 2 leaves a partial directory that still holds
# meta.json, and the next `prepare` or `open_prepared` finishes the moves (`_recover`) before it
# reads anything: each move is an atomic rename and a move already done is skipped, so this
# also holds when two processes finish the same swap at once. What tinygpt reads is therefore
# always one whole dataset, the old or the new.

SWAP_ORDER = ("train.bin", "val.bin", "meta.json")
_PARTIAL = re.compile(r"\.prepare-(\d+)\.partial$")
OLD_LEFTOVERS = ("train.bin.tmp", "val.bin.tmp", "meta.json.tmp")   # tinygpt before the swap


def _swap_in(partial: Path, out: Path) -> None:
    """Move a finished dataset's files from `partial` into `out` (or what is left of them)."""
    for name in SWAP_ORDER:
        try:
            os.replace(partial / name, out / name)
        except FileNotFoundError:
            pass                          # moved already, by a killed process or another one
        _kill_point(name)
    _fsync(out)
    shutil.rmtree(partial, ignore_errors=True)


def _recover(out: Path, have_lock: bool) -> list[str]:
    """Finish or remove what killed `tinygpt prepare` runs left in `out`; returns what was done.

    With the writer's lock held, no other prepare is running, so every partial directory is
    stale; without it (`open_prepared`), an unfinished one is removed only if its PID is gone.
    """
    notes = []
    for partial in _partials(out):
        pid = _partial_pid(partial)
        if (partial / "meta.json").exists():          # finished: move it in, or what is left
            try:
                _swap_in(partial, out)
            except OSError as e:
                raise ValueError(
                    f"{out}: a `tinygpt prepare` (PID {pid}) was interrupted while it moved its "
                    f"finished dataset in from {partial.name}, and the move cannot be completed "
                    f"({e.strerror or e}). Run `tinygpt prepare` again with write access to {out}."
                ) from None
            if not _alive(pid):
                notes.append(f"finished moving in the dataset that an interrupted `tinygpt "
                             f"prepare` (PID {pid}) had written.")
        elif pid != os.getpid() and (have_lock or not _alive(pid)):
            try:
                with os.scandir(partial) as entries:
                    empty = not any(entries)          # killed after its last move: all is done
            except OSError:
                empty = True
            shutil.rmtree(partial, ignore_errors=True)
            if not empty and not partial.exists():
                notes.append(f"removed {partial}, the unfinished output of an interrupted "
                             f"`tinygpt prepare` (PID {pid}).")
    if have_lock:
        for name in OLD_LEFTOVERS:
            (out / name).unlink(missing_ok=True)
    return notes


def _partials(out: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(out)
                      if _PARTIAL.match(e.name) and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _partial_pid(partial: Path) -> int:
    return int(_PARTIAL.match(partial.name).group(1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)                   # signal 0: checks that the process exists, sends nothing
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):    # exists (another user's), or cannot tell: keep its files
        return True
    return True


def _old_leftovers(out: Path) -> list[str]:
    return [name for name in OLD_LEFTOVERS if (out / name).exists()]


def _interrupted_message(out: Path) -> str:
    running = [_partial_pid(p) for p in _partials(out) if _alive(_partial_pid(p))]
    if running:
        return (f"{out} has no dataset yet: `tinygpt prepare` (PID {running[0]}) is writing one "
                f"now. Wait for it to finish, then try again.")
    left = [p.name for p in _partials(out)] + _old_leftovers(out)
    return (f"{out} has no meta.json, only what an interrupted `tinygpt prepare` left "
            f"({', '.join(left)}): the last preparation did not finish, and these files are not "
            f"a dataset (nor nanoGPT's train.bin/val.bin). Run `tinygpt prepare TEXT_FILE_OR_DIR "
            f"--out {out}` again.")


class _writer_lock:
    """One `tinygpt prepare` per directory at a time: an flock on the directory itself (no lock
    file is added to it), which the kernel drops when the process dies, however it dies.
    `with _writer_lock(out) as have_lock:` - False where flock is not available (no fcntl, or a
    file system without locks); `_recover` then goes by PIDs alone."""

    def __init__(self, out: Path):
        self.out, self.fd = out, None

    def __enter__(self) -> bool:
        try:
            import fcntl
        except ImportError:
            return False
        fd = os.open(self.out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pids = [str(_partial_pid(p)) for p in _partials(self.out)] or ["?"]
            raise ValueError(f"another `tinygpt prepare` (PID {pids[0]}) is writing {self.out}; "
                             f"wait for it to finish, or give another --out") from None
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)             # closing drops the lock
            self.fd = None


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') writes to the disk: best effort."""
    from tensor.io import _fsync_directory        # opens read-only and fsyncs: a file works too
    _fsync_directory(str(path))


def _kill_point(step: str) -> None:
    """Test hook: TINYGPT_TEST_KILL_AT="prepare:<step>" kills this process with SIGKILL at that
    step of `prepare` ("start", "vocabulary", "chunk<n>" after the n-th chunk of ids, "ids",
    "split", "commit", then the name of each file moved in), so tests/test_prepare_kill.py can
    check that a kill anywhere leaves one whole dataset. Does nothing otherwise."""
    if os.environ.get("TINYGPT_TEST_KILL_AT") == f"prepare:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
