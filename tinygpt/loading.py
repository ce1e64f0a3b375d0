"""One loader for every command and example: a model from a name, a Hugging Face directory or
a training run.

    model, tok, description = load_model("gpt2")              # released weights (Hub cache)
    model, tok, description = load_model("path/to/hf-dir")    # what save_pretrained writes
    model, tok, description = load_model("out")               # a `tinygpt train` run: its best
    model, tok, description = load_model("out", which="latest")
    model, tok, description = load_model("gpt2", weight_dtype="int8")   # quantized as it is read

One rule tells a training run from a Hugging Face directory: tinygpt.checkpoint.is_checkpoint.
A run is read by tinygpt/checkpoint.py, anything else by tinygpt/pretrained.py. Either way the
model comes back in eval mode, with its tokenizer and one line saying what was loaded (for a
run: which checkpoint, best or latest, and its iteration), and the tokenizer is checked against
the weights, so a mismatched config.json is an error here, not a crash mid-sentence.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

WHICH = ("best", "latest")


class LoadError(RuntimeError):
    """A model that cannot be loaded; the message names the file and says what to do."""


def load_model(name_or_dir, *, which: str = "best", dtype=np.float32, weight_dtype: str = "float32",
               log=None):
    """(model in eval mode, tokenizer, description) from a GPT-2 name, a Hugging Face GPT-2
    directory, or a training run (`which`: its "best" or "latest" checkpoint).

    weight_dtype "bfloat16" or "int8" (the commands' --dtype): the Linear weights and wte are
    quantized as they are read, one tensor at a time (tinygpt/quantize.py: load_quantized), so
    the peak memory is the compact model plus one float32 tensor, not the float32 model; the
    model is then for inference only. A bfloat16 Hugging Face file keeps its bits.
    log(line): where a run's warnings go (say, a damaged checkpoint skipped for an older one)."""
    from . import checkpoint
    from .pretrained import PretrainedError, load_pretrained, resolve
    from .quantize import check_weight_dtype
    if which not in WHICH:
        raise ValueError(f"load_model: which must be 'best' or 'latest', got {which!r}")
    check_weight_dtype("load_model", weight_dtype, dtype)
    if checkpoint.is_checkpoint(name_or_dir):
        try:
            model, tok, config = checkpoint.load_model(name_or_dir, dtype=dtype, which=which,
                                                       log=log, weight_dtype=weight_dtype)
        except checkpoint.CheckpointError as e:
            raise LoadError(str(e)) from None
        except (KeyError, ValueError, TypeError) as e:     # a config.json field of a wrong kind
            raise LoadError(f"{name_or_dir}: the training run's config.json cannot be used "
                            f"({type(e).__name__}: {e}); retrain, or restore it") from None
        description = config.get("source", str(name_or_dir))
        where = Path(config.get("checkpoint_dir", name_or_dir)) / checkpoint.CONFIG_FILE
        _check_vocabulary(tok, model, where=f"{where}: the tokenizer")
        return model.eval(), tok, description
    try:
        directory = resolve(name_or_dir)        # a name: its folder in the Hub cache
        model, tok = load_pretrained(directory, dtype=dtype, weight_dtype=weight_dtype)
    except PretrainedError as e:
        raise LoadError(str(e)) from None
    is_dir = os.path.isdir(os.fspath(name_or_dir))
    description = (f"{name_or_dir} (Hugging Face GPT-2 directory)" if is_dir else
                   f"{name_or_dir} (from the Hugging Face cache, {directory})")
    char_vocab = getattr(tok, "eot_token", None) is None
    _check_vocabulary(tok, model, where=f"{directory / 'tinygpt_char_vocab.json'}" if char_vocab
                      else f"{directory}: the tokenizer")
    return model.eval(), tok, description


def _check_vocabulary(tok, model, where: str):
    """Every token needs an embedding row, else a prompt indexes past wte. A BPE model may have
    more rows than tokens (GPT-2's 50,257 padded to 50,304 for a faster matmul; generate() never
    samples the extra rows); a character model is written with exactly one row per character,
    so a difference there means the vocabulary is not this model's."""
    rows = model.config.vocab_size
    exact = getattr(tok, "eot_token", None) is None
    if tok.vocab_size > rows or (exact and tok.vocab_size != rows):
        raise LoadError(f"{where} has {tok.vocab_size} tokens but the weights have {rows} "
                        f"(wte.weight has {rows} rows): the tokenizer does not belong to these "
                        f"weights. Restore the original file, or re-export the model")
