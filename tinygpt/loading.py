"""One loader for every command and example: a model from a name, a Hugging Face directory or
a training run.

    model, tok, description = load_model("gpt2")              # released weights (Hub cache)
    model, tok, description = load_model("path/to/hf-dir")    # what save_pretrained writes
    model, tok, description = load_model("out")               # a `tinygpt train` run: its best
    model, tok, description = load_model("out", which="latest")
    model, tok, description = load_model("gpt2", weight_dtype="int8")   # quantized as it is read

Two kinds of source, one path. tinygpt/checkpoint.py opens a run's checkpoint and
tinygpt/pretrained.py a Hugging Face directory; each says what it holds as a `Source` (the
config, the tokenizer, a description, and a way to read the weights one tensor, or a few rows
of one, at a time). Then the same steps run for both, each once, here:

    check the tokenizer against the embedding rows     (a mismatch is an error, not a crash
                                                        mid-sentence)
    GPT(config, init=False)                            (zeros: no memory until written)
    open the weights: every name and shape checked from the file's header first
    fill the model tensor by tensor (tinygpt/quantize.py: load_weights), quantizing to
                                                        bfloat16 or int8 as it reads if asked

One rule tells a training run from a Hugging Face directory: tinygpt.checkpoint.is_checkpoint.
Every error is a LoadError (CheckpointError and PretrainedError are kinds of it) whose message
names the file and says what to do.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

WHICH = ("best", "latest")


class LoadError(RuntimeError):
    """A model that cannot be loaded; the message names the file and says what to do."""


@dataclass
class Source:
    """What a checkpoint or a Hugging Face directory holds, before a weight is read.

    weights(model) opens the file, checks its names and shapes against the model, and yields
    read(name, rows=None) -> array (tinygpt/quantize.py's load_weights says what it may return);
    an error while the file is open becomes a LoadError naming it. vanished() is true when the
    source was removed while we read it (a training run pruned the checkpoint): look again."""
    config: "GPTConfig"                     # noqa: F821 (tinygpt.model.GPTConfig)
    tokenizer: object
    description: str                        # one line: what was loaded
    vocabulary_file: str                    # where the tokenizer came from, for errors
    vocabulary_fix: str                     # what to do when it does not fit the weights
    weights: Callable[..., AbstractContextManager]
    error: type = LoadError                 # the source's own kind of LoadError
    vanished: Callable[[], bool] = lambda: False
    config_file: str | None = None          # where the config came from, for errors


def load_model(name_or_dir, *, which: str = "best", dtype=np.float32, weight_dtype: str = "float32",
               log=None, option: str = "--model"):
    """(model in eval mode, tokenizer, description) from a GPT-2 name, a Hugging Face GPT-2
    directory, or a training run (`which`: its "best" or "latest" checkpoint).

    weight_dtype "bfloat16" or "int8" (the commands' --dtype): the Linear weights and wte are
    quantized as they are read, one tensor at a time, so the peak memory is the compact model
    plus one float32 tensor, not the float32 model; the model is then for inference only. A
    bfloat16 Hugging Face file keeps its bits. dtype: the float dtype of an unquantized model.
    log(line): where a run's warnings go (say, a damaged checkpoint skipped for an older one).
    option: the command's option that named the model (`--model`; train's `--init-from`), which
    the advice in errors names."""
    from .quantize import check_weight_dtype
    if which not in WHICH:
        raise ValueError(f"load_model: which must be 'best' or 'latest', got {which!r}")
    check_weight_dtype("load_model", weight_dtype, dtype)
    try:
        return _load(name_or_dir, which, dtype, weight_dtype, log, option)
    except OSError as e:           # unreadable (permissions), a directory, an I/O error, ...
        raise _unreadable(name_or_dir, e) from None


def _unreadable(name_or_dir, e: OSError) -> LoadError:
    """An OSError met while reading a source, as the source's kind of LoadError."""
    from . import checkpoint, pretrained
    try:
        error = (checkpoint.CheckpointError if checkpoint.is_checkpoint(name_or_dir) else
                 pretrained.PretrainedError)
    except OSError:
        error = pretrained.PretrainedError
    return error(f"cannot read {e.filename or name_or_dir}: {e.strerror or e}; check that it is "
                 f"a file this user may read")


def _load(name_or_dir, which: str, dtype, weight_dtype: str, log, option: str):
    from . import checkpoint, pretrained
    from .model import GPT
    from .quantize import load_weights
    if checkpoint.is_checkpoint(name_or_dir):
        source = checkpoint.open_source(name_or_dir, which, log)
    else:
        source = pretrained.open_source(name_or_dir, option)
    check_vocabulary(source.tokenizer, source.config.vocab_size, source.vocabulary_file,
                     source.vocabulary_fix, source.error)
    check_memory(source.config, weight_dtype, source.config_file or source.description,
                 source.error)
    model = GPT(source.config, dtype=dtype, init=False)     # zeros: no memory until written
    try:
        with source.weights(model) as read:
            load_weights(model, weight_dtype, read)
    except LoadError:
        if source.vanished():                  # pruned between the check and the read
            return _load(name_or_dir, which, dtype, weight_dtype, log, option)
        raise
    return model.eval(), source.tokenizer, source.description


def check_vocabulary(tok, rows: int, where: str, fix: str, error: type = LoadError) -> None:
    """Every token needs an embedding row, else a prompt indexes past wte. A BPE model may have
    more rows than tokens (GPT-2's 50,257 padded to 50,304 for a faster matmul; generate() never
    samples the extra rows); a character model is written with exactly one row per character,
    so a difference there means the vocabulary is not this model's."""
    exact = getattr(tok, "eot_token", None) is None
    if tok.vocab_size > rows or (exact and tok.vocab_size != rows):
        raise error(f"{where} has {tok.vocab_size} token{'' if tok.vocab_size == 1 else 's'} "
                    f"but the weights have {rows} (wte.weight has {rows} "
                    f"row{'' if rows == 1 else 's'}): the tokenizer does not belong to these "
                    f"weights. {fix}")


def check_memory(config, weight_dtype: str, where: str, error: type = LoadError) -> None:
    """Refuse, before a byte is allocated, a model whose weights do not fit in the memory
    available now (tinygpt.train.available_memory): a config.json that says vocab_size 1e9 or
    n_layer 1e12 would otherwise end in NumPy's allocation error, or build blocks for hours.
    The peak of a load is the weights at weight_dtype plus, when they are quantized, one
    float32 tensor (the largest: wte, or a block's c_fc)."""
    from .quantize import weight_bytes
    from .train import available_memory
    C = config.n_embd
    need = weight_bytes(config, weight_dtype)
    if weight_dtype != "float32":
        need += 4 * max(config.vocab_size, 4 * C) * C
    have = available_memory()
    if have is not None and need > have:
        smaller = ("" if weight_dtype == "int8" else
                   f"; --dtype int8 needs {format_bytes(weight_bytes(config, 'int8'))}")
        raise error(f"{where}: n_layer {config.n_layer}, n_embd {C}, vocab_size "
                    f"{config.vocab_size} and block size {config.block_size} make weights of "
                    f"{format_bytes(need)} in {weight_dtype}, but {format_bytes(have)} of memory "
                    f"is available{smaller}. Is the config right?")


def format_bytes(n: int) -> str:
    """1234567 -> "1.2 MB" (powers of 1000, as `free -h --si` and the download pages count)."""
    if n >= 10**15:
        return f"{n:.1e} bytes"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
