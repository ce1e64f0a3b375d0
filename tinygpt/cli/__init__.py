"""The `tinygpt` command line: one group, one module per command (or pair of commands).

    train       cli/train.py        a GPT on text; checkpoints and metrics go to --out
    prepare     cli/prepare.py      tokenize a corpus once into train.bin / val.bin
    sample      cli/generate.py     text from a training run
    generate    cli/generate.py     text from a released GPT-2 (the same command as sample)
    perplexity  cli/perplexity.py   how well a model predicts a text file
    export      cli/export.py       a run as a Hugging Face GPT-2 directory
    inspect     cli/inspect.py      follow a prompt through the model
    plot        cli/inspect.py      a run's loss curves

Options shared by several commands are stated once, in cli/options.py.
"""
from __future__ import annotations

import click

from .export import export_cmd
from .generate import generate_cmd, sample_cmd
from .inspect import inspect_cmd, plot_cmd
from .perplexity import perplexity_cmd
from .prepare import prepare_cmd
from .train import train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tinygpt")
def main():
    """tinygpt: train, sample and run GPT-2 on a CPU, in plain Python.

    \b
    Start here:
      tinygpt train            # a small GPT-2 on tiny Shakespeare (about 2 minutes)
      tinygpt sample           # read what it writes
    """


for _command in (train_cmd, prepare_cmd, sample_cmd, generate_cmd, perplexity_cmd, export_cmd,
                 inspect_cmd, plot_cmd):
    main.add_command(_command)

