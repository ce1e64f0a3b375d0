"""The `tinygpt` command line."""
from __future__ import annotations

import sys

import click

from .model import PRESETS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tinygpt")
def main():
    """tinygpt: train, sample and run GPT-2 on a CPU, in plain Python.

    \b
    Start here:
      tinygpt train            # a small GPT-2 on tiny Shakespeare (about 2 minutes)
      tinygpt sample           # read what it writes
    """


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


@main.command()
@click.option("--preset", type=click.Choice(list(PRESETS)), default="baby", show_default=True,
              help="Model size to start from; the options below override its fields.")
@click.option("--n-layer", type=int, callback=_positive, help="Transformer blocks.")
@click.option("--n-head", type=int, callback=_positive, help="Attention heads per block.")
@click.option("--n-embd", type=int, callback=_positive, help="Embedding width (divisible by n-head).")
@click.option("--block-size", type=int, callback=_positive, help="Context length in tokens.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), help="Dropout probability.")
@click.option("--bias/--no-bias", default=None,
              help="Biases in the Linear and LayerNorm layers (default: the preset's).")
@click.option("--batch-size", type=int, default=12, show_default=True, callback=_positive)
@click.option("--max-iters", type=int, default=2000, show_default=True, callback=_positive)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True,
              help="Peak learning rate.")
@click.option("--min-lr", type=click.FloatRange(0), default=1e-4, show_default=True,
              help="Learning rate at the end of the cosine decay.")
@click.option("--warmup-iters", type=click.IntRange(0), default=100, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=0.1, show_default=True)
@click.option("--grad-clip", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Clip the global gradient norm to this (0: no clipping).")
@click.option("--eval-interval", type=int, default=250, show_default=True, callback=_positive,
              help="Evaluate (and checkpoint) every this many iterations.")
@click.option("--eval-iters", type=int, default=20, show_default=True, callback=_positive,
              help="Batches averaged per evaluation.")
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Directory for the checkpoint and metrics.csv.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False),
              help="A UTF-8 text file to train on (default: the bundled tiny Shakespeare).")
@click.option("--tokenizer", type=click.Choice(["char", "gpt2"]), default="char",
              show_default=True, help="Characters, or GPT-2's byte-level BPE.")
@click.option("--threads", type=int, callback=_positive,
              help="CPU threads for the kernels (default: all cores).")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(resume, quiet, **kwargs):
    """Train a GPT on text; checkpoints go to --out.

    With no options: the `baby` preset (4 layers, 4 heads, 128 dims, block 64) on tiny
    Shakespeare, 2000 iterations — the reference CPU recipe.
    """
    from .train import TrainOptions, train as run, NonFiniteLoss
    from .checkpoint import CheckpointError
    opts = TrainOptions(**kwargs)
    try:
        result = run(opts, resume=resume, log=click.echo, progress=not quiet)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        raise click.ClickException(str(e))
    except NonFiniteLoss as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if result.interrupted:
        sys.exit(130)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="out", show_default=True,
              help="The checkpoint directory written by `tinygpt train`.")
@click.option("--prompt", default="\n", show_default=repr("\n"), help="Text to continue.")
@click.option("--num-samples", type=int, default=1, show_default=True, callback=_positive)
@click.option("--max-new-tokens", type=int, default=500, show_default=True, callback=_positive)
@click.option("--temperature", type=click.FloatRange(0), default=0.8, show_default=True,
              help="Higher is more random; 0 always picks the likeliest token.")
@click.option("--top-k", type=int, default=200, show_default=True, callback=_positive,
              help="Sample among the k likeliest tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True),
              help="Sample among the likeliest tokens whose probabilities add up to p.")
@click.option("--seed", type=int, default=1337, show_default=True)
def sample(out, prompt, num_samples, max_new_tokens, temperature, top_k, top_p, seed):
    """Write text with a model trained by `tinygpt train`."""
    from .checkpoint import load_model, CheckpointError
    from .generate import generate
    try:
        model, tok, _ = load_model(out)
        ids = tok.encode(prompt)
    except (CheckpointError, ValueError, KeyError) as e:
        raise click.ClickException(str(e))
    for n in range(num_samples):
        click.echo(prompt, nl=False)
        for t in generate(model, ids, max_new_tokens, temperature, top_k, top_p,
                          seed=seed + n):
            click.echo(tok.decode([t]), nl=False)
        click.echo("\n" + "-" * 40)


# `generate`, `perplexity` and `export` (pretrained GPT-2 and Hugging Face files) live in their
# own module to keep this one short.
from .cli_pretrained import generate_cmd, perplexity_cmd, export_cmd  # noqa: E402

main.add_command(generate_cmd, "generate")
main.add_command(perplexity_cmd, "perplexity")
main.add_command(export_cmd, "export")

# `inspect` and `plot` (looking inside a model, plotting a run) live in tinygpt/cli_learn.py.
from .cli_learn import inspect_cmd, plot_cmd  # noqa: E402

main.add_command(inspect_cmd, "inspect")
main.add_command(plot_cmd, "plot")


if __name__ == "__main__":
    main()
