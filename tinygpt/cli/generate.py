"""`tinygpt sample` and `tinygpt generate`: one command under two names.

    tinygpt sample --max-new-tokens 300 --seed 1337             # the run in out/
    tinygpt generate --model gpt2 "Hello, I'm a language model,"
    tinygpt generate --model gpt2 --dtype int8 --num-samples 8 "Once upon a time"

They differ only in what --model names by default: `sample` a training run (out), `generate` a
released GPT-2 (gpt2). Either takes any model the loader takes (tinygpt/loading.py).
"""
from __future__ import annotations

import time

import click

from ..dataset import plural
from .options import (MODEL_HELP, dtype_option, load_for_command, pick_prompt,
                      prompt_ids, run_option, sampling_options, set_threads)


def _sampling_command(name: str, model_option, doc: str):
    """The `name` command: load --model, then print samples of PROMPT."""
    @click.command(name)
    @model_option
    @sampling_options
    @dtype_option
    def command(model_name, prompt_arg, prompt_opt, num_samples, max_new_tokens, temperature,
                top_k, top_p, seed, stop_at_eot, which, threads, dtype):
        prompt = pick_prompt(prompt_arg, prompt_opt)
        set_threads(threads)
        model, tok = load_for_command(model_name, which, dtype)
        print_samples(model, tok, prompt, num_samples, max_new_tokens, temperature, top_k, top_p,
                      seed, stop_at_eot)
    command.help = doc
    return command


sample_cmd = _sampling_command(
    "sample",
    run_option(help="The run directory written by `tinygpt train --out` (or any model "
                    "`generate` takes)."),
    """Write text with a model trained by `tinygpt train` (its best checkpoint by default).

    \b
      tinygpt sample --max-new-tokens 300 --seed 1337
      tinygpt sample --model out --checkpoint latest "ROMEO:"

    `tinygpt generate` is the same command for a released GPT-2 (its --model defaults to gpt2).
    --num-samples N decodes the N samples together (sample 1 streams, the others print at the
    end); --dtype int8 or bfloat16 runs with compact weights.
    """)

generate_cmd = _sampling_command(
    "generate",
    click.option("--model", "model_name", default="gpt2", show_default=True, help=MODEL_HELP),
    """Continue PROMPT with a pretrained GPT-2, printing tokens as they come.

    \b
      tinygpt generate --model gpt2 "Hello, I'm a language model,"
      tinygpt generate --model path/to/hf-dir --temperature 0 "The meaning of life is"

    `tinygpt sample` is the same command for a training run (its --model defaults to out).
    --num-samples N decodes the N samples together (sample 1 streams, the others print at the
    end); --dtype int8 or bfloat16 runs with compact weights.
    """)


def print_samples(model, tok, prompt: str, num_samples: int, max_new_tokens: int,
                  temperature: float, top_k: int, top_p, seed, stop_at_eot: bool) -> None:
    """One sample: streamed token by token. Several: decoded together, one batched forward
    pass per step (each step reads the weights once for all of them), as many at a time as fit
    in memory (samples_per_batch). The first sample of each batch is streamed as it comes; the
    others are printed when their batch is done, each after a line of dashes, as one at a time
    would print them. Sample i draws from seed + i, as it does one at a time, so a seed gives
    the same text either way (up to rounding in the batched products). Ctrl-C stops, keeping
    what was printed; the speed goes to stderr."""
    from .. import generate as gen                # looked up at call time (tests replace it)
    text, ids = prompt_ids(tok, prompt)
    stop = getattr(tok, "eot_token", None) if stop_at_eot else None
    per_batch = samples_per_batch(model.config, len(ids), num_samples, max_new_tokens)
    t0, count, stopped = time.perf_counter(), [0], False
    try:
        for first in range(0, num_samples, per_batch):
            if first:
                click.echo("-" * 40)
            rows = min(per_batch, num_samples - first)
            seeds = [None if seed is None else seed + first + n for n in range(rows)]
            if rows == 1:
                _stream_one(gen, model, tok, text, ids, max_new_tokens, temperature, top_k,
                            top_p, seeds[0], stop, count)
            else:
                _print_batch(gen, model, tok, text, ids, max_new_tokens, temperature, top_k,
                             top_p, seeds, stop, count)
    except KeyboardInterrupt:
        stopped = True
    seconds = time.perf_counter() - t0
    together = ("" if num_samples == 1 else
                f"{num_samples} samples decoded together: " if per_batch >= num_samples else
                f"{num_samples} samples, decoded {per_batch} at a time (what fits in memory): ")
    click.echo(f"[{together}{plural(count[0], 'token')} in {seconds:.1f} s, "
               f"{count[0] / max(seconds, 1e-9):.1f} tokens/s"
               f"{'; stopped by Ctrl-C' if stopped else ''}]", err=True)


def samples_per_batch(config, prompt_tokens: int, num_samples: int, max_new_tokens: int) -> int:
    """How many samples to decode together: all of them if they fit in half the memory
    available now (the estimate, tinygpt/generate.py's generation_bytes, is rough, and the
    rest is for everything else), else as many as fit; a one-line error if not even one does."""
    from ..generate import generation_bytes
    from ..loading import format_bytes
    from ..train import available_memory
    parts = generation_bytes(config, prompt_tokens, max_new_tokens)
    row, have = sum(parts.values()), available_memory()
    if have is None:
        return num_samples
    budget = have // 2
    if row > budget:
        cause = {"cache": f"the key/value cache of the model ({config.n_layer} layers of "
                          f"{config.n_embd}, context {config.block_size})",
                 "window": f"a pass over the prompt ({plural(prompt_tokens, 'token')})",
                 "tokens": f"keeping --max-new-tokens {max_new_tokens:,} of them"}
        worst = max(parts, key=parts.get)
        raise click.ClickException(
            f"one sample needs about {format_bytes(row)} of memory, mostly for "
            f"{cause[worst]} ({format_bytes(parts[worst])}), but {format_bytes(have)} is "
            f"available (half of it for generation); give a smaller --max-new-tokens, a shorter "
            f"prompt or a smaller model")
    return max(1, min(num_samples, budget // row))


def _print_batch(gen, model, tok, text: str, ids, max_new_tokens, temperature, top_k, top_p,
                 seeds, stop, count) -> None:
    """Decode len(seeds) samples together: the first streams, the others print at the end
    (after a line of dashes each), also when Ctrl-C stops the batch. count[0] += tokens."""
    rows = len(seeds)
    streams = [gen.TextStream(tok) for _ in range(rows)]
    texts = [[] for _ in range(rows)]                       # samples 2.., kept until the end
    click.echo(text, nl=False)
    try:
        for step in gen.generate_batch(model, [ids] * rows, max_new_tokens, temperature,
                                       top_k or None, top_p, seeds=seeds, stop_token=stop,
                                       vocab_size=tok.vocab_size):
            for n, token in enumerate(step):
                if token is None:          # this sample ended earlier
                    continue
                count[0] += 1
                if token == stop:
                    continue
                piece = streams[n].feed(token)
                if n == 0:
                    click.echo(piece, nl=False)             # the first one streams
                else:
                    texts[n].append(piece)
    finally:                  # Ctrl-C too: what was decoded is printed, then it goes on up
        click.echo(streams[0].flush())
        for n in range(1, rows):
            click.echo("-" * 40)
            click.echo(text + "".join(texts[n]) + streams[n].flush())


def _stream_one(gen, model, tok, text: str, ids, max_new_tokens, temperature, top_k, top_p,
                seed, stop, count) -> None:
    """Print one continuation token by token, whole characters only (TextStream); count[0] +=
    the tokens. Ctrl-C ends the line and goes on up."""
    stream = gen.TextStream(tok)
    click.echo(text, nl=False)
    try:
        for token in gen.generate(model, ids, max_new_tokens, temperature, top_k or None, top_p,
                                  seed=seed, stop_token=stop, vocab_size=tok.vocab_size):
            count[0] += 1
            if token == stop:
                break
            click.echo(stream.feed(token), nl=False)        # click.echo flushes: text streams
    finally:
        click.echo(stream.flush())
