"""`tinygpt perplexity`: how well a model predicts a text file, over strided windows.

    tinygpt perplexity --model gpt2 tinygpt/data/tinyshakespeare.txt --max-tokens 20000

The windows and their scoring are tinygpt/evaluate.py's strided_perplexity.
"""
from __future__ import annotations

import click

from ..dataset import plural
from .options import (MODEL_HELP, POSITIVE, checkpoint_option, dtype_option, load_for_command,
                      set_threads, threads_option)


@click.command("perplexity")
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
    from ..dataset import read_text
    from ..evaluate import strided_perplexity
    from ..progress import Progress
    set_threads(threads)
    try:
        text = read_text(file)                # before the (slow) model load: a bad file is quick
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e) if str(file) in str(e) else f"{file}: {e}") from None
    model, tok = load_for_command(model_name, which, dtype)
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
                                   f"({plural(block, 'token')}); some tokens would never be scored")
    if len(ids) < 2:
        raise click.ClickException(f"{file} holds {plural(len(ids), 'token')}; perplexity needs "
                                   f"at least 2")
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
    click.echo(f"perplexity {ppl:.4f} over {plural(n, 'token')} of {file} "
               f"(context {block}, stride {stride}) · {n / max(seconds, 1e-9):,.1f} tokens/s")
