"""Option types shared by every `tinygpt` command, so a bad value gets the same clear message
everywhere: click names the option and the value, and the command never starts."""
from __future__ import annotations

import math
import time

import click


class Number(click.FloatRange):
    """A finite float, optionally within a range. (click's FloatRange lets `nan` through, since
    every comparison with NaN is false, and `inf` through when there is no upper bound.)"""
    name = "number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


POSITIVE = click.IntRange(min=1)
SEED = click.IntRange(0, 2**32 - 1)        # what NumPy's generators accept

THREADS_HELP = ("CPU threads for the kernels (default: auto, the cores other processes leave "
                "free, looked at again every second).")


def threads_option(f):
    """`--threads N`, the same on every command."""
    return click.option("--threads", type=POSITIVE, help=THREADS_HELP)(f)


def set_threads(threads: int | None) -> None:
    if threads:
        from tensor.kernels import set_num_threads
        set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Naming and loading a model: the same on every command
# ----------------------------------------------------------------------------------------------

MODEL_HELP = ("gpt2, gpt2-medium, gpt2-large or gpt2-xl (downloaded once into the Hugging Face "
              "cache), a local Hugging Face GPT-2 directory, or a `tinygpt train` run directory.")
CHECKPOINT_HELP = ("For a training run: its checkpoint with the best val loss, or its latest "
                   "(where --resume continues).")


def checkpoint_option(f):
    """`--checkpoint best|latest`: which checkpoint of a training run to load."""
    return click.option("--checkpoint", "which", type=click.Choice(["best", "latest"]),
                        default="best", show_default=True, help=CHECKPOINT_HELP)(f)


def run_option(default: str = "out", help: str = "A `tinygpt train` run directory."):
    """`--model DIR` naming a training run, with `--out` kept as a hidden alias: the run
    directory has one name on every command (`train --out` writes it, the others read it)."""
    def decorate(f):
        f = click.option("--out", "out_alias", type=click.Path(file_okay=False), hidden=True,
                         help="Old name of --model.")(f)
        return click.option("--model", "model_name", type=click.Path(file_okay=False),
                            default=default, show_default=True, help=help)(f)
    return decorate


def pick_alias(ctx: click.Context, model_name, out_alias):
    """--model, or the hidden --out alias when only that one was given."""
    if out_alias is None:
        return model_name
    source = ctx.get_parameter_source("model_name")
    if source == click.core.ParameterSource.COMMANDLINE and model_name != out_alias:
        raise click.UsageError(f"--model {model_name} and --out {out_alias} name two different "
                               f"runs; give one (--out is the old name of --model)", ctx)
    return out_alias


def load_for_command(model_name, which: str = "best", weight_dtype: str = "float32"):
    """(model, tokenizer) from the one loader, saying on stderr what was loaded; a model that
    cannot be loaded is a one-line error (exit 1)."""
    from .loading import LoadError, load_model
    click.echo(f"loading {model_name} ...", err=True)
    try:
        model, tok, description = load_model(model_name, which=which, weight_dtype=weight_dtype,
                                             log=lambda line: click.echo(line, err=True))
    except LoadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"loaded {description}", err=True)
    return model, tok


# ----------------------------------------------------------------------------------------------
# Sampling: `sample` and `generate` share their options and their output
# ----------------------------------------------------------------------------------------------

def sampling_options(f):
    """The options `sample` and `generate` share: same names, defaults and meanings."""
    options = [
        click.argument("prompt_arg", metavar="[PROMPT]", required=False),
        click.option("--prompt", "prompt_opt",
                     help="Text to continue (or give it as the argument PROMPT). Empty: a new "
                          "document for a BPE model (<|endoftext|>), a newline for a character "
                          "model."),
        click.option("--num-samples", type=POSITIVE, default=1, show_default=True),
        click.option("--max-new-tokens", type=POSITIVE, default=200, show_default=True),
        click.option("--temperature", type=Number(0), default=0.8, show_default=True,
                     help="Higher is more random; 0 always picks the likeliest token."),
        click.option("--top-k", type=click.IntRange(0), default=200, show_default=True,
                     help="Sample among the k likeliest tokens (0: all tokens)."),
        click.option("--top-p", type=Number(0, 1, min_open=True),
                     help="Sample among the likeliest tokens whose probabilities add up to p."),
        click.option("--seed", type=SEED,
                     help="Random seed: the same seed gives the same text (sample i uses "
                          "seed + i). Default: new text every run."),
        click.option("--stop-at-eot/--no-stop-at-eot", default=True, show_default=True,
                     help="Stop at <|endoftext|>, the end of a document (BPE models)."),
        checkpoint_option,
        threads_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def pick_prompt(prompt_arg, prompt_opt) -> str:
    if prompt_arg is not None and prompt_opt is not None and prompt_arg != prompt_opt:
        raise click.UsageError(f"two prompts: {prompt_arg!r} (argument) and {prompt_opt!r} "
                               f"(--prompt); give one")
    return prompt_opt if prompt_opt is not None else (prompt_arg or "")


def prompt_ids(tok, prompt: str) -> tuple[str, list[int]]:
    """(the prompt as it will be shown, its token ids), or a one-line error."""
    from . import generate as gen
    try:
        text = gen.prompt_text(tok, prompt)
        return text, gen.encode_prompt(tok, text)
    except (ValueError, KeyError) as e:   # an empty prompt, a character the vocabulary lacks
        raise click.ClickException(f"cannot use the prompt: {e}") from None


def stream_samples(model, tok, prompt: str, num_samples: int, max_new_tokens: int,
                   temperature: float, top_k: int, top_p, seed, stop_at_eot: bool) -> None:
    """Print num_samples continuations of prompt, token by token, whole characters only
    (TextStream), samples separated by a line of dashes; the speed goes to stderr. Ctrl-C
    stops, keeping what was printed."""
    from . import generate as gen                # looked up at call time (tests replace it)
    text, ids = prompt_ids(tok, prompt)
    stop = getattr(tok, "eot_token", None) if stop_at_eot else None
    for n in range(num_samples):
        if n:
            click.echo("-" * 40)
        stream = gen.TextStream(tok)
        click.echo(text, nl=False)
        t0, count, interrupted = time.perf_counter(), 0, False
        try:
            for token in gen.generate(model, ids, max_new_tokens, temperature, top_k or None,
                                      top_p, seed=None if seed is None else seed + n,
                                      stop_token=stop, vocab_size=tok.vocab_size):
                count += 1
                if token == stop:
                    break
                click.echo(stream.feed(token), nl=False)    # click.echo flushes: text streams
        except KeyboardInterrupt:
            interrupted = True
        click.echo(stream.flush())
        seconds = time.perf_counter() - t0
        click.echo(f"[{count} tokens in {seconds:.1f} s, {count / max(seconds, 1e-9):.1f} "
                   f"tokens/s]", err=True)
        if interrupted:
            return


# ----------------------------------------------------------------------------------------------
# Image files (--png): checked before any slow work
# ----------------------------------------------------------------------------------------------

def check_image_path(ctx, param, value):
    """A click callback: --png must end in an extension matplotlib can write, in a directory
    that exists. Without matplotlib this is left to the command (it says how to install it)."""
    from .inspect import PlotUnavailable, figure_path_problem
    if value is None:
        return value
    try:
        problem = figure_path_problem(value)
    except PlotUnavailable:
        return value
    if problem:
        raise click.BadParameter(problem, ctx, param)
    return value
