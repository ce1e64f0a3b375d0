"""`tinygpt prepare`: tokenize a corpus once into train.bin / val.bin / meta.json (nanoGPT's layout).

The work is done by `tinygpt.dataset.prepare`; this module is only the command line around it.
"""
from __future__ import annotations

import click

from .options import POSITIVE, Number


@click.command("prepare")
@click.argument("source", type=click.Path(exists=True), metavar="TEXT_FILE_OR_DIR")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), default="char", show_default=True,
              help="Characters (the vocabulary is the corpus's own characters), or GPT-2's "
                   "byte-level BPE.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="The data directory to write (created if needed). A dataset already in it "
                   "(train.bin, val.bin, meta.json) is replaced only once the new one is complete; "
                   "its other files are left alone.")
@click.option("--val-fraction", type=Number(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True,
              help="The fraction of the tokens, taken from the end, that forms the validation split.")
@click.option("--workers", type=POSITIVE,
              help="Processes encoding GPT-2 BPE in parallel (default: all cores). The ids do not "
                   "depend on it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare_cmd(source, tokenizer, out, val_fraction, workers, quiet):
    """Tokenize TEXT_FILE_OR_DIR once, for `tinygpt train --data DATA_DIR`.

    Writes DATA_DIR/train.bin and val.bin (the token ids as raw little-endian uint16, or uint32
    for a vocabulary above 65,536: the layout of nanoGPT's prepare.py, so either tool reads the
    other's) and meta.json (tokenizer, counts, sha256 of the source). Training then maps these
    files instead of reading and tokenizing the text: start-up is instant and memory does not
    grow with the corpus.

    A directory means all its *.txt files, in sorted order, as separate documents, joined by
    GPT-2's <|endoftext|> token (gpt2) or by a newline (char).

    The new files are written into DATA_DIR/.prepare-<pid>.partial/ and moved in at the end, so
    an interrupted prepare leaves DATA_DIR with the dataset it had; the next prepare or train
    there tidies up after it.

    \b
    Examples:
      tinygpt prepare input.txt --out data/shakespeare_char
      tinygpt prepare corpus/ --tokenizer gpt2 --out data/corpus
      tinygpt train --data data/corpus
    """
    import os
    import time
    from ..dataset import prepare
    replacing = os.path.exists(os.path.join(out, "meta.json"))
    start = time.perf_counter()
    try:
        meta = prepare(source, out, tokenizer=tokenizer, val_fraction=val_fraction,
                       workers=workers, progress=not quiet)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise click.ClickException(str(e))
    seconds = time.perf_counter() - start
    n_tokens = meta["train_tokens"] + meta["val_tokens"]
    src = meta["source"]
    docs = f" in {src['documents']} documents" if src["separator"] is not None else ""
    sep = {"\n": "a newline", None: None}.get(src["separator"], src["separator"])
    click.echo(f"{src['bytes']:,} bytes{docs} -> {meta['train_tokens']:,} train + "
               f"{meta['val_tokens']:,} val tokens ({meta['dtype']}, vocabulary "
               f"{meta['vocab_size']:,}, tokenizer {tokenizer}) in {seconds:.1f} s, "
               f"{n_tokens / max(seconds, 1e-9):,.0f} tokens/s")
    if sep:
        click.echo(f"documents are separated by {sep}")
    click.echo(f"wrote {out}/train.bin, val.bin, meta.json"
               f"{' (replacing the dataset it held)' if replacing else ''}; train on it with: "
               f"tinygpt train --data {out}")
