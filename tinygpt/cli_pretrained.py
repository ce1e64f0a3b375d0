"""`tinygpt generate`, `tinygpt perplexity`, `tinygpt export`: pretrained GPT-2 and Hugging Face files.

    tinygpt generate --model gpt2 "Hello, I'm a language model,"
    tinygpt perplexity --model gpt2 tinygpt/data/tinyshakespeare.txt --max-tokens 20000
    tinygpt export --out out --to my-gpt2
"""
from __future__ import annotations

import codecs
import sys
import time

import click


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


def _set_threads(threads):
    if threads:
        from tensor.kernels import set_num_threads
        set_num_threads(threads)


def _load(model_name):
    """(model, tokenizer) from a GPT-2 name, a Hugging Face directory, or a directory written by
    `tinygpt train` (so a model trained here can be evaluated the same way)."""
    from .checkpoint import CheckpointError, load_model
    from .pretrained import PretrainedError, is_training_checkpoint, load_pretrained
    click.echo(f"loading {model_name} ...", err=True)
    try:
        if is_training_checkpoint(model_name):
            model, tok, _ = load_model(model_name)
            return model.eval(), tok
        return load_pretrained(model_name)
    except (PretrainedError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None


_MODEL_HELP = ("gpt2, gpt2-medium, gpt2-large or gpt2-xl (downloaded once into the Hugging Face "
               "cache), a local Hugging Face GPT-2 directory, or a `tinygpt train` --out directory.")


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------

class TextStream:
    """Token ids in, text out as soon as it is whole.

    One BPE token is a few bytes, not always whole characters: "é" is 2 bytes in UTF-8 and an
    emoji 4, and GPT-2 can emit them one byte-token at a time. Decoding each token on its own
    would print U+FFFD (�) for each half. So the bytes go into a buffer and we print its longest
    prefix that is complete UTF-8, keeping the unfinished character's first bytes for the next
    token. Python's incremental UTF-8 decoder is exactly that buffer; bytes that can never
    become a character (invalid UTF-8) are printed as U+FFFD right away rather than held back.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bytewise = hasattr(tokenizer, "decode_bytes")       # BPE; a char tokenizer is not
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        if not self.bytewise:
            return self.tokenizer.decode([token])
        return self.decoder.decode(self.tokenizer.decode_bytes([token]))

    def flush(self) -> str:
        """Whatever is left at the end (an unfinished character becomes U+FFFD)."""
        return self.decoder.decode(b"", final=True) if self.bytewise else ""


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids. `<|endoftext|>` typed in it is the document separator, as in training;
    an empty prompt starts a new document (GPT-2's convention), for a BPE model."""
    eot = getattr(tokenizer, "eot_token", None)
    if eot is None:
        return list(tokenizer.encode(prompt))
    return list(tokenizer.encode(prompt, allowed_special="all")) or [eot]


@click.command()
@click.argument("prompt", default="")
@click.option("--model", "model_name", default="gpt2", show_default=True, help=_MODEL_HELP)
@click.option("--num-samples", type=int, default=1, show_default=True, callback=_positive)
@click.option("--max-new-tokens", type=int, default=100, show_default=True, callback=_positive)
@click.option("--temperature", type=click.FloatRange(0), default=0.8, show_default=True,
              help="Higher is more random; 0 always picks the likeliest token.")
@click.option("--top-k", type=click.IntRange(0), default=200, show_default=True,
              help="Sample among the k likeliest tokens (0: all tokens).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True),
              help="Sample among the likeliest tokens whose probabilities add up to p.")
@click.option("--seed", type=int, help="Random seed, for repeatable samples (default: a new "
                                       "sample every run).")
@click.option("--stop-at-eot/--no-stop-at-eot", default=True, show_default=True,
              help="Stop at <|endoftext|>, the end of a document.")
@click.option("--threads", type=int, callback=_positive,
              help="CPU threads for the kernels (default: all cores).")
def generate_cmd(prompt, model_name, num_samples, max_new_tokens, temperature, top_k, top_p,
                 seed, stop_at_eot, threads):
    """Continue PROMPT with a pretrained GPT-2, printing tokens as they come.

    \b
      tinygpt generate --model gpt2 "Hello, I'm a language model,"
      tinygpt generate --model path/to/hf-dir --temperature 0 "The meaning of life is"
    """
    _set_threads(threads)
    model, tok = _load(model_name)
    try:
        ids = encode_prompt(tok, prompt)
    except (ValueError, KeyError) as e:   # e.g. a character the char vocabulary lacks
        raise click.ClickException(f"cannot encode the prompt: {e}") from None
    for n in range(num_samples):
        if n:
            click.echo("-" * 40)
        _stream_one(model, tok, prompt, ids, max_new_tokens, temperature, top_k, top_p,
                    None if seed is None else seed + n, stop_at_eot)


def _stream_one(model, tok, prompt, ids, max_new_tokens, temperature, top_k, top_p, seed,
                stop_at_eot):
    from .generate import generate
    eot = getattr(tok, "eot_token", None)
    stop = eot if stop_at_eot else None
    stream = TextStream(tok)
    click.echo(prompt, nl=False)
    t0, n = time.perf_counter(), 0
    try:
        for token in generate(model, ids, max_new_tokens, temperature, top_k or None, top_p,
                              seed=seed, stop_token=stop):
            n += 1
            if token == stop:
                break
            click.echo(stream.feed(token), nl=False)        # click.echo flushes: text streams
    except KeyboardInterrupt:
        pass                                                # Ctrl-C: keep what was printed
    click.echo(stream.flush())
    seconds = time.perf_counter() - t0
    click.echo(f"[{n} tokens in {seconds:.1f} s, {n / max(seconds, 1e-9):.1f} tokens/s]", err=True)


# ----------------------------------------------------------------------------------------------
# perplexity
# ----------------------------------------------------------------------------------------------

class _Progress:
    """`scored 12,288/40,000 tokens (31%)` on stderr: redrawn on a terminal, a line every 10 s
    in a log."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = time.perf_counter()

    def __call__(self, done, total):
        now = time.perf_counter()
        if now - self.last < (0.2 if self.tty else 10.0) and done < total:
            return
        self.last = now
        line = f"scored {done:,}/{total:,} tokens ({100 * done / total:.0f}%)"
        click.echo(("\r" + line) if self.tty else line, err=True, nl=not self.tty)

    def close(self):
        if self.tty:
            click.echo("", err=True)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_name", default="gpt2", show_default=True, help=_MODEL_HELP)
@click.option("--stride", type=int, callback=_positive,
              help="Tokens between window starts; each window scores only its new tokens "
                   "(default: half the context; = the context for disjoint windows, fastest).")
@click.option("--max-tokens", type=int, callback=_positive,
              help="Evaluate only the first N tokens of FILE.")
@click.option("--threads", type=int, callback=_positive,
              help="CPU threads for the kernels (default: all cores).")
def perplexity_cmd(file, model_name, stride, max_tokens, threads):
    """Perplexity of a model on a UTF-8 text FILE, over strided windows.

    Perplexity is exp(mean negative log-likelihood per token): the model is, on average, as
    unsure as a uniform choice among that many tokens. Lower is better.
    """
    from .dataset import read_text
    from .pretrained import strided_perplexity
    _set_threads(threads)
    model, tok = _load(model_name)
    try:
        text = read_text(file)
        ids = tok.encode(text)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise click.ClickException(f"{file}: {e}") from None
    if max_tokens is not None:
        ids = ids[:max_tokens]
    block = model.config.block_size
    stride = stride if stride is not None else max(1, block // 2)
    if stride > block:
        raise click.ClickException(f"--stride {stride} is larger than the model's context "
                                   f"({block} tokens); some tokens would never be scored")
    if len(ids) < 2:
        raise click.ClickException(f"{file} holds {len(ids)} token(s); perplexity needs at least 2")
    progress = _Progress()
    ppl, n, seconds = strided_perplexity(model, ids, stride, progress)
    progress.close()
    click.echo(f"perplexity {ppl:.4f} over {n:,} tokens of {file} "
               f"(context {block}, stride {stride}) · {n / max(seconds, 1e-9):,.1f} tokens/s")


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------

@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="out", show_default=True,
              help="The checkpoint directory written by `tinygpt train`.")
@click.option("--to", "to", type=click.Path(), required=True,
              help="The Hugging Face GPT-2 directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace the exported files in a non-empty --to.")
def export_cmd(out, to, overwrite):
    """Write a tinygpt checkpoint as a Hugging Face GPT-2 directory.

    \b
      tinygpt export --out out --to my-gpt2
      python -c "import transformers; transformers.GPT2LMHeadModel.from_pretrained('my-gpt2')"
    """
    from .export import ExportError, export_hf
    try:
        lines = export_hf(out, to, overwrite=overwrite)
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    for line in lines:
        click.echo(line)
