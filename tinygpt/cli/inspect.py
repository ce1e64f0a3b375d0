"""`tinygpt inspect` and `tinygpt plot`: commands for looking inside a model and at a run.

    tinygpt inspect --model gpt2 "The cat sat on the"          # tokens → embeddings → blocks → next token
    tinygpt inspect --model out --layer 2 --head 1 --png att.png "ROMEO:"
    tinygpt plot --model out                                     # out/metrics.csv → out/loss.png

The work is done in tinygpt/inspect.py; PNGs need the optional extra `plot` (matplotlib).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import click

from .options import (MODEL_HELP, check_image_path, checkpoint_option, load_for_command,
                      run_option, set_threads, threads_option)

_PNG_HELP = ("Also save every head of --layer as heat maps in this image (.png; any format "
             "matplotlib writes, such as .svg or .pdf; needs matplotlib: "
             'pip install "tinygpt[plot]").')


# ----------------------------------------------------------------------------------------------
# inspect
# ----------------------------------------------------------------------------------------------
@click.command("inspect")
@click.argument("prompt")
@click.option("--model", "model_name", default="gpt2", show_default=True, help=MODEL_HELP)
@click.option("--layer", type=int, default=0, show_default=True,
              help="Which block's attention to show (0 is the first, -1 the last).")
@click.option("--head", type=int, default=0, show_default=True,
              help="Which head of that block to draw in the terminal.")
@click.option("--top-k", "top_k", type=click.IntRange(1), default=10, show_default=True,
              help="How many likeliest next tokens to list.")
@click.option("--png", type=click.Path(dir_okay=False), callback=check_image_path, help=_PNG_HELP)
@checkpoint_option
@threads_option
def inspect_cmd(prompt, model_name, layer, head, top_k, png, which, threads):
    """Follow PROMPT through the model: its tokens, their embeddings, the shapes in each block,
    the attention weights of one head as a heat map, and the likeliest next tokens.

    \b
      tinygpt inspect --model gpt2 "The cat sat on the"
      tinygpt inspect --model out --layer -1 --head 2 "ROMEO:"
    """
    from ..inspect import (PlotUnavailable, check_layer_head, encode, report, require_matplotlib,
                          save_attention_png, token_labels, trace)
    if png:                                   # fail before the (slow) model load, not after
        try:
            require_matplotlib()
        except PlotUnavailable as e:
            raise click.ClickException(str(e)) from None
    set_threads(threads)
    model, tok = load_for_command(model_name, which)
    try:
        layer, head = check_layer_head(model.config, layer, head)
        ids = encode(tok, prompt)
    except (ValueError, KeyError) as e:
        raise click.ClickException(str(e)) from None
    block = model.config.block_size
    if len(ids) > block:
        click.echo(f"the prompt is {len(ids)} tokens; the model reads at most {block}: "
                   f"using the last {block}", err=True)
        ids = ids[-block:]
    click.echo(report(model, tok, ids, layer, head, top_k))
    if png:
        maps = trace(model, ids).layers[layer].attention
        try:
            path = save_attention_png(maps, token_labels(tok, ids), png,
                                      title=f"{model_name}: attention of layer {layer}")
        except OSError as e:
            raise click.ClickException(f"cannot write --png {png}: {e.strerror or e}") from None
        click.echo(f"\nsaved the {model.config.n_head} heads of layer {layer} to {path}")


# ----------------------------------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------------------------------
def read_metrics(path: Path) -> dict:
    """metrics.csv (written by `tinygpt train`) as columns: {"iter": [...], "train_loss": [...]...}."""
    if not path.exists():
        raise click.ClickException(f"{path} not found: `tinygpt train --out {path.parent}` writes "
                                   f"it; is --model the run directory you trained into?")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                                   f"offset {e.start}); is it a metrics.csv written by "
                                   f"`tinygpt train`?") from None
    except (OSError, csv.Error) as e:
        raise click.ClickException(f"cannot read {path}: {e}") from None
    needed = ("iter", "train_loss", "val_loss")
    if rows and not all(k in rows[0] for k in needed):
        raise click.ClickException(f"{path} has columns {list(rows[0])}; expected at least "
                                   f"{', '.join(needed)} (a metrics.csv from `tinygpt train`)")
    if not rows:
        raise click.ClickException(f"{path} has no rows yet: training writes one at each "
                                   f"evaluation (every --eval-interval iterations)")
    try:
        return {k: [float(r[k]) for r in rows] for k in needed}
    except (TypeError, ValueError) as e:
        raise click.ClickException(f"{path}: a row holds a value that is not a number ({e})") \
            from None


@click.command("plot")
@run_option(help="The run directory `tinygpt train --out` wrote (it holds metrics.csv).")
@click.option("--png", type=click.Path(dir_okay=False), callback=check_image_path,
              help="Where to save the plot (default: RUN/loss.png); .png, or any format "
                   "matplotlib writes, such as .svg or .pdf.")
def plot_cmd(model_name, png):
    """Plot the train and val loss curves of a training run (RUN/metrics.csv) to a PNG.

    Needs matplotlib: pip install "tinygpt[plot]".
    """
    out = model_name
    from ..inspect import PlotUnavailable, require_matplotlib
    path = Path(out) / "metrics.csv"
    m = read_metrics(path)
    best = min(range(len(m["iter"])), key=lambda i: m["val_loss"][i])
    click.echo(f"{path}: {len(m['iter'])} evaluations, iterations {m['iter'][0]:.0f}.."
               f"{m['iter'][-1]:.0f}; last train loss {m['train_loss'][-1]:.4f}, val loss "
               f"{m['val_loss'][-1]:.4f}; best val loss {m['val_loss'][best]:.4f} at iteration "
               f"{m['iter'][best]:.0f}")
    try:
        Figure = require_matplotlib()
    except PlotUnavailable as e:
        raise click.ClickException(str(e)) from None
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(m["iter"], m["train_loss"], marker="o", markersize=3, label="train")
    ax.plot(m["iter"], m["val_loss"], marker="o", markersize=3, label="val")
    ax.axhline(m["val_loss"][best], color="grey", linewidth=0.8, linestyle=":",
               label=f"best val {m['val_loss'][best]:.4f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(f"{Path(out).resolve().name}: loss (e^loss = perplexity)")
    ax.grid(alpha=0.3)
    ax.legend()
    target = Path(png) if png else Path(out) / "loss.png"
    try:
        fig.savefig(target, dpi=110)
    except OSError as e:
        raise click.ClickException(f"cannot write {target}: {e.strerror or e}") from None
    click.echo(f"saved {target}")
    if not all(math.isfinite(v) for v in m["train_loss"] + m["val_loss"]):
        click.echo("note: some losses are not finite (inf/nan); they are not drawn", err=True)
