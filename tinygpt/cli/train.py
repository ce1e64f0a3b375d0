"""`tinygpt train`: train a GPT on text; checkpoints and metrics go to --out."""
from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from ..model import PRESETS
from .options import Number, POSITIVE, SEED, threads_option


def _presets_epilog() -> str:
    from ..train import describe_presets
    return "\b\nPresets (each sets the model and its training recipe; options override):\n" + \
        describe_presets()


@click.command("train", epilog=_presets_epilog())
@click.option("--preset", type=click.Choice(list(PRESETS)), default="baby", show_default=True,
              help="Model and training recipe to start from (listed below); the options "
                   "override its values.")
@click.option("--n-layer", type=POSITIVE, help="Transformer blocks.")
@click.option("--n-head", type=POSITIVE, help="Attention heads per block.")
@click.option("--n-embd", type=POSITIVE, help="Embedding width (divisible by n-head).")
@click.option("--block-size", type=POSITIVE, help="Context length in tokens.")
@click.option("--dropout", type=Number(0, 1, max_open=True), help="Dropout probability.")
@click.option("--bias/--no-bias", default=None,
              help="Biases in the Linear and LayerNorm layers (default: the preset's).")
@click.option("--batch-size", type=POSITIVE, default=12, show_default=True,
              help="Sequences per micro-batch.")
@click.option("--grad-accum", type=POSITIVE, default=1, show_default=True,
              help="Micro-batches whose gradients are summed into one step: the effective "
                   "batch is --batch-size x --grad-accum, in the memory of one micro-batch.")
@click.option("--max-iters", type=POSITIVE, default=2000, show_default=True,
              help="Iterations in all (with --resume: train on to this iteration).")
@click.option("--lr", type=Number(0, min_open=True), default=1e-3, show_default=True,
              help="Peak learning rate.")
@click.option("--min-lr", type=Number(0), default=1e-4, show_default=True,
              help="Learning rate at the end of the cosine decay (with --lr given: --lr / 10).")
@click.option("--warmup-iters", type=click.IntRange(0), default=100, show_default=True)
@click.option("--lr-decay-iters", type=POSITIVE,
              help="Length of the cosine decay; after it the rate stays at --min-lr "
                   "(default: --max-iters of the run's start, kept when --resume extends it).")
@click.option("--weight-decay", type=Number(0), default=0.1, show_default=True)
@click.option("--grad-clip", type=Number(0), default=1.0, show_default=True,
              help="Clip the global gradient norm to this (0: no clipping).")
@click.option("--eval-interval", type=POSITIVE, default=250, show_default=True,
              help="Evaluate (and checkpoint) every this many iterations.")
@click.option("--eval-iters", type=POSITIVE, default=20, show_default=True,
              help="Batches averaged per evaluation.")
@click.option("--seed", type=SEED, default=1337, show_default=True)
@click.option("--out", type=click.Path(), default="out", show_default=True,
              help="The run directory: checkpoints (the latest and the best) and metrics.csv.")
@click.option("--data", type=click.Path(exists=True),
              help="A UTF-8 text file to train on, or a directory written by `tinygpt prepare` "
                   "(or nanoGPT's prepare.py) whose token files are read from disk as needed "
                   "(default: the bundled tiny Shakespeare).")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), default="char",
              show_default=True, help="Characters, or GPT-2's byte-level BPE.")
@click.option("--init-from", metavar="NAME|DIR",
              help="Fine-tune: start from gpt2, gpt2-medium, gpt2-large, gpt2-xl, a Hugging Face "
                   "GPT-2 directory or a training run (its best checkpoint). Its architecture "
                   "and tokenizer are kept; --block-size may shorten the context, --dropout "
                   "may change (default 0); the optimizer starts fresh.")
@threads_option
@click.option("--resume", is_flag=True,
              help="Continue the run in --out with its saved options; --max-iters, --lr, "
                   "--min-lr, --warmup-iters, --lr-decay-iters, --weight-decay, --grad-clip, "
                   "--eval-interval and --eval-iters may be changed (--threads is this "
                   "command's own).")
@click.option("--overwrite", is_flag=True,
              help="Replace the run in --out (its checkpoints and metrics.csv) with a new one.")
@click.option("--quiet", is_flag=True, help="No progress bar (evaluations are still printed).")
@click.pass_context
def train_cmd(ctx, resume, overwrite, quiet, **kwargs):
    """Train a GPT on text; checkpoints go to --out.

    With no options: the `baby` preset (4 layers, 4 heads, 128 dims, block 64) on tiny
    Shakespeare, 2000 iterations — the reference CPU recipe.

    \b
    Every evaluation saves a checkpoint; --out keeps the latest (for --resume) and the best
    (lowest val loss, what `sample` and `export` use). Ctrl-C saves and stops; the printed
    command continues the same run. A fresh run never writes into a non-empty --out.
    """
    from ..train import TrainOptions, train as run, NonFiniteLoss
    from ..checkpoint import CheckpointError
    given = {name for name in kwargs
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
    opts = TrainOptions(**kwargs)
    try:
        result = run(opts, resume=resume, overwrite=overwrite, given=given, log=click.echo,
                     progress=not quiet)
    except (ValueError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:              # a full disk, a read-only --out, /dev/null/x, ...
        raise click.ClickException(f"{e.filename or opts.out}: {e.strerror or e}") from None
    except NonFiniteLoss as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    if result.interrupted:
        sys.exit(130)
