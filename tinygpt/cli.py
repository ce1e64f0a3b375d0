"""The `tinygpt` command line."""
from __future__ import annotations

import click

from .cli_common import pick_alias, pick_prompt, run_option, sampling_options, set_threads
# `sample` shares --dtype and the batched printing of several samples with `generate`
from .cli_pretrained import dtype_option, load_with_dtype, print_samples


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tinygpt")
def main():
    """tinygpt: train, sample and run GPT-2 on a CPU, in plain Python.

    \b
    Start here:
      tinygpt train            # a small GPT-2 on tiny Shakespeare (about 2 minutes)
      tinygpt sample           # read what it writes
    """


@main.command()
@run_option(help="The run directory written by `tinygpt train --out` (or any model "
                 "`generate` takes).")
@sampling_options
@dtype_option
@click.pass_context
def sample(ctx, model_name, out_alias, prompt_arg, prompt_opt, num_samples, max_new_tokens,
           temperature, top_k, top_p, seed, stop_at_eot, which, threads, dtype):
    """Write text with a model trained by `tinygpt train` (its best checkpoint by default).

    \b
      tinygpt sample --max-new-tokens 300 --seed 1337
      tinygpt sample --model out --checkpoint latest "ROMEO:"

    `tinygpt generate` is the same command for a released GPT-2 (its --model defaults to gpt2).
    --num-samples N decodes the N samples together (sample 1 streams, the others print at the
    end); --dtype int8 or bfloat16 runs with compact weights.
    """
    model_name = pick_alias(ctx, model_name, out_alias)
    prompt = pick_prompt(prompt_arg, prompt_opt)
    set_threads(threads)
    model, tok = load_with_dtype(model_name, which, dtype)
    print_samples(model, tok, prompt, num_samples, max_new_tokens, temperature, top_k, top_p,
                  seed, stop_at_eot)


# `train` lives in tinygpt/cli_train.py; `generate`, `perplexity` and `export` (pretrained GPT-2
# and Hugging Face files) in tinygpt/cli_pretrained.py, to keep this module short.
from .cli_train import train_cmd  # noqa: E402
from .cli_pretrained import generate_cmd, perplexity_cmd, export_cmd  # noqa: E402

main.add_command(train_cmd, "train")
from .cli_prepare import prepare_cmd  # noqa: E402

main.add_command(prepare_cmd, "prepare")
main.add_command(generate_cmd, "generate")
main.add_command(perplexity_cmd, "perplexity")
main.add_command(export_cmd, "export")

# `inspect` and `plot` (looking inside a model, plotting a run) live in tinygpt/cli_learn.py.
from .cli_learn import inspect_cmd, plot_cmd  # noqa: E402

main.add_command(inspect_cmd, "inspect")
main.add_command(plot_cmd, "plot")


if __name__ == "__main__":
    main()
