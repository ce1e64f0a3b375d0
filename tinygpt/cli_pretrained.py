"""`tinygpt generate`, `tinygpt perplexity`, `tinygpt export`: pretrained GPT-2 and Hugging Face files.

    tinygpt generate --model gpt2 "Hello, I'm a language model,"
    tinygpt generate --model gpt2 --dtype int8 --num-samples 8 "Once upon a time"
    tinygpt perplexity --model gpt2 tinygpt/data/tinyshakespeare.txt --max-tokens 20000
    tinygpt export --model out --to my-gpt2

Models are loaded by tinygpt/loading.py (one loader for names, Hugging Face directories and
training runs); the options shared with `sample` are in tinygpt/cli_common.py.
"""
from __future__ import annotations

import time

import click

from .cli_common import (MODEL_HELP, POSITIVE, checkpoint_option, load_for_command, pick_alias,
                         pick_prompt, prompt_ids, run_option, sampling_options, set_threads,
                         stream_samples, threads_option)


# ----------------------------------------------------------------------------------------------
# --dtype: the weights in bfloat16 or int8 (inference only; tinygpt/quantize.py)
# ----------------------------------------------------------------------------------------------

DTYPE_HELP = ("Weights for this run: float32 (as stored), bfloat16 (half the bytes) or int8 "
              "(a quarter, one scale per output). Activations stay float32; generation is "
              "bound by reading the weights, so fewer bytes are faster.")


def dtype_option(f):
    """`--dtype float32|bfloat16|int8`, the same on generate, sample and perplexity."""
    return click.option("--dtype", type=click.Choice(["float32", "bfloat16", "int8"]),
                        default="float32", show_default=True, help=DTYPE_HELP)(f)


def load_with_dtype(model_name, which, dtype):
    """load_for_command with the weights quantized to dtype as they are read (stderr says how
    many bytes)."""
    from .quantize import weight_nbytes
    model, tok = load_for_command(model_name, which, weight_dtype=dtype)   # quantized as read
    if dtype != "float32":
        click.echo(f"weights in {dtype}: {weight_nbytes(model) / 1e6:,.0f} MB", err=True)
    return model, tok


# ----------------------------------------------------------------------------------------------
# Several samples at once: one batched KV cache (tinygpt/generate.py: generate_batch)
# ----------------------------------------------------------------------------------------------

def print_samples(model, tok, prompt: str, num_samples: int, max_new_tokens: int,
                  temperature: float, top_k: int, top_p, seed, stop_at_eot: bool) -> None:
    """One sample: streamed token by token (cli_common.stream_samples). Several: decoded
    together, one batched forward pass per step (each step reads the weights once for all of
    them). Sample 1 is streamed as it comes; samples 2..N are printed when the batch is done,
    each after a line of dashes, as one at a time would print them. Sample i draws from
    seed + i, as it does one at a time, so a seed gives the same text either way (up to
    rounding in the batched products)."""
    if num_samples == 1:
        stream_samples(model, tok, prompt, num_samples, max_new_tokens, temperature, top_k,
                       top_p, seed, stop_at_eot)
        return
    from . import generate as gen
    text, ids = prompt_ids(tok, prompt)
    stop = getattr(tok, "eot_token", None) if stop_at_eot else None
    streams = [gen.TextStream(tok) for _ in range(num_samples)]
    texts = [[] for _ in range(num_samples)]               # samples 2..N, kept until the end
    seeds = [None if seed is None else seed + n for n in range(num_samples)]
    click.echo(text, nl=False)
    t0, count, interrupted = time.perf_counter(), 0, False
    try:
        for step in gen.generate_batch(model, [ids] * num_samples, max_new_tokens, temperature,
                                       top_k or None, top_p, seeds=seeds, stop_token=stop,
                                       vocab_size=tok.vocab_size):
            for n, token in enumerate(step):
                if token is None:          # this sample ended earlier
                    continue
                count += 1
                if token == stop:
                    continue
                piece = streams[n].feed(token)
                if n == 0:
                    click.echo(piece, nl=False)             # sample 1 streams
                else:
                    texts[n].append(piece)
    except KeyboardInterrupt:
        interrupted = True
    click.echo(streams[0].flush())
    for n in range(1, num_samples):
        click.echo("-" * 40)
        click.echo(text + "".join(texts[n]) + streams[n].flush())
    seconds = time.perf_counter() - t0
    click.echo(f"[{num_samples} samples decoded together: {count} tokens in {seconds:.1f} s, "
               f"{count / max(seconds, 1e-9):.1f} tokens/s]", err=True)
    if interrupted:
        return


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------

@click.command()
@click.option("--model", "model_name", default="gpt2", show_default=True, help=MODEL_HELP)
@sampling_options
@dtype_option
def generate_cmd(model_name, prompt_arg, prompt_opt, num_samples, max_new_tokens, temperature,
                 top_k, top_p, seed, stop_at_eot, which, threads, dtype):
    """Continue PROMPT with a pretrained GPT-2, printing tokens as they come.

    \b
      tinygpt generate --model gpt2 "Hello, I'm a language model,"
      tinygpt generate --model path/to/hf-dir --temperature 0 "The meaning of life is"

    `tinygpt sample` is the same command for a training run (its --model defaults to out).
    --num-samples N decodes the N samples together (sample 1 streams, the others print at the
    end); --dtype int8 or bfloat16 runs with compact weights.
    """
    prompt = pick_prompt(prompt_arg, prompt_opt)
    set_threads(threads)
    model, tok = load_with_dtype(model_name, which, dtype)
    print_samples(model, tok, prompt, num_samples, max_new_tokens, temperature, top_k, top_p,
                  seed, stop_at_eot)


# ----------------------------------------------------------------------------------------------
# perplexity
# ----------------------------------------------------------------------------------------------

@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_name", default="gpt2", show_default=True, help=MODEL_HELP)
@click.option("--stride", type=POSITIVE,
              help="Tokens between window starts; each window scores only its new tokens "
                   "(default: half the context; = the context for disjoint windows, fastest).")
@click.option("--max-tokens", type=POSITIVE, help="Evaluate only the first N tokens of FILE.")
@checkpoint_option
@threads_option
@dtype_option
def perplexity_cmd(file, model_name, stride, max_tokens, which, threads, dtype):
    """Perplexity of a model on a UTF-8 text FILE, over strided windows.

    Perplexity is exp(mean negative log-likelihood per token): the model is, on average, as
    unsure as a uniform choice among that many tokens. Lower is better.
    """
    from .dataset import read_text
    from .pretrained import strided_perplexity
    from .progress import Progress
    set_threads(threads)
    try:
        text = read_text(file)                # before the (slow) model load: a bad file is quick
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e) if str(file) in str(e) else f"{file}: {e}") from None
    model, tok = load_with_dtype(model_name, which, dtype)
    try:
        ids = tok.encode(text)
    except (ValueError, KeyError) as e:       # a character the model's vocabulary lacks
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
    bar = None

    def progress(done, total):               # the total is known after the first window
        nonlocal bar
        if bar is None:
            bar = Progress(total, desc="scored", unit="tok")
        bar.update(done)
    try:
        ppl, n, seconds = strided_perplexity(model, ids, stride, progress)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"perplexity {ppl:.4f} over {n:,} tokens of {file} "
               f"(context {block}, stride {stride}) · {n / max(seconds, 1e-9):,.1f} tokens/s")


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------

@click.command()
@run_option(help="The run directory written by `tinygpt train --out`.")
@click.option("--to", "to", type=click.Path(), required=True,
              help="The Hugging Face GPT-2 directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace the exported files in a non-empty --to.")
@checkpoint_option
@threads_option
@click.pass_context
def export_cmd(ctx, model_name, out_alias, to, overwrite, which, threads):
    """Write a training run's checkpoint (the best by default) as a Hugging Face GPT-2 directory.

    \b
      tinygpt export --model out --to my-gpt2
      python -c "import transformers; transformers.GPT2LMHeadModel.from_pretrained('my-gpt2')"
    """
    from .export import ExportError, export_hf
    model_name = pick_alias(ctx, model_name, out_alias)
    set_threads(threads)
    try:
        lines = export_hf(model_name, to, overwrite=overwrite, which=which,
                          log=lambda line: click.echo(line, err=True))
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    for line in lines:
        click.echo(line)
