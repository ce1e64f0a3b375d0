"""`tinygpt train`: train a GPT on text; checkpoints and metrics go to --out.

Every option comes from a field of tinygpt.train.TrainOptions, where its default, its range and
its help are written once; this module turns each into a click option (a value out of range is
refused as click refuses any bad value: the option named, exit 2) and adds the flags that say
how to run rather than what to train (--resume, --overwrite, --quiet)."""
from __future__ import annotations

import signal
import sys
from dataclasses import MISSING, fields

import click
from click.core import ParameterSource

from ..train import TrainOptions
from .options import Number


def _presets_epilog() -> str:
    from ..train import describe_presets
    return "\b\nPresets (each sets the model and its training recipe; options override):\n" + \
        describe_presets()


def _click_type(f):
    """The click type of a TrainOptions field, from its annotation and its range."""
    rules, kind = f.metadata, str(f.type)
    if rules["choices"] is not None:
        return click.Choice(list(rules["choices"]))
    if rules["click"].get("path") == "exists":
        return click.Path(exists=True)
    if rules["click"].get("path"):
        return click.Path()
    bounds = dict(min=rules["low"], max=rules["high"], min_open=rules["low_open"],
                  max_open=rules["high_open"])
    if kind.startswith("int"):
        return click.IntRange(**bounds)
    if kind.startswith("float"):
        return Number(**bounds)
    return str


def train_options(command):
    """One click option per TrainOptions field (bool fields as --x/--no-x flags)."""
    for f in reversed([f for f in fields(TrainOptions) if f.metadata["cli"]]):
        name = "--" + f.name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        help = f.metadata["help"] or None
        extra = {k: v for k, v in f.metadata["click"].items() if k != "path"}
        if str(f.type).startswith("bool"):
            option = click.option(f"{name}/--no-{name[2:]}", f.name, default=default, help=help)
        else:
            option = click.option(name, f.name, type=_click_type(f), default=default,
                                  show_default=default is not None, help=help, **extra)
        command = option(command)
    return command


@click.command("train", epilog=_presets_epilog())
@train_options
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
    (lowest val loss, what `sample` and `export` use). Ctrl-C stops within about a second and
    saves (a step or an evaluation in progress is dropped and done again on --resume; under
    MPI the ranks finish the step first); the printed command continues the same run. A fresh
    run never writes into a non-empty --out.
    """
    from ..checkpoint import CheckpointError
    from ..train import NonFiniteLoss, train
    given = {name for name in kwargs
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
    opts = TrainOptions(**kwargs)
    try:
        result = train(opts, resume=resume, overwrite=overwrite, given=given, log=click.echo,
                       progress=not quiet)
    except (ValueError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:              # a full disk, a read-only --out, /dev/null/x, ...
        raise click.ClickException(f"{e.filename or opts.out}: {e.strerror or e}") from None
    except NonFiniteLoss as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:         # Ctrl-C outside the loop (reading the data, the model),
        from ..checkpoint import is_checkpoint     # or a third one under MPI
        then = (f"the last complete checkpoint in {opts.out} stands; continue with `tinygpt "
                f"train --resume --out {opts.out}`" if is_checkpoint(opts.out) else
                "no checkpoint was saved")
        click.echo(f"interrupted: {then}", err=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(130)
    if result.interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a late second press: the work is saved
        sys.exit(130)
