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
"""
from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
SHAKESPEARE = DATA_DIR / "tinyshakespeare.txt"


def read_text(path: str | Path | None = None) -> str:
    """The text of a UTF-8 file (the bundled Shakespeare when path is None)."""
    path = Path(path) if path is not None else SHAKESPEARE
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, not a text file. To train on a directory of .txt files (or on "
            f"a large text), tokenize it once with `tinygpt prepare {path} --out DATA_DIR`, then "
            f"train with `--data DATA_DIR`.")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); "
                         f"convert it to UTF-8 first") from None


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
                    f"{source} is too short: its {name} part has {len(part)} tokens, but one "
                    f"training example needs block_size + 1 = {block_size + 1}. Use a longer "
                    f"text (at least {int((block_size + 1) / min(val_fraction, 1 - val_fraction)) + 1}"
                    f" tokens) or a smaller --block-size.")
        return cls(train, val)

    def batch(self, split: str, batch_size: int, block_size: int, rng: np.random.Generator):
        """x, y of shape (B, T): y is x shifted one token to the left (the next-token targets)."""
        data = self.train if split == "train" else self.val
        if len(data) < block_size + 1:
            raise ValueError(f"the {split} split has {len(data)} tokens, but one example needs "
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

NANOGPT_NOTICE = ("{dir} has train.bin and val.bin but no meta.json: reading them as nanoGPT's "
                  "openwebtext/shakespeare layout, GPT-2 BPE token ids as uint16 (vocabulary 50,257). "
                  "If they hold other ids, run `tinygpt prepare` on the source text instead.")


def is_prepared_dir(path) -> bool:
    """Is `path` a directory meant to be read by `open_prepared` (rather than a text file)?

    True for a directory holding meta.json, train.bin, val.bin or meta.pkl: `open_prepared` then
    either opens it or says exactly what is missing or wrong.
    """
    path = Path(path)
    return path.is_dir() and any((path / name).exists()
                                 for name in ("meta.json", "train.bin", "val.bin", "meta.pkl"))


def open_prepared(data_dir, block_size: int | None = None) -> tuple[Dataset, dict]:
    """Open a prepared data directory: (Dataset whose train/val are read-only memory maps, meta).

    Nothing is read but meta.json: the token files are mapped, and each batch reads only its own
    windows from disk (for a nanoGPT directory, also the first million ids, as a sanity check).
    `meta` is meta.json as a dict; rebuild its tokenizer with
    `tinygpt.tokenizer.tokenizer_from_dict(meta["tokenizer"])`. A directory written by nanoGPT's
    prepare.py (train.bin and val.bin, no meta.json) is read as GPT-2 BPE ids; meta then has
    "assumed": True and a "notice" to show the user. If block_size is given, both splits are
    checked to hold at least one example.
    """
    data_dir = Path(data_dir)
    meta_file = data_dir / "meta.json"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"prepared data directory not found: {data_dir}")
    if meta_file.exists():
        meta = _read_meta(meta_file)
    elif (data_dir / "meta.pkl").exists():
        raise ValueError(
            f"{data_dir} has a meta.pkl (nanoGPT's character vocabulary, a Python pickle) but no "
            f"meta.json. tinygpt never unpickles files: a pickle can run any code when loaded. "
            f"Prepare the source text again with tinygpt, which writes the same train.bin/val.bin "
            f"plus a meta.json, e.g. for nanoGPT's shakespeare_char: "
            f"`tinygpt prepare input.txt --tokenizer char --out {data_dir}`.")
    elif (data_dir / "train.bin").exists() or (data_dir / "val.bin").exists():
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "tokenizer": {"type": "gpt2"},
                "vocab_size": GPT2_VOCAB_SIZE, "dtype": "uint16", "assumed": True,
                "notice": NANOGPT_NOTICE.format(dir=data_dir)}
    else:
        raise FileNotFoundError(
            f"{data_dir} is not a prepared data directory (no meta.json, train.bin or val.bin). "
            f"Make one with `tinygpt prepare TEXT_FILE_OR_DIR --out {data_dir}`.")

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
            raise ValueError(f"{path} holds {len(splits[split]):,} tokens, but one training example "
                             f"needs block_size + 1 = {block_size + 1}; use a smaller --block-size")
    if meta.get("assumed"):
        # A cheap sanity check of the assumption (the first million ids, not the corpus).
        head = int(splits["train"][:1_000_000].max())
        if head >= GPT2_VOCAB_SIZE:
            raise ValueError(f"{data_dir / 'train.bin'} holds id {head}, which is not a GPT-2 token "
                             f"(0..{GPT2_VOCAB_SIZE - 1}); without a meta.json tinygpt cannot know its "
                             f"tokenizer. Prepare the source text with `tinygpt prepare`.")
    return Dataset(splits["train"], splits["val"]), meta


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
    if not source.is_file():
        raise FileNotFoundError(f"text file or directory not found: {source}")
    return [source]


def _read_documents(files: list[Path], digests: dict | None = None, chunk_chars: int = CHUNK_CHARS):
    """(document index, text chunk, its size in bytes) over all files, cut where no token changes.

    digests, if given, receives {file: (byte count, sha256 hex)} as each file is finished.
    """
    from .bpe import safe_cut
    for doc, path in enumerate(files):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        sha, size, pending = hashlib.sha256(), 0, ""
        with open(path, "rb") as f:
            while True:
                raw = f.read(READ_BYTES)
                sha.update(raw)
                size += len(raw)
                try:
                    pending += decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    at = size - len(raw) + e.start
                    raise ValueError(f"{path} is not UTF-8 text (near byte {at:,}: {e.reason}); "
                                     f"convert it to UTF-8 first") from None
                # Cut near chunk_chars; if there is no safe place there (no space, no newline),
                # at the last one in what has been read so far.
                while len(pending) >= chunk_chars and (
                        cut := safe_cut(pending[:chunk_chars]) or safe_cut(pending)) > 0:
                    chunk, pending = pending[:cut], pending[cut:]
                    yield doc, chunk, len(chunk.encode("utf-8"))
                if not raw:
                    break
        if pending:
            yield doc, pending, len(pending.encode("utf-8"))
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
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    files = source_files(source)
    total_bytes = sum(p.stat().st_size for p in files)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok, separator = _prepare_tokenizer(tokenizer, files, source, total_bytes, progress, chunk_chars)
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
    if workers is None:                                   # the cores this process may use
        workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    if tokenizer == "char" or total_bytes <= 4 * chunk_chars:
        workers = 1     # char ids are a NumPy lookup; a few chunks are not worth starting a pool

    train_tmp, val_tmp = out / "train.bin.tmp", out / "val.bin.tmp"
    (out / "meta.json").unlink(missing_ok=True)   # until the new one is written, out is incomplete
    digests: dict = {}
    try:
        n_tokens, documents = _write_ids(train_tmp, files, digests, tok, separator, dtype,
                                         workers, total_bytes, progress, chunk_chars)
        n_train = int(n_tokens * (1 - val_fraction))          # as Dataset.from_ids splits
        if n_train < 1 or n_tokens - n_train < 1:
            raise ValueError(f"{source} gives only {n_tokens} tokens: too few to split into training "
                             f"and validation parts with --val-fraction {val_fraction}")
        _move_tail(train_tmp, val_tmp, n_train, np.dtype(DTYPES[dtype]))
        os.replace(train_tmp, out / "train.bin")
        os.replace(val_tmp, out / "val.bin")
    finally:
        for tmp in (train_tmp, val_tmp):
            tmp.unlink(missing_ok=True)

    source = Path(source)
    entries = [{"name": p.name if source.is_dir() else str(p), "bytes": digests[p][0],
                "sha256": digests[p][1]} for p in files]
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "written_by": "tinygpt prepare",
        "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size, "dtype": dtype,
        "train_tokens": n_train, "val_tokens": n_tokens - n_train, "val_fraction": val_fraction,
        "source": {
            "path": str(source), "bytes": total_bytes, "documents": documents,
            "separator": None if len(files) == 1 else ("<|endoftext|>" if tokenizer == "gpt2" else "\n"),
            # one file: its sha256 (= `sha256sum FILE`); a directory: the sha256 of the lines
            # "<sha256>  <name>\n", one per file in sorted order (= `sha256sum *.txt | sha256sum`)
            "sha256": entries[0]["sha256"] if not source.is_dir() else hashlib.sha256(
                "".join(f"{e['sha256']}  {e['name']}\n" for e in entries).encode()).hexdigest(),
            "files": entries,
        },
    }
    # meta.json last: a directory with a meta.json is a complete preparation.
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "meta.json")
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
        raise ValueError(f"{source}: the text is empty")
    tok = CharTokenizer("".join(sorted(chars)))
    return tok, (tok.encode_array("\n") if len(files) > 1 else None)


def _write_ids(path: Path, files, digests: dict, tok, separator, dtype: str, workers: int,
               total_bytes: int, progress: bool, chunk_chars: int) -> tuple[int, int]:
    """Every document's ids into `path`, separated; returns (tokens written, documents). Each
    file's size and sha256 go into digests as it is read."""
    from .progress import Progress
    n_tokens, done, last_doc, documents = 0, 0, -1, 0
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
