"""Released GPT-2 weights in: a Hugging Face GPT-2 directory, read for tinygpt/loading.py.

A Hugging Face GPT-2 directory (what `save_pretrained` writes, what the Hub serves) holds

    config.json          n_embd, n_layer, n_head, n_positions, vocab_size, layer_norm_epsilon, ...
    model.safetensors    the weights, by name (below)
    vocab.json           the BPE tokens, in GPT-2's byte-to-unicode alphabet    (see tinygpt/bpe.py)
    merges.txt           the merges that build them, in rank order

The weight names are ours already (tinygpt/model.py uses the released names), with two wrinkles:

    transformer.h.0.attn.c_attn.weight   (768, 2304)   a `transformer.` prefix, or none
    h.0.attn.bias     (1, 1, 1024, 1024)                a causal-mask buffer, not a weight: skipped
    h.0.attn.masked_bias                                another buffer of old checkpoints: skipped
    lm_head.weight    (50257, 768)                      the output projection; GPT-2 ties it to wte

GPT-2's Conv1D layers store their weight [in, out], and so does our Linear: no transpose.

Safety: weights come from the internet. We read them with tensor/io.py, our own safetensors
reader, which checks every length, offset and shape against the file before reading a byte
(why ours and not the `safetensors` package: the runtime depends only on numpy, numba and click,
and the checks are short enough to read). A pickle file (`pytorch_model.bin`) is refused: loading
a pickle runs whatever code it contains.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from tensor.io import SafetensorsError, open_safetensors

from .loading import LoadError
from .model import GPT, GPTConfig

HUB_ORG = "openai-community"
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, MERGES_FILE = HUB_FILES
CHAR_VOCAB_FILE = "tinygpt_char_vocab.json"   # written by `tinygpt export` for a char-level model
OTHER_FORMATS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")   # never read

# GPT-2's GELU is the tanh approximation; Hugging Face knows it under these two names.
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")   # causal-mask buffers, not weights
_PREFIX = "transformer."


class PretrainedError(LoadError):
    """A pretrained model that cannot be loaded; the message names the file (and key)."""


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------

def open_source(name_or_path, option: str = "--model"):
    """A GPT-2 name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, optionally prefixed
    "openai-community/") or a local Hugging Face GPT-2 directory, as what tinygpt/loading.py
    loads: its config.json and tokenizer read and checked, its weights not yet read.

    A name is fetched through huggingface_hub into its cache (~/.cache/huggingface, or HF_HOME);
    with HF_HUB_OFFLINE=1 only the cache is used. A directory is read with no network at all.
    The weights are read one tensor at a time (F16 and BF16 widened to float32, or BF16 kept as
    its bits for --dtype bfloat16): every key and shape is checked from the header first, and
    lm_head.weight, if stored, must equal wte (GPT-2 ties them). option: the command's option
    that named the model (`--model`, or train's `--init-from`), for the advice in errors."""
    from .loading import Source
    directory = resolve(name_or_path, option)
    config = config_from_hf(read_hf_config(directory / CONFIG_FILE), directory / CONFIG_FILE)
    check_config_against_header(directory, config)
    tokenizer, vocabulary = load_tokenizer(directory)
    is_dir = os.path.isdir(os.fspath(name_or_path))
    description = (f"{name_or_path} (Hugging Face GPT-2 directory)" if is_dir else
                   f"{name_or_path} (from the Hugging Face cache, {directory})")
    char_vocab = getattr(tokenizer, "eot_token", None) is None
    return Source(config=config, tokenizer=tokenizer, description=description,
                  vocabulary_file=vocabulary,
                  vocabulary_fix=("Restore the original file, or re-export the model" if char_vocab
                                  else f"Add the model's own {VOCAB_FILE} and {MERGES_FILE}, or "
                                       f"restore the original files"),
                  weights=lambda model: _weights(directory, model), error=PretrainedError,
                  config_file=str(directory / CONFIG_FILE))


def resolve(name_or_path, option: str = "--model") -> Path:
    """The local directory holding the files: the path itself, or the Hub cache for a name."""
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    name = text[len(HUB_ORG) + 1:] if text.startswith(HUB_ORG + "/") else text
    if name in GPT2_NAMES:
        return download(name, option)
    if path.exists():
        raise PretrainedError(f"{path} is a file; {option} wants a directory holding {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE} (a Hugging Face GPT-2 directory), or a name")
    raise PretrainedError(f"{text!r} is neither a directory nor a GPT-2 name; give a training "
                          f"run (`tinygpt train --out {text}` makes one), a Hugging Face "
                          f"directory with {CONFIG_FILE} and {WEIGHTS_FILE}, or one of: "
                          f"{', '.join(GPT2_NAMES)}")


# ----------------------------------------------------------------------------------------------
# Fetching from the Hugging Face Hub (optional extra `hub`)
# ----------------------------------------------------------------------------------------------

def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """Can a TCP connection to the Hub be opened? Asked once before downloading: without it, a
    machine with no network waits ~25 s while huggingface_hub retries, and then fails anyway.
    Behind a proxy (HTTPS_PROXY, ALL_PROXY) a direct connection proves nothing: assume yes."""
    import socket
    from urllib.parse import urlsplit
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except (OSError, ValueError):           # no route, no DNS, refused, timed out, bad URL
        return False
    return True


def download(name: str, option: str = "--model") -> Path:
    """The four files of openai-community/<name> in the Hub cache (fetched once); their folder.

    Files already in the cache are used without contacting the Hub (GPT-2's files never change),
    so a machine that downloaded them once runs offline. HF_HUB_OFFLINE=1 forbids downloading;
    we read it ourselves, so it holds even if huggingface_hub was imported before it was set.
    """
    try:
        from huggingface_hub import constants, hf_hub_download
        # huggingface_hub.utils exports these in old and current (2.x) versions alike
        from huggingface_hub.utils import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:
        raise PretrainedError(
            f"downloading {name!r} needs the optional package huggingface_hub: "
            f"pip install 'tinygpt[hub]'. Or pass {option} DIR, a local directory holding "
            f"{', '.join(HUB_FILES)}") from None
    repo, offline = f"{HUB_ORG}/{name}", _offline()
    reachable = []                      # the Hub probe's answer, asked at the first cache miss

    def fetch(filename: str) -> Path:
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=True))  # cache only
        except LocalEntryNotFoundError:
            if not offline and not reachable:
                reachable.append(_hub_reachable(constants.ENDPOINT))
            if offline or not reachable[0]:
                raise
        return Path(hf_hub_download(repo, filename))                             # the network

    paths = []
    for filename in HUB_FILES:
        try:
            paths.append(fetch(filename))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled):
            why = ("HF_HUB_OFFLINE is set" if offline else
                   "the Hub could not be reached (is this machine offline?)")
            raise PretrainedError(
                f"{repo}/{filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                f"and {why}. Connect to the internet (and unset HF_HUB_OFFLINE) to download it "
                f"once, or pass {option} DIR, a local directory holding "
                f"{', '.join(HUB_FILES)}") from None
        except Exception as e:   # HTTP status, connection reset, disk full: say which file
            raise PretrainedError(f"downloading {repo}/{filename} failed ({type(e).__name__}: "
                                  f"{e}); check the connection and retry, or pass {option} DIR, "
                                  f"a local directory holding {', '.join(HUB_FILES)}") from e
    folders = {p.parent for p in paths}
    if len(folders) != 1:      # hf_hub_download puts one revision's files in one snapshot folder
        raise PretrainedError(f"the cached files of {repo} are in different folders "
                              f"({sorted(map(str, folders))}); clear the cache and download again")
    return folders.pop()


# ----------------------------------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------------------------------

def read_hf_config(path: Path) -> dict:
    if not path.exists():
        hint = (f" It holds {_listing(path.parent)}." if path.parent.is_dir() else "")
        raise PretrainedError(f"{path} is missing: a Hugging Face GPT-2 directory needs "
                              f"{CONFIG_FILE} and {WEIGHTS_FILE} (plus {VOCAB_FILE} and "
                              f"{MERGES_FILE} for the tokenizer).{hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if any((path.parent / name).exists() for name in ("optimizer.safetensors", "rng.json")):
            raise PretrainedError(f"{path} is not valid JSON ({e}): the config of a `tinygpt "
                                  f"train` checkpoint, damaged. Restore it from a backup, or "
                                  f"load another checkpoint of the run") from None
        raise PretrainedError(f"{path} is not valid JSON ({e}); re-download or re-export it") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def config_from_hf(hf: dict, path=CONFIG_FILE) -> GPTConfig:
    """Hugging Face GPT2Config fields -> our GPTConfig (dropout 0: this is for inference)."""
    def refuse(key, problem):
        return PretrainedError(f"{path}: {key} {problem}")

    if hf.get("model_type", "gpt2") != "gpt2":
        raise refuse("model_type", f"is {hf['model_type']!r}; only GPT-2 (\"gpt2\") is supported")
    fields = {}
    for ours, theirs in (("n_embd", "n_embd"), ("n_layer", "n_layer"), ("n_head", "n_head"),
                         ("vocab_size", "vocab_size"), ("block_size", "n_positions")):
        value = hf.get(theirs, hf.get("n_ctx") if theirs == "n_positions" else None)
        if value is None:
            raise refuse(theirs, "is missing")
        if type(value) is not int or value < 1:
            raise refuse(theirs, f"must be a positive integer, got {value!r}")
        fields[ours] = value
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not math.isclose(eps, 1e-5, rel_tol=1e-9):
        raise refuse("layer_norm_epsilon", f"is {eps!r}; tinygpt's LayerNorm uses GPT-2's 1e-5")
    act = hf.get("activation_function", "gelu_new")
    if act not in TANH_GELU:
        raise refuse("activation_function", f"is {act!r}; tinygpt implements GPT-2's tanh GELU "
                                            f"({' / '.join(TANH_GELU)}) only")
    if hf.get("n_inner") not in (None, 4 * fields["n_embd"]):
        raise refuse("n_inner", f"is {hf['n_inner']}; tinygpt's MLP is 4 * n_embd = "
                                f"{4 * fields['n_embd']} wide")
    for key, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                           ("add_cross_attention", False)):
        if hf.get(key, supported) != supported:
            raise refuse(key, f"is {hf[key]!r}; tinygpt supports only {supported}")
    try:
        return GPTConfig(**fields, dropout=0.0, bias=True)
    except ValueError as e:
        raise PretrainedError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------------------------
# model.safetensors
# ----------------------------------------------------------------------------------------------

FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")   # safetensors dtypes a weight may have
_TIE_ROWS = 1024        # rows of wte and lm_head compared at a time


@contextlib.contextmanager
def _weights(directory: Path, model: GPT):
    """directory/model.safetensors open, its keys and shapes checked against model, yielding
    read(name, rows=None) by our parameter names (tinygpt/quantize.py: load_weights).

    Each tensor comes as stored (BF16 as its bits, no float32 copy): load_weights widens it
    exactly, or keeps a BF16 tensor's bits for --dtype bfloat16."""
    path = directory / WEIGHTS_FILE
    if not path.exists():
        _refuse_other_formats(directory, path)
    try:
        with open_safetensors(path) as f:
            stored = {key: (f.shape(key), f.dtype(key), f.dtype(key) in FLOAT_DTYPES)
                      for key in f.names()}
            keys, lm_head = match_hf_keys(stored, model, str(path))
            if lm_head is not None:
                _check_tied_rows(f, lm_head, keys, str(path))
            yield lambda name, rows=None: f.read(keys[name], raw=True, rows=rows)
    except SafetensorsError as e:
        raise PretrainedError(str(e)) from None
    except ValueError as e:                      # a weight that cannot be quantized (nan, inf)
        raise PretrainedError(f"{path}: {e}") from None


_BLOCK = re.compile(r"h\.(\d+)\.")


def check_config_against_header(directory: Path, config: GPTConfig) -> None:
    """config.json's sizes against the shapes in model.safetensors' header (read alone, a few
    kB), before a model is built from them: vocab_size and n_embd against wte, n_positions
    against wpe, n_layer against the blocks h.0 ... h.N-1 the file holds. A config.json that
    says vocab_size 1e9 would otherwise be built first (a 60 GB table of zeros) and fail there,
    and n_layer 1e12 would build blocks until memory ran out. What the header does not show
    is left to match_hf_keys, once the model exists."""
    path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not path.exists():
        _refuse_other_formats(directory, path)
    try:
        with open_safetensors(path) as f:
            shapes = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): f.shape(k)
                      for k in f.names()}
    except SafetensorsError as e:
        raise PretrainedError(str(e)) from None

    def refuse(field, value, why):
        return PretrainedError(f"{config_path}: {field} is {value:,}, but {path} {why}. Does "
                               f"{CONFIG_FILE} belong to these weights?")

    blocks = {int(m.group(1)) for m in map(_BLOCK.match, shapes) if m}
    if len(blocks) != config.n_layer:
        raise refuse("n_layer", config.n_layer, f"holds {len(blocks):,} "
                     f"block{'' if len(blocks) == 1 else 's'} (h.0 ... h.N-1)")
    for name, fields in (("wte.weight", (("vocab_size", config.vocab_size),
                                         ("n_embd", config.n_embd))),
                         ("wpe.weight", (("n_positions", config.block_size),
                                         ("n_embd", config.n_embd)))):
        shape = shapes.get(name)
        if shape is None or len(shape) != 2:
            continue                        # match_hf_keys names a missing or odd key
        for axis, ((field, value), size) in enumerate(zip(fields, shape)):
            if value != size:
                raise refuse(field, value, f"has {name} of shape {list(shape)} "
                             f"({size:,} {'rows' if axis == 0 else 'columns'})")


def _check_tied_rows(f, lm_head: str, keys: dict, path: str) -> None:
    """lm_head.weight must equal wte (GPT-2 ties them), compared a block of rows at a
    time so that neither is ever whole in memory as float32."""
    wte, rows = keys["wte.weight"], f.shape(keys["wte.weight"])[0]
    for start in range(0, rows, _TIE_ROWS):
        span = (start, min(start + _TIE_ROWS, rows))
        head = f.read(lm_head, to_float32=True, rows=span)
        table = f.read(wte, to_float32=True, rows=span).astype(np.float32, copy=False)
        if not np.array_equal(head, table, equal_nan=True):   # a nan: load_weights says where
            raise _untied(path, keys)


def _refuse_other_formats(directory: Path, path: Path):
    others = [name for name in OTHER_FORMATS if (directory / name).exists()]
    if others:
        why = (" (a pickle file: unpickling runs whatever code the file holds)"
               if others[0].endswith(".bin") else "")
        raise PretrainedError(
            f"{directory} has {others[0]} but no {WEIGHTS_FILE}; tinygpt reads weights only from "
            f"safetensors files{why}. Use the safetensors version (most Hub repos have one), or "
            f"convert once, where you trust the file, with transformers: "
            f"`GPT2LMHeadModel.from_pretrained(dir).save_pretrained(dir)` writes {WEIGHTS_FILE}.")
    if (directory / (WEIGHTS_FILE + ".index.json")).exists():
        raise PretrainedError(f"{directory} holds a sharded checkpoint "
                              f"({WEIGHTS_FILE}.index.json); tinygpt reads one {WEIGHTS_FILE}: "
                              f"re-save it with save_pretrained(dir, max_shard_size='100GB')")
    raise PretrainedError(f"{path} is missing. {directory} holds {_listing(directory)}.")


def match_hf_keys(stored: dict, model: GPT, path: str) -> tuple[dict[str, str], str | None]:
    """({our parameter name: its key in the file}, the key of lm_head.weight or None), from the
    file's {key: (shape, dtype name, is floating point)}: every name and shape checked before a
    byte of the weights is read. The names come in the order of model.named_parameters()."""
    expected = {name: p for name, p in model.named_parameters()}
    ours, lm_head, original = {}, None, {}
    for key, info in stored.items():
        if key == "lm_head.weight":
            lm_head = key
            continue
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if _BUFFER.fullmatch(name):
            continue
        if name in ours:
            raise PretrainedError(f"{path}: key {key!r} and key {original[name]!r} are the same "
                                  f"weight, stored twice; keep one")
        ours[name], original[name] = info, key

    missing = [name for name in expected if name not in ours]
    if missing:
        prefix = _PREFIX if any(k.startswith(_PREFIX) for k in stored) else ""
        raise PretrainedError(f"{path}: missing key {prefix + missing[0]!r}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + f"; a GPT-2 with {model.config.n_layer} layers (config.json) "
                              f"needs it. Is the file complete, and from this config.json?")
    unexpected = [original[name] for name in ours if name not in expected]
    if unexpected:
        raise PretrainedError(f"{path}: unexpected key {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
                              + f"; it is not part of a GPT-2 with {model.config.n_layer} layers. "
                              f"Does config.json match the weights?")
    for name, p in expected.items():
        shape, dtype, floating = ours[name]
        if tuple(shape) != p.shape:
            raise PretrainedError(f"{path}: key {original[name]!r} has shape {list(shape)}, but "
                                  f"config.json implies {list(p.shape)}. Does config.json match "
                                  f"the weights?")
        if not floating:
            raise PretrainedError(f"{path}: key {original[name]!r} holds {dtype} values; "
                                  f"weights must be floating point (F32, F16, BF16 or F64)")
    if lm_head is not None and tuple(stored[lm_head][0]) != tuple(ours["wte.weight"][0]):
        raise _untied(path, original)
    return {name: original[name] for name in expected}, lm_head


def _untied(path: str, keys: dict) -> PretrainedError:
    return PretrainedError(f"{path}: key 'lm_head.weight' differs from "
                           f"{keys['wte.weight']!r}; tinygpt ties the output projection "
                           f"to the token embedding (as GPT-2 does) and cannot load an untied "
                           f"head")


def _listing(directory: Path) -> str:
    names = sorted(p.name for p in directory.iterdir())
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "no files"


# ----------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------

def load_tokenizer(directory: Path):
    """(tokenizer, where it came from): vocab.json + merges.txt if present; a char vocabulary
    written by `tinygpt export`; else the GPT-2 vocabulary bundled with tinygpt."""
    from .bpe import GPT2Tokenizer
    vocab, merges, chars = (directory / VOCAB_FILE, directory / MERGES_FILE,
                            directory / CHAR_VOCAB_FILE)
    if vocab.exists() != merges.exists():
        have, lack = (vocab, merges) if vocab.exists() else (merges, vocab)
        raise PretrainedError(f"{directory} has {have.name} but not {lack.name}; the GPT-2 "
                              f"tokenizer needs both (or neither, for the bundled GPT-2 one)")
    try:
        if vocab.exists():
            tok, source = GPT2Tokenizer.from_files(vocab, merges), str(vocab)
        elif chars.exists():
            from .tokenizer import tokenizer_from_dict
            tok, source = tokenizer_from_dict(json.loads(chars.read_text("utf-8"))["tokenizer"]), str(chars)
        else:
            tok, source = _bundled_gpt2(), "the bundled GPT-2 vocabulary"
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        raise PretrainedError(f"{directory}: cannot load the tokenizer: {e}") from None
    return tok, source


@functools.lru_cache(maxsize=1)
def _bundled_gpt2():
    """Read once per process (0.3 s); a tokenizer never changes after it is built."""
    from .bpe import GPT2Tokenizer
    return GPT2Tokenizer.from_tiktoken()
