"""`tinygpt export`: a training run's checkpoint as a Hugging Face GPT-2 directory.

    tinygpt export --model out --to my-gpt2

The writing is tinygpt/export.py's export_hf; this is the command line around it.
"""
from __future__ import annotations

import click

from .options import checkpoint_option, run_option, set_threads, threads_option


@click.command("export")
@run_option(help="The run directory written by `tinygpt train --out`.")
@click.option("--to", "to", type=click.Path(), required=True,
              help="The Hugging Face GPT-2 directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace the exported files in a non-empty --to.")
@checkpoint_option
@threads_option
def export_cmd(model_name, to, overwrite, which, threads):
    """Write a training run's checkpoint (the best by default) as a Hugging Face GPT-2 directory.

    \b
      tinygpt export --model out --to my-gpt2
      python -c "import transformers; transformers.GPT2LMHeadModel.from_pretrained('my-gpt2')"
    """
    from ..export import ExportError, export_hf
    set_threads(threads)
    try:
        lines = export_hf(model_name, to, overwrite=overwrite, which=which,
                          log=lambda line: click.echo(line, err=True))
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    for line in lines:
        click.echo(line)
