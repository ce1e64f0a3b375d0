"""Commands for pretrained GPT-2: generate, perplexity, export (being written)."""
import click


@click.command()
def generate_cmd():
    """Generate text with a pretrained GPT-2 (not implemented yet)."""
    raise click.ClickException("not implemented yet")


perplexity_cmd = click.Command("perplexity", callback=generate_cmd.callback)
export_cmd = click.Command("export", callback=generate_cmd.callback)
