"""A tinygpt training checkpoint -> a Hugging Face GPT-2 directory, for PyTorch and its tooling.

    tinygpt export --model out --to my-gpt2
    >>> transformers.GPT2LMHeadModel.from_pretrained("my-gpt2")

writes into my-gpt2/

    model.safetensors   our parameters under their GPT-2 names, no `transformer.` prefix. Our
                        Linear stores [in, out] like GPT-2's Conv1D, so nothing is transposed;
                        the output projection is tied to wte, so there is no lm_head.weight.
    vocab.json, merges.txt      a BPE model's tokenizer (GPT2Tokenizer.save_hf)
    tokenizer_config.json       how AutoTokenizer uses them (special token, longest input)
    tinygpt_char_vocab.json     a character model's vocabulary; transformers cannot read it,
                                tinygpt.load can
    config.json         a GPT2Config, written last: its presence marks a complete export
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tensor import nn
from tensor.io import atomic_write_json, save_safetensors

from .pretrained import CHAR_VOCAB_FILE, CONFIG_FILE, MERGES_FILE, VOCAB_FILE, WEIGHTS_FILE

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, MERGES_FILE, TOKENIZER_CONFIG_FILE,
                CHAR_VOCAB_FILE)


class ExportError(RuntimeError):
    pass


def hf_config(model_config, eot_token: int | None) -> dict:
    """Our GPTConfig as a Hugging Face GPT2Config (config.json)."""
    c = model_config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",           # the tanh GELU of tensor.functional.gelu
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,                              # 4 * n_embd
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": c.dropout,                     # ours is one dropout rate for all three
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        # GPT2Config defaults both to 50256; a character model has no such token
        "bos_token_id": eot_token,
        "eos_token_id": eot_token,
    }


def hf_tensors(model) -> dict[str, np.ndarray]:
    """The weights under GPT-2's names; a model without biases gets zero biases (same function)."""
    tensors = {name: np.ascontiguousarray(x, dtype=np.float32)
               for name, x in model.state_dict().items()}
    for prefix, module in model.named_modules():      # prefix: "h.0.attn.c_attn."
        if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is None:
            width = module.weight.shape[-1]             # Linear (in, out) -> out; LayerNorm (C,)
            tensors[prefix + "bias"] = np.zeros(width, dtype=np.float32)
    return tensors


def export_hf(checkpoint_dir, hf_dir, overwrite: bool = False, which: str = "best",
              log=None) -> list[str]:
    """Write a checkpoint of the training run in checkpoint_dir (`which`: its "best" or
    "latest") as a Hugging Face GPT-2 directory hf_dir. log(line) hears which checkpoint was
    taken. Returns lines describing what was written (the command prints them).

    Everything that can be checked is checked before a byte is written: the destination, then
    the checkpoint (loaded in full). A write that fails half-way removes what it wrote."""
    from .checkpoint import is_checkpoint
    from .loading import LoadError, load_model
    src, dst = Path(checkpoint_dir), Path(hf_dir)
    _check_destination(src, dst, overwrite)
    if not is_checkpoint(src):
        raise ExportError(f"{src} is not a training run (no config.json written by `tinygpt "
                          f"train`); train first with `tinygpt train --out {src}`")
    try:
        model, tok, description = load_model(src, which=which, log=log)
    except LoadError as e:
        raise ExportError(str(e)) from None
    if log is not None:
        log(f"exporting {description}")
    created = not dst.exists()
    written = []
    try:
        dst.mkdir(parents=True, exist_ok=True)
        for name in EXPORT_FILES:            # --overwrite: no stale file from an earlier export
            (dst / name).unlink(missing_ok=True)
        lines = _write(model, tok, dst, written)
    except OSError as e:
        for path in written:
            path.unlink(missing_ok=True)
        if created and dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()
        raise ExportError(f"cannot write --to {dst}: {e.strerror or e} "
                          f"({e.filename or dst}); choose a directory you can write to") from None
    return lines


def _write(model, tok, dst: Path, written: list) -> list[str]:
    from .bpe import GPT2Tokenizer
    is_bpe = isinstance(tok, GPT2Tokenizer)
    written.append(dst / WEIGHTS_FILE)
    save_safetensors(dst / WEIGHTS_FILE, hf_tensors(model), metadata={"format": "pt"})
    c = model.config
    lines = [f"wrote {dst / WEIGHTS_FILE}: {model.num_parameters() / 1e6:.2f}M parameters, "
             f"{c.n_layer} layers, {c.n_head} heads, {c.n_embd} dims, block {c.block_size}, "
             f"vocab {c.vocab_size}"]
    if is_bpe:
        written += [dst / VOCAB_FILE, dst / MERGES_FILE]
        vocab, merges = tok.save_hf(dst)
        # how transformers' AutoTokenizer should use them: GPT-2's one special token, and the
        # longest input this model takes (without it transformers assumes no limit)
        written.append(dst / TOKENIZER_CONFIG_FILE)
        eot = tok.decode([tok.eot_token])
        atomic_write_json(dst / TOKENIZER_CONFIG_FILE, {
            "tokenizer_class": "GPT2Tokenizer", "model_max_length": c.block_size,
            "bos_token": eot, "eos_token": eot, "unk_token": eot, "add_prefix_space": False})
        lines.append(f"wrote {vocab}, {merges} and {dst / TOKENIZER_CONFIG_FILE} (GPT-2 BPE, "
                     f"{tok.vocab_size} tokens)")
    else:
        written.append(dst / CHAR_VOCAB_FILE)
        atomic_write_json(dst / CHAR_VOCAB_FILE, {
            "note": "tinygpt's character vocabulary. Hugging Face tokenizers cannot read it; "
                    "tinygpt.load (and `tinygpt generate --model DIR`) can.",
            "tokenizer": tok.to_dict()})
        lines.append(f"wrote {dst / CHAR_VOCAB_FILE}: the model's {tok.vocab_size} characters")
        lines.append(f"note: {CHAR_VOCAB_FILE} is tinygpt's character vocabulary (JSON; token id "
                     f"= position in tokenizer.chars); transformers' AutoTokenizer cannot load a "
                     f"character vocabulary, so encode text with it yourself for "
                     f"GPT2LMHeadModel, or run `tinygpt generate --model {dst}`")
    written.append(dst / CONFIG_FILE)
    atomic_write_json(dst / CONFIG_FILE, hf_config(c, tok.eot_token if is_bpe else None))
    lines.append(f"wrote {dst / CONFIG_FILE}; load it with "
                 f"transformers.GPT2LMHeadModel.from_pretrained({str(dst)!r})")
    return lines


def _check_destination(src: Path, dst: Path, overwrite: bool):
    if dst.exists() and not dst.is_dir():
        raise ExportError(f"--to {dst} is a file; give a directory to create")
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise ExportError(f"--to {dst} is the checkpoint directory itself; its config.json would "
                          f"be overwritten. Give another directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ExportError(f"--to {dst} exists and is not empty; choose a new directory, or pass "
                          f"--overwrite to replace the exported files in it")
    ancestor = dst.absolute()                # the nearest directory that exists: can we write?
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportError(f"cannot create --to {dst}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportError(f"cannot create --to {dst}: {ancestor} is not writable; choose a "
                          f"directory you can write to")
