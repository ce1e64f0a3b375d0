"""GPT-2 BPE tokenizing speed, tinygpt against tiktoken, on a corpus of ~16 MB.

    python benchmarks/tokenize_speed.py [--corpus shakespeare|stdlib] [--mb 16] [--rounds 3]
                                        [--workers N]

Four measurements, in alternating rounds in one process (a tokenizer has no thread pools to
keep apart, unlike the training benchmarks):

  tinygpt encode, 1 process   GPT2Tokenizer.encode(text), a fresh tokenizer each round (its
                              word cache starts empty, as in a real run)
  tiktoken, 1 thread          Encoding.encode_ordinary(text)
  tinygpt prepare, N workers  `tinygpt prepare FILE --tokenizer gpt2 --workers N` end to end:
                              load the vocabulary, read, encode in N processes, write
                              train.bin/val.bin/meta.json
  tiktoken, N threads         Encoding.encode_ordinary_batch(chunks, num_threads=N), the same
                              chunks prepare encodes (cut where tokens cannot change)

tokens/s = tokens of the corpus / median wall time. CPU s = the CPU time the side used (all its
threads, and for prepare its worker processes too): on a busy machine wall time suffers, CPU
time much less, so tokens per CPU-second still compares the two implementations fairly. All four
must give the same ids; the script checks it. The tiktoken encoding is built offline from tinygpt's bundled GPT-2 ranks and
tiktoken's own GPT-2 regex (tiktoken.get_encoding("gpt2") would download its files).

Corpora: `shakespeare` is tiny Shakespeare repeated to --mb (after the first 1.1 MB every word is
in tinygpt's cache, which flatters it); `stdlib` is the Python standard library's .py sources,
the first --mb of them (code: many distinct identifiers, so many more cache misses).
"""
from __future__ import annotations

import argparse
import base64
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from train_speed import cpu_count, installed, machine_line, skip_message

from tinygpt.bpe import BUNDLED_RANKS, EOT, GPT2Tokenizer
from tinygpt.dataset import SHAKESPEARE, CHUNK_CHARS, prepare


def corpus_text(name: str, mb: float) -> str:
    size = int(mb * 1e6)
    if name == "shakespeare":
        text = SHAKESPEARE.read_text(encoding="utf-8")
        return (text * (size // len(text) + 1))[:size]
    lib = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    parts, total = [], 0
    for path in sorted(lib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        part = path.read_text(encoding="utf-8", errors="replace")
        parts.append(part)
        total += len(part)
        if total >= size:
            break
    return "".join(parts)[:size]


def chunks_like_prepare(text: str) -> list[str]:
    from tinygpt.bpe import safe_cut
    chunks = []
    while len(text) > CHUNK_CHARS:
        cut = safe_cut(text[:CHUNK_CHARS]) or safe_cut(text) or len(text)
        chunks.append(text[:cut])
        text = text[cut:]
    return chunks + [text]


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def tiktoken_gpt2():
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str
    ranks = {}
    for line in BUNDLED_RANKS.read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name="gpt2_offline", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=["shakespeare", "stdlib"], default="shakespeare")
    p.add_argument("--mb", type=float, default=16, help="corpus size in millions of characters")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=cpu_count(), help="processes / threads for the parallel pair")
    a = p.parse_args()

    print(machine_line())
    text = corpus_text(a.corpus, a.mb)
    chunks = chunks_like_prepare(text)
    have_tiktoken = installed("tiktoken")
    if not have_tiktoken:
        print(skip_message("tiktoken side", "tiktoken"))
    enc = tiktoken_gpt2() if have_tiktoken else None

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.txt"
        source.write_text(text, encoding="utf-8")
        print(f"corpus: {a.corpus}, {len(text):,} characters, {source.stat().st_size:,} bytes, "
              f"{len(chunks)} chunks; {a.rounds} rounds; N = {a.workers}")

        def tinygpt_encode():
            tok = GPT2Tokenizer.from_tiktoken()            # fresh: an empty word cache
            start, cpu_start = time.perf_counter(), cpu_seconds()
            ids = tok.encode(text)
            return time.perf_counter() - start, cpu_seconds() - cpu_start, ids

        def tinygpt_prepare():
            start, cpu_start = time.perf_counter(), cpu_seconds()
            meta = prepare(source, Path(tmp) / "data", "gpt2", workers=a.workers, progress=False)
            return time.perf_counter() - start, cpu_seconds() - cpu_start, meta["train_tokens"] + meta["val_tokens"]

        def tiktoken_one():
            start, cpu_start = time.perf_counter(), cpu_seconds()
            ids = enc.encode_ordinary(text)
            return time.perf_counter() - start, cpu_seconds() - cpu_start, ids

        def tiktoken_batch():
            start, cpu_start = time.perf_counter(), cpu_seconds()
            batches = enc.encode_ordinary_batch(chunks, num_threads=a.workers)
            return time.perf_counter() - start, cpu_seconds() - cpu_start, [i for b in batches for i in b]

        sides = {"tinygpt encode, 1 process": tinygpt_encode}
        if have_tiktoken:
            sides["tiktoken, 1 thread"] = tiktoken_one
        sides[f"tinygpt prepare, {a.workers} workers"] = tinygpt_prepare
        if have_tiktoken:
            sides[f"tiktoken, {a.workers} threads"] = tiktoken_batch

        times = {name: [] for name in sides}
        cpu = {name: [] for name in sides}
        reference = None
        for r in range(a.rounds):
            for name, run in sides.items():
                seconds, cpu_used, ids = run()
                times[name].append(seconds)
                cpu[name].append(cpu_used)
                if isinstance(ids, int):                   # prepare: compare the files' ids
                    import numpy as np
                    data = Path(tmp) / "data"
                    ids = np.concatenate([np.fromfile(data / "train.bin", dtype="<u2"),
                                          np.fromfile(data / "val.bin", dtype="<u2")]).tolist()
                if reference is None:
                    reference = ids
                elif ids != reference:
                    raise SystemExit(f"{name} gives different ids from the first side: a bug")
                print(f"  round {r + 1}: {name:32s} {seconds:7.2f} s   (CPU {cpu[name][-1]:6.2f} s)",
                      flush=True)

    n = len(reference)
    print(f"\n{n:,} tokens ({len(text) / n:.2f} characters per token); all sides give the same ids\n")
    print("| corpus | side | median s | tokens/s | CPU s | tokens per CPU-second |")
    print("| --- | --- | --- | --- | --- | --- |")
    rate = {}
    for name, ts in times.items():
        med, med_cpu = statistics.median(ts), statistics.median(cpu[name])
        rate[name] = n / med
        print(f"| {a.corpus} {len(text) / 1e6:.0f} MB | {name} | {med:.2f} | {rate[name]:,.0f} | "
              f"{med_cpu:.2f} | {n / med_cpu:,.0f} |")
    names = list(sides)
    if have_tiktoken:
        print(f"\nratio tinygpt/tiktoken (>1: tinygpt is faster): 1 process vs 1 thread "
              f"{rate[names[0]] / rate[names[1]]:.2f}; prepare with {a.workers} workers vs "
              f"{a.workers} threads {rate[names[2]] / rate[names[3]]:.2f}")
    per_100mb = 100e6 / (len(text) / n) / rate[names[-2] if have_tiktoken else names[-1]]
    print(f"at that rate `tinygpt prepare --tokenizer gpt2` takes ~{per_100mb:.0f} s per 100 MB of such text")


if __name__ == "__main__":
    main()
