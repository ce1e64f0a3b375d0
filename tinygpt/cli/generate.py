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

from .options import (MODEL_HELP, dtype_option, load_for_command, pick_prompt, prompt_ids,
                      run_option, sampling_options, set_threads)


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
    pass per step (each step reads the weights once for all of them). Sample 1 is streamed as
    it comes; samples 2..N are printed when the batch is done, each after a line of dashes, as
    one at a time would print them. Sample i draws from seed + i, as it does one at a time, so
    a seed gives the same text either way (up to rounding in the batched products). Ctrl-C
    stops, keeping what was printed; the speed goes to stderr."""
    from .. import generate as gen                # looked up at call time (tests replace it)
    text, ids = prompt_ids(tok, prompt)
    stop = getattr(tok, "eot_token", None) if stop_at_eot else None
    if num_samples == 1:
        _stream_one(gen, model, tok, text, ids, max_new_tokens, temperature, top_k, top_p,
                    seed, stop)
        return
    streams = [gen.TextStream(tok) for _ in range(num_samples)]
    texts = [[] for _ in range(num_samples)]               # samples 2..N, kept until the end
    seeds = [None if seed is None else seed + n for n in range(num_samples)]
    click.echo(text, nl=False)
    t0, count = time.perf_counter(), 0
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
        pass
    click.echo(streams[0].flush())
    for n in range(1, num_samples):
        click.echo("-" * 40)
        click.echo(text + "".join(texts[n]) + streams[n].flush())
    seconds = time.perf_counter() - t0
    click.echo(f"[{num_samples} samples decoded together: {count} tokens in {seconds:.1f} s, "
               f"{count / max(seconds, 1e-9):.1f} tokens/s]", err=True)


def _stream_one(gen, model, tok, text: str, ids, max_new_tokens, temperature, top_k, top_p,
                seed, stop) -> None:
    """Print one continuation token by token, whole characters only (TextStream)."""
    stream = gen.TextStream(tok)
    click.echo(text, nl=False)
    t0, count = time.perf_counter(), 0
    try:
        for token in gen.generate(model, ids, max_new_tokens, temperature, top_k or None, top_p,
                                  seed=seed, stop_token=stop, vocab_size=tok.vocab_size):
            count += 1
            if token == stop:
                break
            click.echo(stream.feed(token), nl=False)        # click.echo flushes: text streams
    except KeyboardInterrupt:
        pass
    click.echo(stream.flush())
    seconds = time.perf_counter() - t0
    click.echo(f"[{count} tokens in {seconds:.1f} s, {count / max(seconds, 1e-9):.1f} "
               f"tokens/s]", err=True)
