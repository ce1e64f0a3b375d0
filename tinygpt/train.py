"""Training a GPT: a run is data (`start_run` builds a `Run`), the loop is short (`run_loop`).

Defaults are the reference CPU recipe for the `baby` preset on tiny Shakespeare (nanoGPT's
published laptop recipe): batch 12, block 64, 2000 iterations, lr 1e-3 with 100 warmup
iterations and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1, clip 1.0.

    result = train(TrainOptions(out="out"))                  # = `tinygpt train`
    result = train(TrainOptions(out="out"), resume=True)     # = `tinygpt train --resume`

train() is start_run() then run_loop(). start_run() does everything that can fail before a byte
is written, in small named steps (the plan, the data, the tokenizer and model, the optimizer and
random generators, a resume's saved state) and returns a Run; run_loop() steps, evaluates and
saves, as nanoGPT's train.py does. Every option is stated once, in TrainOptions below: its
default, its range and its help, which the `tinygpt train` command is built from.

A run never loses work (docs/runs.md; tinygpt/checkpoint.py has the mechanics):
  * every evaluation saves a complete checkpoint atomically; the latest and the best are kept;
  * Ctrl-C finishes the step, saves, and prints the command that continues the same plan;
  * a fresh run refuses an --out that already holds something (unless --overwrite), and one
    lock per run directory refuses a second process writing to it;
  * --resume continues with the saved options. Those that define the run (model, tokenizer,
    data, batch size, seed) cannot change; the schedule and its length can (RESUME_CHANGEABLE).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, asdict, field, fields
from pathlib import Path

import numpy as np

import tensor
from tensor import optim

from . import checkpoint as ckpt
from . import distributed as dist
from .dataset import Dataset, describe_prepared, open_prepared, plural, read_text
from .distributed import micro_batches
from .evaluate import estimate_loss
from .loading import load_model
from .model import GPT, GPTConfig, PRESETS
from .progress import Progress
from .tokenizer import tokenizer_from_dict

METRICS_HEADER = "iter,train_loss,val_loss,lr,tokens_per_sec,elapsed_s"
TOKENIZERS = ("char", "gpt2")


# ----------------------------------------------------------------------------------------------
# The options, each stated once: default, range and help (cli/train.py makes the flags from them)
# ----------------------------------------------------------------------------------------------
def option(default=None, help: str = "", *, low=None, high=None, low_open=False,
           high_open=False, choices=None, cli=True, **click_extra):
    """A TrainOptions field. low/high (open or closed) bound a number; choices lists the values
    a string may take; cli=False keeps it off the command line (the Python API only);
    click_extra goes to click.option as is (metavar, a path type)."""
    return field(default=default, metadata=dict(help=help, low=low, high=high, low_open=low_open,
                                                high_open=high_open, choices=choices, cli=cli,
                                                click=click_extra))


@dataclass
class TrainOptions:
    preset: str = option("baby", "Model and training recipe to start from (listed below); the "
                         "options override its values.", choices=tuple(PRESETS))
    n_layer: int | None = option(None, "Transformer blocks.", low=1)   # None: the preset's
    n_head: int | None = option(None, "Attention heads per block.", low=1)
    n_embd: int | None = option(None, "Embedding width (divisible by n-head).", low=1)
    block_size: int | None = option(None, "Context length in tokens.", low=1)
    dropout: float | None = option(None, "Dropout probability.", low=0, high=1, high_open=True)
    bias: bool | None = option(None, "Biases in the Linear and LayerNorm layers (default: the "
                               "preset's).")
    batch_size: int = option(12, "Sequences per micro-batch.", low=1)
    grad_accum: int = option(1, "Micro-batches whose gradients are summed into one step: the "
                             "effective batch is --batch-size x --grad-accum, in the memory of "
                             "one micro-batch.", low=1)
    max_iters: int = option(2000, "Iterations in all (with --resume: train on to this "
                            "iteration).", low=1)
    lr: float = option(1e-3, "Peak learning rate.", low=0, low_open=True)
    min_lr: float = option(1e-4, "Learning rate at the end of the cosine decay (with --lr "
                           "given: --lr / 10).", low=0)
    warmup_iters: int = option(100, low=0)
    lr_decay_iters: int | None = option(None, "Length of the cosine decay; after it the rate "
                                        "stays at --min-lr (default: --max-iters of the run's "
                                        "start, kept when --resume extends it).", low=1)
    weight_decay: float = option(0.1, low=0)
    beta1: float = option(0.9, low=0, high=1, high_open=True, cli=False)
    beta2: float = option(0.99, low=0, high=1, high_open=True, cli=False)
    grad_clip: float = option(1.0, "Clip the global gradient norm to this (0: no clipping).",
                              low=0)
    eval_interval: int = option(250, "Evaluate (and checkpoint) every this many iterations.",
                                low=1)
    eval_iters: int = option(20, "Batches averaged per evaluation (each preset chooses it so "
                             "that evaluating costs about 5% of the training between two "
                             "evaluations on a CPU).", low=1)
    seed: int = option(1337, low=0, high=2**32 - 1)                   # what NumPy accepts
    out: str = option("out", "The run directory: checkpoints (the latest and the best) and "
                      "metrics.csv.", path="out")
    data: str | None = option(None, "A UTF-8 text file to train on, or a directory written by "
                              "`tinygpt prepare` (or nanoGPT's prepare.py) whose token files are "
                              "read from disk as needed (default: the bundled tiny Shakespeare).",
                              path="exists")
    tokenizer: str = option("char", "Characters, or GPT-2's byte-level BPE.", choices=TOKENIZERS)
    init_from: str | None = option(None, "Fine-tune: start from gpt2, gpt2-medium, gpt2-large, "
                                   "gpt2-xl, a Hugging Face GPT-2 directory or a training run "
                                   "(its best checkpoint). Its architecture and tokenizer are "
                                   "kept; --block-size may shorten the context, --dropout may "
                                   "change (default 0); the optimizer starts fresh.",
                                   metavar="NAME|DIR")
    threads: int | None = option(None, "CPU threads for the kernels (default: auto, the cores "
                                 "other processes leave free, looked at again every second).",
                                 low=1)

    def model_config(self, vocab_size: int) -> GPTConfig:
        cfg = {**PRESETS[self.preset], "vocab_size": vocab_size}
        for name in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        try:
            return GPTConfig(**cfg)
        except ValueError as e:           # e.g. n_embd not divisible by n_head: name the options
            raise ValueError(str(e).replace("GPTConfig: ", "").replace("n_embd", "--n-embd")
                             .replace("n_head", "--n-head")) from None

    def check(self):
        """Every option in its range (the table above), before anything is read or written."""
        for f in fields(self):
            problem = _out_of_range(getattr(self, f.name), f.metadata)
            if problem:
                raise ValueError(f"{flag(f.name)} must be {problem}, got {getattr(self, f.name)!r}")
        if self.threads is not None:     # more threads than cores only queue (10x slower)
            from tensor.kernels.threads import check_thread_count
            check_thread_count(self.threads)
        if self.lr * self.weight_decay >= 1:
            raise ValueError(f"--weight-decay {self.weight_decay:g} with --lr {self.lr:g}: every "
                             f"step multiplies each weight by 1 - lr x weight decay = "
                             f"{1 - self.lr * self.weight_decay:.3g}, which destroys it. Keep "
                             f"lr x weight decay far below 1 (the default is 0.1 x 1e-3)")
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the decay would "
                             f"raise the learning rate. Give a --min-lr of at most {self.lr:g}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _out_of_range(value, rules) -> str | None:
    """What `value` must be under a field's rules, or None if it is fine."""
    if value is None or isinstance(value, bool):
        return None
    if rules["choices"] is not None:
        return None if value in rules["choices"] else "one of " + ", ".join(rules["choices"])
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    low, high = rules["low"], rules["high"]
    if low is not None and (value <= low if rules["low_open"] else value < low):
        return (f"above {low}" if rules["low_open"] else f"at least {low}") + (
            f" and {'below' if rules['high_open'] else 'at most'} {high}" if high is not None
            else "")
    if high is not None and (value >= high if rules["high_open"] else value > high):
        return f"{'below' if rules['high_open'] else 'at most'} {high}"
    return None


# Each preset's recipe: what `--preset NAME` sets besides the architecture (tinygpt/model.py's
# PRESETS), unless given on the command line. "time" is rough, for a 2-core laptop-class CPU at
# the measured tokens/s of each size (docs/performance.md).
# TrainOptions' defaults are the `baby` recipe (the reference CPU run), so it is not written twice.
_RECIPE = ("batch_size", "max_iters", "lr", "min_lr", "warmup_iters", "beta2", "eval_interval",
           "eval_iters", "tokenizer")
RECIPES = {
    "baby": {**{name: getattr(TrainOptions(), name) for name in _RECIPE},
             "time": "~2 min on 2 cores"},
    # nanoGPT's train_shakespeare_char.py, as published (a GPU recipe)
    # but with 20 evaluation batches, not 200: on a CPU, 200 would add 45% to the run (22 min
    # per evaluation against 50 min of steps between two); 20 add about 5%
    "shakespeare-char": dict(batch_size=64, max_iters=5000, lr=1e-3, min_lr=1e-4,
                             warmup_iters=100, beta2=0.99, eval_interval=250, eval_iters=20,
                             tokenizer="char", time="~19 h on 2 cores, 6 GB"),
}
# GPT-2 from scratch: nanoGPT's train_gpt2.py (batch 12 x 40 accumulated, 600k iterations) --
# far beyond a CPU, listed so the presets mean the same as there; fine-tune them instead
# (--init-from gpt2).
for _name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
    RECIPES[_name] = dict(batch_size=12, grad_accum=40, max_iters=600_000, lr=6e-4, min_lr=6e-5,
                          warmup_iters=2000, beta2=0.95, eval_interval=1000, eval_iters=200,
                          tokenizer="gpt2", time="years on 2 cores")


def apply_recipe(opts: TrainOptions, given: set) -> None:
    """Set the preset's recipe on every option not given explicitly."""
    for name, value in RECIPES.get(opts.preset, {}).items():
        if name != "time" and name not in given:
            setattr(opts, name, value)


def describe_presets() -> str:
    """The --help text: what each preset sets and how long it takes, two lines each."""
    from .params import count_parameters
    lines = []
    for name, arch in PRESETS.items():
        r = RECIPES[name]
        vocab = arch.get("vocab_size", 65 if r["tokenizer"] == "char" else 50257)
        n = count_parameters(GPTConfig(**{**arch, "vocab_size": vocab}))
        accum = f" x {r['grad_accum']}" if r.get("grad_accum", 1) > 1 else ""
        drop = f", dropout {arch['dropout']:g}" if arch.get("dropout") else ""
        lines.append(f"{name}: {arch['n_layer']} layers x {arch['n_embd']} dims, "
                     f"{arch['n_head']} heads, block {arch['block_size']}, "
                     f"{n / 1e6:.1f}M params")
        lines.append(f"  {r['tokenizer']} tokens{drop}, batch {r['batch_size']}{accum}, "
                     f"{r['max_iters']:,} iters, lr {r['lr']:g}: {r['time']}")
    return "\n".join(lines)


# What may change when a run is resumed: the schedule and how long it runs. Everything else
# defines the run (its model, its data, its batches): changing it would silently make a
# different run under the same name, so it is refused.
RESUME_CHANGEABLE = ("max_iters", "lr", "min_lr", "warmup_iters", "lr_decay_iters",
                     "weight_decay", "grad_clip", "eval_interval", "eval_iters")
# --threads is not part of the run at all: it says how this process uses this machine now, so a
# resume takes this command's (default: auto), never the count the run was started with.
RESUME_FIXED = ("preset", "n_layer", "n_head", "n_embd", "block_size", "dropout", "bias",
                "batch_size", "grad_accum", "seed", "data", "tokenizer", "beta1", "beta2",
                "init_from")


def build_tokenizer(kind: str, text: str):
    from .tokenizer import CharTokenizer
    if kind == "char":
        return CharTokenizer.from_text(text)
    from .bpe import GPT2Tokenizer
    return GPT2Tokenizer.from_tiktoken()


def encode(tokenizer, text: str) -> np.ndarray:
    if hasattr(tokenizer, "encode_array"):
        return tokenizer.encode_array(text)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


class Discarded(BaseException):
    """Raised by Ctrl-C inside work that may be thrown away (`_Stop.discardable`). A
    BaseException, as KeyboardInterrupt is, so that no `except Exception` swallows it."""


class _Stop:
    """Ctrl-C (SIGINT) or SIGTERM: the run stops within about a second, saves, and prints the
    command that continues it.

    Work that changes nothing the checkpoint keeps (a training step before its weight update,
    an evaluation) runs inside `with stop.discardable():`; a signal there abandons it at once,
    and the loop saves the run as it was before that work began (so a 12 s step need not
    finish). Anywhere else (the weight update, a save) the signal is noted and the loop stops
    at the next step boundary. A second press changes nothing: the save takes a moment, and
    cutting it short could only lose the new checkpoint. A third press stops at once
    (KeyboardInterrupt); saves are atomic, so the last complete checkpoint still survives."""

    def __init__(self):
        self.requested = False
        self.presses = 0
        self._discardable = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: the signals keep their default action
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.presses += 1
        if self.presses >= 3:
            raise KeyboardInterrupt
        if self._discardable:
            self._discardable = False
            raise Discarded

    @contextlib.contextmanager
    def discardable(self, enabled: bool = True):
        """Inside: a signal abandons the work (raises Discarded). enabled=False (under MPI,
        where every rank must reach the same collective calls): it only sets `requested`."""
        self._discardable = enabled
        try:
            if enabled and self.requested:     # asked before the work began: skip it
                raise Discarded
            yield
        finally:
            self._discardable = False

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainResult:
    iterations: int
    best_val_loss: float
    wall_time: float
    interrupted: bool = False
    history: list = field(default_factory=list)   # metrics rows as dicts


# ----------------------------------------------------------------------------------------------
# Before anything is written: the data, the memory a run needs, the output directory
# ----------------------------------------------------------------------------------------------
def data_path(data: str | None) -> str | None:
    """--data as an absolute path (so a run resumes from any working directory)."""
    return None if data is None else str(Path(data).expanduser().resolve())


def data_checksum(data: str | None) -> str:
    from .dataset import SHAKESPEARE
    return ckpt.sha256_file(SHAKESPEARE if data is None else data)


def prepared_checksum(data_dir: str) -> str:
    """A prepared directory's identity without reading its token files (they may be huge):
    the SHA-256 of meta.json's content (the tokenizer, the token counts and the source's
    checksum; not the source's path, which may differ when the same text is prepared again)
    and of the token files' sizes."""
    import hashlib
    import json
    h = hashlib.sha256()
    for name in ("meta.json", "train.bin", "val.bin"):
        path = Path(data_dir) / name
        if path.exists():
            h.update(name.encode() + str(path.stat().st_size).encode())
            if name == "meta.json":
                meta = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(meta.get("source"), dict):
                    meta["source"].pop("path", None)
                h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def load_text(data: str | None) -> str:
    text = read_text(data)
    if not text:
        raise ValueError(f"--data {data} is empty: give a UTF-8 text file with some text in it")
    return text


def estimate_memory(cfg: GPTConfig, batch_size: int) -> int:   # batch_size: one micro-batch
    """Bytes a training step needs, roughly, from the config alone (float32): the sum of
    memory_parts(). --grad-accum does not count: micro-batches are drawn one at a time."""
    return sum(memory_parts(cfg, batch_size).values())


def memory_parts(cfg: GPTConfig, batch_size: int) -> dict:
    """{"parameters": bytes, "activations": bytes} of a training step, roughly (float32).

    Parameters: weights, gradients and AdamW's two moments, 4 floats each. Activations kept for
    backward, per block: about 20 (B, T, C) arrays (layer norms, q/k/v, the MLP's 4C, residuals)
    and 2 (B, nh, T, T) attention maps; then the logits, their softmax and gradient (B, T, V)."""
    from .params import count_parameters
    B, T, C, L = batch_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    return {"parameters": 16 * count_parameters(cfg),
            "activations": 4 * (L * B * T * (20 * C + 2 * cfg.n_head * T)
                                + 3 * B * T * cfg.vocab_size)}


def available_memory() -> int | None:
    """Bytes of RAM available to a new allocation (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: GPTConfig, batch_size: int) -> None:
    parts, have = memory_parts(cfg, batch_size), available_memory()
    need = sum(parts.values())
    if have is not None and need > have:
        gib = lambda n: f"{n / 2**30:,.1f} GiB"                  # noqa: E731
        raise ValueError(
            f"this run needs about {gib(need)} of memory but {gib(have)} is available: the "
            f"model's {parts['parameters'] / 16 / 1e6:,.1f}M parameters with their gradients and "
            f"AdamW's moments take {gib(parts['parameters'])} ({cfg.n_layer:,} layers of "
            f"{cfg.n_embd:,}), the activations of a batch of {batch_size:,} x {cfg.block_size:,} "
            f"tokens {gib(parts['activations'])}. Use a smaller model (--n-layer, --n-embd) or "
            f"a smaller batch (--batch-size, --block-size)")


def check_out_dir(out: Path, overwrite: bool) -> None:
    """A fresh run writes only into a new or empty directory (or, with --overwrite, a run's)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    ckpt.RunLock(out).check_free()       # a run still going there: name its PID, not --resume
    if ckpt.is_run_started(out) and not overwrite and not ckpt.only_debris(out):
        what = ("a training run" if ckpt.is_checkpoint(out) else "files")
        raise ValueError(f"--out {out} already holds {what}. Continue it with `tinygpt train "
                         f"--resume --out {out}`, choose a new --out, or add --overwrite to "
                         f"replace it")
    parent = out
    while not parent.exists():            # the first existing ancestor must be a writable dir
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot create it ({parent} is not a writable directory)")


# ----------------------------------------------------------------------------------------------
# Fine-tuning: --init-from
# ----------------------------------------------------------------------------------------------
def init_from(opts: TrainOptions, given: set, log):
    """(model in train mode, tokenizer) to fine-tune: the weights of a released GPT-2, a Hugging
    Face directory or a training run (its best checkpoint). The architecture and tokenizer come
    with the weights; --block-size may shorten the context (the position table is cropped) and
    --dropout may change (default 0, as nanoGPT fine-tunes). The optimizer starts fresh."""
    from .loading import LoadError, load_model
    fixed = sorted(given & {"preset", "n_layer", "n_head", "n_embd", "bias"})
    if fixed:
        raise ValueError(f"--init-from {opts.init_from} brings its own architecture: drop "
                         + ", ".join("--" + f.replace("_", "-") for f in fixed))
    try:
        model, tokenizer, description = load_model(opts.init_from, log=log, option="--init-from")
    except LoadError as e:
        raise ValueError(f"--init-from: {e}") from None
    kind = "char" if getattr(tokenizer, "eot_token", None) is None else "gpt2"
    if "tokenizer" in given and opts.tokenizer != kind:
        raise ValueError(f"--tokenizer {opts.tokenizer} disagrees with --init-from "
                         f"{opts.init_from}, whose tokenizer is {kind}: drop --tokenizer")
    opts.tokenizer = kind
    log(f"starting from {description}")
    full = model.config.block_size
    if opts.block_size is not None and opts.block_size != full:
        if opts.block_size > full:
            raise ValueError(f"--block-size {opts.block_size} is longer than the context of "
                             f"--init-from {opts.init_from} ({full} positions)")
        model.crop_block_size(opts.block_size)
        log(f"context cropped from {full} to {opts.block_size} positions (--block-size)")
    model.set_dropout(opts.dropout if opts.dropout is not None else 0.0)
    opts.n_layer, opts.n_head, opts.n_embd = (model.config.n_layer, model.config.n_head,
                                              model.config.n_embd)
    opts.block_size, opts.dropout, opts.bias = (model.config.block_size, model.config.dropout,
                                                model.config.bias)
    return model.train(), tokenizer


# ----------------------------------------------------------------------------------------------
# Resume: the saved plan, and what the command line may change in it
# ----------------------------------------------------------------------------------------------
def resume_options(saved: dict, opts: TrainOptions, given: set,
                   data_sha256: str | None = None, model: dict | None = None
                   ) -> tuple[TrainOptions, list]:
    """The saved options with the changeable ones given on the command line applied.
    Returns (options, ["--lr 0.001 -> 0.0005", ...]); a fixed option given with another value
    is an error naming it. --data may name a new path when the run recorded its data's SHA-256
    (data_sha256): the same bytes moved are the same run, and _data_and_model checks them."""
    known = {f.name for f in fields(TrainOptions)}
    merged = {k: v for k, v in saved.items() if k in known}
    merged["out"], merged["threads"] = opts.out, opts.threads      # this process's own
    refused, changes = [], []
    for name in sorted(given & known - {"out", "threads"}):
        new, old = getattr(opts, name), merged.get(name)
        if name == "data":
            new = data_path(new)
        if new == old:
            continue
        flag = "--" + name.replace("_", "-")
        if name in RESUME_FIXED and not (name == "data" and data_sha256 is not None):
            if old is None:     # the preset's value (the model has it) or the bundled data
                old = (model or {}).get(name, "the bundled Shakespeare" if name == "data"
                                        else "the preset's value")
            refused.append(f"{flag} {new} (the run has {old})")
        else:
            changes.append(f"{flag} {old} -> {new}")
            merged[name] = new
    if refused:
        raise ValueError("cannot change " + ", ".join(refused) + " when resuming: the model, "
                         "tokenizer, data, batch size and seed define a run. Start a new run "
                         "with another --out to change them")
    return TrainOptions(**merged), changes


# ----------------------------------------------------------------------------------------------
# A run: everything the loop needs, built before a byte is written
# ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    opts: TrainOptions            # the plan, complete (recipe applied, saved options on resume)
    out: Path                     # the run directory
    world: dist.World             # this process among the MPI ranks (one process: rank 0 of 1)
    model: GPT
    optimizer: optim.AdamW
    data: Dataset
    tokenizer: object
    batch_rng: np.random.Generator      # which training batches
    dropout_rng: np.random.Generator    # which units dropout drops
    checksum: str                 # the data's identity: a resume refuses other data
    start_iter: int = 0
    best_val: float = math.inf
    resumes: list = field(default_factory=list)   # what each resume changed, as config.json says
    saved: dict | None = None     # on resume: the config.json continued from
    last_saved: int | None = None  # the iteration of the newest complete checkpoint
    iteration: int = 0             # the steps done so far (run_loop moves it)
    start_evaluated: bool = False  # on resume: the checkpoint holds its evaluation (val_loss)

    @property
    def resuming(self) -> bool:
        return self.saved is not None


def start_run(opts: TrainOptions, resume: bool, overwrite: bool, given: set, log,
              world: dist.World, lock: ckpt.RunLock) -> Run:
    """The Run that `opts` describes (or, resuming, the one saved in opts.out), ready to train:
    every check done and the run directory written (a fresh run: created, locked, cleared if
    --overwrite; a resume: its metrics cut back to the checkpoint)."""
    out = Path(opts.out)
    saved, start, changes, resumes = None, None, [], []
    if resume:
        opts, saved, start, changes, resumes = _saved_plan(opts, out, given, log, world)
    else:
        apply_recipe(opts, given)
        if "lr" in given and "min_lr" not in given:
            opts.min_lr = opts.lr / 10         # the decay's floor follows a chosen peak rate
    opts.check()
    if opts.warmup_iters > opts.max_iters and "warmup_iters" in given:
        log(f"note: --warmup-iters {opts.warmup_iters} is longer than the run (--max-iters "
            f"{opts.max_iters}): the learning rate rises for the whole run and never reaches "
            f"--lr {opts.lr:g}")
    if opts.lr_decay_iters is None:     # fixed now: a later --max-iters extends the run
        opts.lr_decay_iters = opts.max_iters   # on a defined schedule
    _use_threads(opts, world)
    start_iter = int(saved["iteration"]) if resume else 0
    if resume and opts.max_iters < start_iter:
        raise ValueError(f"the run in {out} is at iteration {start_iter}; --max-iters "
                         f"{opts.max_iters} would end before it. Give a larger --max-iters")
    if not resume:
        opts.data = data_path(opts.data)
        if opts.init_from and os.path.isdir(opts.init_from):
            opts.init_from = str(Path(opts.init_from).resolve())
        if world.is_main:
            check_out_dir(out, overwrite)
    data, tokenizer, model_cfg, pretrained, checksum = _data_and_model(opts, saved, given, log)
    check_memory(model_cfg, opts.batch_size)

    tensor.manual_seed(opts.seed)
    if resume:
        model = load_model(start.path, which="latest")[0].train()
    elif pretrained is not None:
        model = pretrained
    else:
        model = GPT(model_cfg, seed=opts.seed)
    run = Run(opts, out, world, model,
              optim.AdamW(model.parameters(), lr=opts.lr, betas=(opts.beta1, opts.beta2),
                          weight_decay=opts.weight_decay),
              data, tokenizer, np.random.default_rng(opts.seed),
              np.random.default_rng(opts.seed + 1 if world.size == 1 else
                                    [opts.seed + 1, world.rank]),
              checksum, start_iter, resumes=resumes, saved=saved)
    for _, m in model.named_modules():
        if isinstance(m, tensor.nn.Dropout):
            m.generator = run.dropout_rng
    if resume:
        _restore(run, start, changes, log)
    elif world.is_main:
        _create_run_dir(out, overwrite, lock)
    return run


def _saved_plan(opts, out: Path, given: set, log, world):
    """Resuming: tidy the run directory (rank 0), choose the newest checkpoint that verifies
    (setting aside newer damaged ones), and merge the saved options with the changes given.
    Returns (options, its config.json, the checkpoint, the changes, the resume history)."""
    if world.is_main:
        removed = ckpt.clean_partial(out)
        if removed:
            log(f"removed what an interrupted save left in {out}: {', '.join(removed)}")
        start, _ = ckpt.find_checkpoint(out, "latest", log=log)
        ckpt.set_aside_damaged(out, start, log)
    dist.barrier(world)                   # the other ranks read after rank 0 has tidied
    start, saved = ckpt.find_checkpoint(out, "latest", log=log)
    if int(saved.get("world_size", 1)) != world.size:
        raise ValueError(f"the run in {out} was trained with {saved.get('world_size', 1)} "
                         f"rank(s); resume it with the same number (now {world.size})")
    opts, changes = resume_options(saved.get("train", {}), opts, given, saved.get("data_sha256"),
                                   saved.get("model"))
    decay = saved.get("train", {}).get("lr_decay_iters")
    if any(c.startswith("--max-iters") for c in changes) and "lr_decay_iters" not in given \
            and decay is not None:
        changes.append(f"(the learning-rate decay still ends at iteration {decay}; "
                       f"--lr-decay-iters changes that)")
    resumes = list(saved.get("resumes", []))
    if changes:
        resumes.append({"iteration": int(saved["iteration"]), "changed": changes})
    return opts, saved, start, changes, resumes


def _use_threads(opts: TrainOptions, world) -> None:
    """--threads, or under MPI the cores of this machine shared among its ranks."""
    threads = opts.threads
    if threads is None and world.size > 1:
        from tensor.kernels.threads import usable_cores
        threads = max(1, usable_cores() // world.local_size)
    if threads:
        from tensor.kernels import set_num_threads
        set_num_threads(threads)


def _data_and_model(opts: TrainOptions, saved, given: set, log):
    """(dataset, tokenizer, model config, the pretrained model to fine-tune or None, the data's
    checksum): from --data (a text file, or `tinygpt prepare`'s token files, mapped and never
    read whole), the saved run, or --init-from."""
    if saved is not None and opts.data is not None and not os.path.exists(opts.data):
        raise ValueError(f"this run's training data, {opts.data}, is not there any more. If "
                         f"you moved it, resume with `--data NEW_PATH`: the same bytes (by "
                         f"SHA-256) continue the same run")
    prepared = opts.data is not None and os.path.isdir(opts.data)
    if prepared:
        data, meta = open_prepared(opts.data)
        log(describe_prepared(opts.data, meta))
        text, checksum = None, prepared_checksum(opts.data)
    else:
        text, checksum = load_text(opts.data), data_checksum(opts.data)
    if saved is not None and saved.get("data_sha256") not in (None, checksum):
        raise ValueError(f"--data {opts.data} is not this run's training data: its SHA-256 "
                         f"differs from the one recorded when the run started. Give the data the "
                         f"run was trained on, or start a new run with another --out"
                         if "data" in given else
                         f"the training data {opts.data or 'the bundled Shakespeare'} changed "
                         f"since this run started (its SHA-256 differs); resuming would train "
                         f"on other text. Restore the file, or start a new run with another --out")
    pretrained = None
    if saved is not None:
        tokenizer = tokenizer_from_dict(saved["tokenizer"])
        model_cfg = GPTConfig.from_dict(saved["model"])
    elif opts.init_from:
        pretrained, tokenizer = init_from(opts, given, log)
        model_cfg = pretrained.config
    elif prepared:
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
        kind = meta["tokenizer"].get("type")
        if "tokenizer" in given and opts.tokenizer != kind:
            raise ValueError(f"--tokenizer {opts.tokenizer} disagrees with --data {opts.data}, "
                             f"prepared with the {kind} tokenizer: drop --tokenizer")
        opts.tokenizer = kind
        model_cfg = opts.model_config(tokenizer.vocab_size)
    else:
        tokenizer = build_tokenizer(opts.tokenizer, text)
        model_cfg = opts.model_config(tokenizer.vocab_size)
    source = f"--data {opts.data}" if opts.data else "the bundled Shakespeare"
    if not prepared:
        try:
            ids = encode(tokenizer, text)
        except ValueError as e:          # a character the run's vocabulary does not have
            raise ValueError(f"{source}: {e}") from None
        return (Dataset.from_ids(ids, model_cfg.block_size, source=source),
                tokenizer, model_cfg, pretrained, checksum)
    if meta["tokenizer"] != tokenizer.to_dict():
        raise ValueError(f"--data {opts.data} was prepared with another tokenizer than the "
                         f"model's ({meta['tokenizer'].get('type')}); prepare it again with "
                         f"the model's tokenizer")
    for split, ids in (("train", data.train), ("val", data.val)):
        if len(ids) < model_cfg.block_size + 1:
            raise ValueError(f"{source}: its {split} split holds {plural(len(ids), 'token')}, but one "
                             f"example needs block_size + 1 = {model_cfg.block_size + 1}; "
                             f"use a smaller --block-size")
    return data, tokenizer, model_cfg, pretrained, checksum


def _restore(run: Run, start, changes: list, log) -> None:
    """Resuming: the optimizer's moments and every random stream as they were saved; the
    metrics after the checkpoint dropped (a crash may have left some)."""
    world = run.world
    run.best_val = float(run.saved.get("best_val_loss") or math.inf)
    rng_states = ckpt.load_training_state(start.path, run.optimizer, run.start_iter)
    run.batch_rng.bit_generator.state = rng_states["batch"]
    if world.size == 1:
        run.dropout_rng.bit_generator.state = rng_states["dropout"]
    else:                                                 # every rank's stream (over MPI)
        run.dropout_rng.bit_generator.state = rng_states["dropout_ranks"][world.rank]
    run.last_saved = run.start_iter
    # a Ctrl-C during an evaluation saves the run without it (val_loss None): evaluate again
    run.start_evaluated = run.saved.get("val_loss") is not None
    if world.is_main:
        _truncate_metrics(run.out / ckpt.METRICS_FILE, run.start_iter, run.start_evaluated)
    log(f"resuming {start.describe()} toward iteration {run.opts.max_iters}")
    if changes:                           # a "(...)" entry is a note on the change before it
        log("changed on resume: " + ", ".join(c for c in changes if not c.startswith("("))
            + "".join(" " + c for c in changes if c.startswith("(")))


def _create_run_dir(out: Path, overwrite: bool, lock: ckpt.RunLock) -> None:
    """A fresh run's directory: created, locked, cleared (--overwrite, or a killed first run's
    debris), and a metrics.csv with its header."""
    out.mkdir(parents=True, exist_ok=True)
    lock.acquire()                                     # then check again: another process
    if overwrite or ckpt.only_debris(out):             # may have started in between
        ckpt.clear_run(out)
    elif any(e.name != ckpt.LOCK_FILE for e in os.scandir(out)):
        raise ValueError(f"--out {out} was written to by another process while this run "
                         f"was starting; choose another --out")
    from tensor.io import atomic_write_bytes
    atomic_write_bytes(out / ckpt.METRICS_FILE, (METRICS_HEADER + "\n").encode())


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def run_loop(run: Run, log=print, progress: bool = True, stop: "_Stop | None" = None,
             on_iter=None, start_time: float | None = None) -> TrainResult:
    """Train `run` to opts.max_iters: evaluate and save every eval_interval iterations (and at
    the end), stop within about a second of Ctrl-C (_Stop says how). on_iter(it, stop, model),
    if given, is called before each step: a place to watch a run or steer it
    (stop.requested = True stops it as Ctrl-C would)."""
    opts, world = run.opts, run.world
    start_time = time.perf_counter() if start_time is None else start_time
    B, T, G = opts.batch_size, run.model.config.block_size, opts.grad_accum
    reducer = dist.GradientReducer(run.model.parameters(), world)   # averages over the ranks
    history, stop = [], stop or _Stop()
    bar = Progress(opts.max_iters, desc="train", unit="tok", enabled=progress,
                   start=run.start_iter, scale=B * T * G * world.size, echo=log)
    it, interrupted = run.start_iter, False
    with stop:
        try:
            try:
                it = _loop(run, bar, stop, on_iter, reducer, history, start_time)
            except Discarded:           # Ctrl-C: save the run as it is after `it` steps
                interrupted, it = True, run.iteration
                bar.close()
                if run.last_saved != it:
                    _save_or_explain(run, it, None)
            bar.close()
            wall = time.perf_counter() - start_time
            if interrupted:
                log(f"interrupted: checkpoint saved at iteration {it} in {run.out}; continue the "
                    f"same run with `tinygpt train --resume --out {run.out}`")
            best = (f"best val loss {run.best_val:.4f}" if math.isfinite(run.best_val) else
                    "no evaluation finished")
            log(f"{best} · {it} iterations · wall time {wall:.1f} s")
        except KeyboardInterrupt:       # a third Ctrl-C: stop at once, even mid-save
            bar.close()
            if world.size > 1:          # every rank must stop: abort_on_error aborts them all
                raise
            return _stopped_at_once(run, log, history, start_time)
    return TrainResult(it, run.best_val, wall, interrupted, history)


def _stopped_at_once(run: Run, log, history: list, start_time: float) -> TrainResult:
    """A third Ctrl-C: no save. Saves are atomic, so the newest complete checkpoint on disk
    (perhaps one whose pruning was cut short) is where the run continues."""
    done = ckpt.list_checkpoints(run.out)
    last = done[-1].iteration if done else None
    log(f"stopped at once at iteration {run.iteration}; " +
        (f"the last complete checkpoint (iteration {last}) is kept. Continue with "
         f"`tinygpt train --resume --out {run.out}`" if last is not None else
         "no checkpoint was complete yet: start the run again"))
    return TrainResult(last or 0, run.best_val, time.perf_counter() - start_time, True, history)


def _loop(run: Run, bar, stop: _Stop, on_iter, reducer, history: list, start_time) -> int:
    """run_loop's steps, evaluations and saves, to opts.max_iters; returns the last iteration.
    run.iteration follows the steps done (a Ctrl-C raises Discarded out of here)."""
    opts, model, world = run.opts, run.model, run.world
    alone = world.size == 1     # under MPI the ranks stop together, at a step boundary
    tokens_per_step = opts.batch_size * model.config.block_size * opts.grad_accum * world.size
    train_time, train_tokens = 0.0, 0
    it = run.iteration = run.start_iter
    while True:
        lr = optim.cosine_lr(it, opts.lr, opts.min_lr, opts.warmup_iters, opts.lr_decay_iters)
        due = it % opts.eval_interval == 0 or it == opts.max_iters
        if due and not (it == run.start_iter and run.start_evaluated):
            tps = train_tokens / train_time if train_time else 0.0
            with stop.discardable(alone):
                losses = evaluate(run, it, bar)
            history.append(record_and_save(run, it, lr, losses, tps, start_time, bar))
        if it >= opts.max_iters:
            return it
        if on_iter is not None:
            on_iter(it, stop, model)
        if dist.any_rank(stop.requested, world):      # every rank stops at one step:
            raise Discarded                           # nothing to drop, save and stop
        t0 = time.perf_counter()
        loss = train_step(run, lr, reducer, stop)
        if not math.isfinite(loss):
            bar.close()
            raise NonFiniteLoss(_diverged(run, it, loss))
        train_time += time.perf_counter() - t0
        train_tokens += tokens_per_step
        it = run.iteration = it + 1
        bar.update(it, loss=f"{loss:.4f}", lr=f"{lr:.1e}")


def _diverged(run: Run, it: int, loss: float) -> str:
    """Why the loss became NaN or inf, as far as the options tell, and the way on."""
    opts = run.opts
    resume = f"`tinygpt train --resume --out {run.out}"
    return (f"the loss became {loss} at iteration {it}; stopping. The last good checkpoint in "
            f"{run.out} is kept: continue from it with a lower learning rate, e.g. "
            f"{resume} --lr {opts.lr / 3:.3g}`, or a smaller --grad-clip.")


def train_step(run: Run, lr: float, reducer, stop: "_Stop | None" = None) -> float:
    """One AdamW step on opts.grad_accum micro-batches; returns the mean loss (over the ranks).
    --grad-accum G: the gradients of G micro-batches, each of the mean loss / G, add up to the
    gradient of one batch G times larger (tests/test_train.py checks it). The micro-batches are
    drawn one at a time, as they are used, so memory does not grow with G. A non-finite loss is
    returned before the weights change. Ctrl-C before the update abandons the step (`stop`):
    the random streams are put back as they were, so the run is exactly as before the step."""
    opts, model, world = run.opts, run.model, run.world
    G, T = opts.grad_accum, model.config.block_size
    streams = (run.batch_rng.bit_generator.state, run.dropout_rng.bit_generator.state)
    stop = stop or _Stop()              # (one not entered: no signal reaches it)
    loss_value = 0.0
    draw = lambda rng: run.data.batch("train", opts.batch_size, T, rng)     # noqa: E731
    try:
        with stop.discardable(world.size == 1):
            model.zero_grad()
            for x, y in micro_batches(run.batch_rng, draw, G, world.rank, world.size):
                _, loss = model(x, y)
                loss_value += loss.item() / G
                (loss * (1.0 / G) if G > 1 else loss).backward()
    except Discarded:
        run.batch_rng.bit_generator.state, run.dropout_rng.bit_generator.state = streams
        raise
    reducer.reduce()                    # over MPI: the mean gradient of all ranks
    loss_value = dist.allreduce_mean(loss_value, world)
    if math.isfinite(loss_value):
        optim.clip_grad_norm_(model.parameters(), opts.grad_clip)
        run.optimizer.lr = lr
        run.optimizer.step()
    return loss_value


def evaluate(run: Run, it: int, bar=None) -> dict:
    """Both losses at iteration it (evaluate.estimate_loss), its progress shown on the bar."""
    opts = run.opts
    shown = (lambda done, total: bar.show(evaluating=f"{done}/{total} batches")) if bar else None
    return estimate_loss(run.model, run.data, opts.batch_size, run.model.config.block_size,
                         opts.eval_iters, [opts.seed, it], run.world, progress=shown)


def record_and_save(run: Run, it: int, lr: float, losses: dict, tokens_per_sec: float,
                    start_time: float, bar) -> dict:
    """Append an evaluation to metrics.csv, print it, and save a checkpoint."""
    dist.check_same(run.model.parameters(), run.world, f"at iteration {it}")
    row = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
           "tokens_per_sec": tokens_per_sec, "elapsed_s": time.perf_counter() - start_time}
    try:
        if run.world.is_main:
            _append_metrics(run.out / ckpt.METRICS_FILE, row)
    except OSError as e:
        raise _save_failed(run, it, e) from None
    run.best_val = min(run.best_val, losses["val"])
    bar.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    _save_or_explain(run, it, losses["val"])
    return row


def _save_or_explain(run: Run, it: int, val_loss) -> None:
    try:
        save(run, it, val_loss)
    except (OSError, ckpt.CheckpointError) as e:
        raise _save_failed(run, it, e) from None


def _save_failed(run: Run, it: int, e: Exception) -> ckpt.CheckpointError:
    """A save that failed (a full disk, most often): checkpoint.save_checkpoint says why and
    what space a checkpoint needs; this adds what is kept and how the run goes on."""
    if isinstance(e, ckpt.CheckpointError):
        why = str(e)
    else:                                  # metrics.csv could not be written
        import shutil
        need = ckpt.checkpoint_bytes(run.model, run.optimizer)
        try:
            free = f"; {shutil.disk_usage(run.out).free / 2**20:,.1f} MiB are free"
        except OSError:
            free = ""
        why = (f"cannot write {e.filename or run.out}: {e.strerror or e}. A checkpoint needs "
               f"about {need / 2**20:,.1f} MiB{free}")
    if run.last_saved is None:
        then = "No checkpoint was complete yet: make room and start the run again"
    else:
        then = (f"The last complete checkpoint (iteration {run.last_saved}) is kept: make room, "
                f"then continue with `tinygpt train --resume --out {run.out}`")
    return ckpt.CheckpointError(f"{why}. {then}")


def save(run: Run, it: int, val_loss) -> None:
    """A checkpoint of the run at iteration it (val_loss: its evaluation, or None)."""
    world = run.world
    dropout_states = dist.gather_rng_states(run.dropout_rng, world)   # every rank takes part
    if not world.is_main:
        run.last_saved = it
        return
    config = {"model": run.model.config.to_dict(), "tokenizer": run.tokenizer.to_dict(),
              "train": asdict(run.opts), "iteration": it, "val_loss": val_loss,
              "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
              "data_sha256": run.checksum, "resumes": run.resumes, "world_size": world.size}
    states = {"batch": run.batch_rng.bit_generator.state,
              "dropout": run.dropout_rng.bit_generator.state}
    if world.size > 1:
        states["dropout_ranks"] = dropout_states
    ckpt.save_checkpoint(run.out, run.model, config, run.optimizer, states)
    run.last_saved = it


def train(opts: TrainOptions, resume: bool = False, log=print, progress: bool = True,
          stop: "_Stop | None" = None, on_iter=None, overwrite: bool = False,
          given: set | None = None) -> TrainResult:
    """Train (or resume) a model as `opts` says; checkpoints and metrics go to opts.out.

    given: the option names set on the command line (for --resume: those are the ones that may
    change the saved plan); None means every option that differs from its default.
    on_iter(it, stop, model): called before each step (run_loop says more).
    """
    start_time = time.perf_counter()
    if given is None:
        defaults = TrainOptions()
        given = {f.name for f in fields(TrainOptions)
                 if getattr(opts, f.name) != getattr(defaults, f.name)}
    out = Path(opts.out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "give one of them")
    # Under `mpiexec -n N` every rank runs this function; rank 0 alone writes (lock, metrics,
    # checkpoints) and prints. tinygpt/distributed.py has the few collective calls used here.
    world = dist.world()
    if not world.is_main:
        log, progress = (lambda *_: None), False
    lock = ckpt.RunLock(out)
    with dist.abort_on_error(world):       # one rank fails: every rank stops, none hangs
        if resume:
            if world.is_main:            # a run still going (perhaps before its first save)
                ckpt.RunLock(out).check_free()
            if not ckpt.is_checkpoint(out):
                why = (": the run was stopped before its first checkpoint was complete"
                       if out.is_dir() and ckpt.only_debris(out) else " (no checkpoint in it)")
                raise ckpt.CheckpointError(f"no run to resume in {out}{why}; start one with "
                                           f"`tinygpt train --out {out}`")
            if world.is_main:
                lock.acquire()
        try:
            run = start_run(opts, resume, overwrite and not resume, given, log, world, lock)
            if run.resuming and run.start_iter == run.opts.max_iters and run.start_evaluated:
                log(f"the run is already complete at iteration {run.start_iter} of "
                    f"{run.opts.max_iters}; to train longer, resume with a larger --max-iters")
                return TrainResult(run.start_iter, run.best_val, time.perf_counter() - start_time)
            _describe(run, log)
            return run_loop(run, log, progress, stop, on_iter, start_time)
        finally:
            lock.release()


def _describe(run: Run, log) -> None:
    c = run.model.config
    log(f"model: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} dims, block {c.block_size}, "
        f"vocab {c.vocab_size} — {run.model.num_parameters() / 1e6:.2f}M parameters; "
        f"{len(run.data.train):,} train / {len(run.data.val):,} val tokens")


def _append_metrics(path: Path, row: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{row['iter']},{row['train_loss']:.6f},{row['val_loss']:.6f},{row['lr']:.6g},"
                f"{row['tokens_per_sec']:.1f},{row['elapsed_s']:.2f}\n")
        f.flush()


def _truncate_metrics(path: Path, last_iter: int, keep_last: bool = True):
    """Drop rows written after the checkpoint we resume from (a crash may leave some), and
    its own row unless keep_last (the checkpoint holds no evaluation: it is done again)."""
    from tensor.io import atomic_write_bytes
    keep = [METRICS_HEADER]
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            try:
                row_iter = int(line.split(",")[0])
            except ValueError:
                continue                  # a line cut short by a kill
            if row_iter < last_iter or (row_iter == last_iter and keep_last):
                keep.append(line)
    atomic_write_bytes(path, ("\n".join(keep) + "\n").encode())
