"""The options every `tinygpt` command shares, stated once: their types (a bad value gets the
same clear message everywhere: click names the option and the value, and the command never
starts), how a command names and loads a model, and the sampling options of sample/generate."""
from __future__ import annotations

import math

import click

from ..train import TrainOptions


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

THREADS_HELP = TrainOptions.__dataclass_fields__["threads"].metadata["help"]   # said once




def check_threads(ctx, param, value):
    """A click callback: --threads at most the cores this process may use (more only queue for
    the same cores, and every parallel product waits for the thread that has none)."""
    from tensor.kernels.threads import check_thread_count
    if value is not None:
        try:
            check_thread_count(value)
        except ValueError as e:
            raise click.UsageError(str(e), ctx) from None
    return value


def threads_option(f):
    """`--threads N`, the same on every command."""
    return click.option("--threads", type=POSITIVE, callback=check_threads, help=THREADS_HELP)(f)


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
    """`--model DIR` naming a training run: the run directory has one name on every command
    (`train --out` writes it, the others read it with --model)."""
    return click.option("--model", "model_name", type=click.Path(file_okay=False),
                        default=default, show_default=True, help=help)


DTYPE_HELP = ("Weights for this run: float32 (as stored), bfloat16 (half the bytes) or int8 "
              "(a quarter, one scale per output). Activations stay float32; generation is "
              "bound by reading the weights, so fewer bytes are faster.")


def dtype_option(f):
    """`--dtype float32|bfloat16|int8`, the same on generate, sample and perplexity."""
    return click.option("--dtype", type=click.Choice(["float32", "bfloat16", "int8"]),
                        default="float32", show_default=True, help=DTYPE_HELP)(f)


def load_for_command(model_name, which: str = "best", weight_dtype: str = "float32"):
    """(model, tokenizer) from the one loader, saying on stderr what was loaded (and, for
    --dtype bfloat16 or int8, how many bytes the weights take); a model that cannot be loaded
    is a one-line error (exit 1)."""
    from ..loading import LoadError, load_model
    click.echo(f"loading {model_name} ...", err=True)
    try:
        model, tok, description = load_model(model_name, which=which, weight_dtype=weight_dtype,
                                             log=lambda line: click.echo(line, err=True))
    except LoadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"loaded {description}", err=True)
    if weight_dtype != "float32":
        from ..quantize import weight_nbytes
        click.echo(f"weights in {weight_dtype}: {weight_nbytes(model) / 1e6:,.0f} MB", err=True)
    return model, tok


# ----------------------------------------------------------------------------------------------
# Sampling: `sample` and `generate` share their options and their output
# ----------------------------------------------------------------------------------------------

MAX_SAMPLES = 1_000_000     # --num-samples past it is a slip of the keyboard, not a plan


def sampling_options(f):
    """The options `sample` and `generate` share: same names, defaults and meanings."""
    options = [
        click.argument("prompt_arg", metavar="[PROMPT]", required=False),
        click.option("--prompt", "prompt_opt",
                     help="Text to continue (or give it as the argument PROMPT). Empty: a new "
                          "document for a BPE model (<|endoftext|>), a newline for a character "
                          "model."),
        click.option("--num-samples", type=click.IntRange(1, MAX_SAMPLES), default=1,
                     show_default=True,
                     help=f"How many samples to write (at most {MAX_SAMPLES:,}); they are decoded "
                          f"together, as many at a time as fit in memory."),
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
    from .. import generate as gen
    try:
        text = gen.prompt_text(tok, prompt)
        return text, gen.encode_prompt(tok, text)
    except (ValueError, KeyError) as e:   # an empty prompt, a character the vocabulary lacks
        raise click.ClickException(f"cannot use the prompt: {e}") from None


# ----------------------------------------------------------------------------------------------
# Image files (--png): checked before any slow work
# ----------------------------------------------------------------------------------------------

def check_image_path(ctx, param, value):
    """A click callback: --png must end in an extension matplotlib can write, in a directory
    that exists. Without matplotlib this is left to the command (it says how to install it)."""
    from ..inspect import PlotUnavailable, figure_path_problem
    if value is None:
        return value
    try:
        problem = figure_path_problem(value)
    except PlotUnavailable:
        return value
    if problem:
        raise click.BadParameter(problem, ctx, param)
    return value
