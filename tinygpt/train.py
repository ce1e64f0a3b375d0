"""The training loop: batches in, AdamW steps, evaluation, metrics, checkpoints, resume.

Defaults are the reference CPU recipe for the `baby` preset on tiny Shakespeare (nanoGPT's
published laptop recipe): batch 12, block 64, 2000 iterations, lr 1e-3 with 100 warmup
iterations and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1, clip 1.0.

A run never loses work (tinygpt/checkpoint.py has the details):
  * every evaluation saves a complete checkpoint atomically; the latest and the best are kept;
  * Ctrl-C finishes the step, saves, and prints the command that continues the same plan;
  * a fresh run refuses an --out that already holds something (unless --overwrite), and one
    lock per run directory refuses a second process writing to it;
  * --resume continues with the saved options. Those that define the run (model, tokenizer,
    data, batch size, seed) cannot change; the schedule and its length can (RESUME_CHANGEABLE).
"""
from __future__ import annotations

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
from .dataset import Dataset, open_prepared, read_text
from .evaluate import estimate_loss
from .loading import load_model
from . import distributed as dist
from .distributed import micro_batches
from .model import GPT, GPTConfig, PRESETS
from .progress import Progress
from .tokenizer import tokenizer_from_dict

METRICS_HEADER = "iter,train_loss,val_loss,lr,tokens_per_sec,elapsed_s"


@dataclass
class TrainOptions:
    preset: str = "baby"
    n_layer: int | None = None        # None: take it from the preset
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    bias: bool | None = None          # biases in Linear and LayerNorm (None: the preset's)
    batch_size: int = 12
    grad_accum: int = 1               # micro-batches of batch_size summed into one step
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # the cosine's length (None: max_iters, fixed at the start)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    seed: int = 1337
    out: str = "out"
    data: str | None = None           # None: the bundled tiny Shakespeare
    tokenizer: str = "char"           # "char" or "gpt2"
    init_from: str | None = None      # start from these weights: a GPT-2 name, HF dir or run
    threads: int | None = None

    def model_config(self, vocab_size: int) -> GPTConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
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
        """Every option in range, before anything is read or written."""
        def opt(name):
            return "--" + name.replace("_", "-")
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{opt(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "threads", "lr_decay_iters"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{opt(name)} must be at least 1, got {v}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{opt(name)} must be a finite number, got {getattr(self, name)}")
        if not (self.lr > 0 and self.min_lr >= 0):
            raise ValueError(f"--lr must be > 0 and --min-lr >= 0, got {self.lr} and {self.min_lr}")
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the decay would "
                             f"raise the learning rate. Give a --min-lr of at most {self.lr:g}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--weight-decay and --grad-clip must be >= 0")
        if self.warmup_iters < 0:
            raise ValueError(f"--warmup-iters must be >= 0, got {self.warmup_iters}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.tokenizer not in ("char", "gpt2"):
            raise ValueError(f"--tokenizer must be 'char' or 'gpt2', got {self.tokenizer!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown --preset {self.preset!r}; choose one of {', '.join(PRESETS)}")


# Each preset's recipe: what `--preset NAME` sets besides the architecture (tinygpt/model.py's
# PRESETS), unless given on the command line. "time" is rough, for a 2-core laptop-class CPU at
# the measured tokens/s of each size (docs/performance.md).
RECIPES = {
    "baby": dict(batch_size=12, max_iters=2000, lr=1e-3, min_lr=1e-4, warmup_iters=100,
                 beta2=0.99, eval_interval=250, eval_iters=20, tokenizer="char",
                 time="~2 min on 2 cores"),
    # nanoGPT's train_shakespeare_char.py, as published (a GPU recipe)
    "shakespeare-char": dict(batch_size=64, max_iters=5000, lr=1e-3, min_lr=1e-4,
                             warmup_iters=100, beta2=0.99, eval_interval=250, eval_iters=200,
                             tokenizer="char", time="~16 h on 2 cores"),
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


class _Stop:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the loop finishes the current step, saves, and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: the signals keep their default action
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:       # a second Ctrl-C: stop at once (the last checkpoint stays)
            raise KeyboardInterrupt
        self.requested = True

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
    """Bytes a training step needs, roughly, from the config alone (float32).

    Parameters: weights, gradients and AdamW's two moments, 4 floats each. Activations kept for
    backward, per block: about 20 (B, T, C) arrays (layer norms, q/k/v, the MLP's 4C, residuals)
    and 2 (B, nh, T, T) attention maps; then the logits, their softmax and gradient (B, T, V)."""
    from .params import count_parameters
    B, T, C, L = batch_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    params = 16 * count_parameters(cfg)
    activations = 4 * (L * B * T * (20 * C + 2 * cfg.n_head * T) + 3 * B * T * cfg.vocab_size)
    return params + activations


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
    need, have = estimate_memory(cfg, batch_size), available_memory()
    if have is not None and need > have:
        raise ValueError(
            f"this run needs about {need / 2**30:,.1f} GiB of memory (batch {batch_size}, block "
            f"{cfg.block_size}, {cfg.n_layer} layers of {cfg.n_embd}) but {have / 2**30:,.1f} GiB "
            f"is available; use a smaller --batch-size or --block-size")


def check_out_dir(out: Path, overwrite: bool) -> None:
    """A fresh run writes only into a new or empty directory (or, with --overwrite, a run's)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    if ckpt.is_run_started(out) and not overwrite and not _only_debris(out):
        what = ("a training run" if ckpt.is_checkpoint(out) else "files")
        raise ValueError(f"--out {out} already holds {what}. Continue it with `tinygpt train "
                         f"--resume --out {out}`, choose a new --out, or add --overwrite to "
                         f"replace it")
    parent = out
    while not parent.exists():            # the first existing ancestor must be a writable dir
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot create it ({parent} is not a writable directory)")


def _only_debris(out: Path) -> bool:
    """A run killed before its first checkpoint completed: a metrics.csv, a lock, an unfinished
    save. Nothing there can be resumed, so a fresh run may start over it."""
    names = {e.name for e in os.scandir(out)}
    return not ckpt.list_checkpoints(out) and all(
        n in (ckpt.METRICS_FILE, ckpt.LOCK_FILE) or n.startswith(ckpt.PARTIAL_PREFIX)
        for n in names)


OUR_FILES = (ckpt.METRICS_FILE, ckpt.MODEL_FILE, ckpt.OPTIM_FILE, ckpt.RNG_FILE, ckpt.CONFIG_FILE,
             ckpt.MANIFEST_FILE, "loss.png")


def clear_run(out: Path) -> None:
    """--overwrite: remove what tinygpt wrote in `out` (checkpoints, metrics), nothing else."""
    for e in list(os.scandir(out)):
        if e.is_dir(follow_symlinks=False) and (ckpt._NAME.match(e.name) or
                                                 e.name.startswith(ckpt.PARTIAL_PREFIX)):
            ckpt._remove_dir(Path(e.path))
        elif e.name in OUR_FILES:
            os.unlink(e.path)
    ckpt.clean_partial(out)


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
        model, tokenizer, description = load_model(opts.init_from, log=log)
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
def resume_options(saved: dict, opts: TrainOptions, given: set) -> tuple[TrainOptions, list]:
    """The saved options with the changeable ones given on the command line applied.
    Returns (options, ["--lr 0.001 -> 0.0005", ...]); a fixed option given with another value
    is an error naming it."""
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
        if name in RESUME_FIXED:
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
# The loop
# ----------------------------------------------------------------------------------------------
def train(opts: TrainOptions, resume: bool = False, log=print, progress: bool = True,
          stop: "_Stop | None" = None, on_iter=None, overwrite: bool = False,
          given: set | None = None) -> TrainResult:
    """Train (or resume) a model as `opts` says; checkpoints and metrics go to opts.out.

    given: the option names set on the command line (for --resume: those are the ones that may
    change the saved plan); None means every option that differs from its default.
    on_iter(it, stop, model): called before each step; tests use it to simulate a Ctrl-C.
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
    # checkpoints) and prints. tinygpt/distributed.py has the few collective calls used below.
    world = dist.world()
    if not world.is_main:
        log, progress = (lambda *_: None), False
    lock = ckpt.RunLock(out)
    with dist.abort_on_error(world):       # one rank fails: every rank stops, none hangs
        if resume:
            if not ckpt.is_checkpoint(out):
                why = (": the run was stopped before its first checkpoint was complete"
                       if out.is_dir() and _only_debris(out) else " (no checkpoint in it)")
                raise ckpt.CheckpointError(f"no run to resume in {out}{why}; start one with "
                                           f"`tinygpt train --out {out}`")
            if world.is_main:
                lock.acquire()
        try:
            return _train(opts, out, lock, resume, overwrite and not resume, given, log,
                          progress, stop, on_iter, start_time, world)
        finally:
            lock.release()


def _train(opts, out, lock, resume, overwrite, given, log, progress, stop, on_iter, start_time,
           world):
    warn = log
    changes, resumes = [], []
    if resume:
        if world.is_main:
            removed = ckpt.clean_partial(out)
            if removed:
                log(f"removed what an interrupted save left in {out}: {', '.join(removed)}")
            newest = ckpt.list_checkpoints(out)[-1]
            start, _ = ckpt.find_checkpoint(out, "latest", log=warn)
            if start.path != newest.path:     # newer ones are damaged: set them aside, visibly
                for c in ckpt.list_checkpoints(out):
                    if (c.iteration, c.serial) > (start.iteration, start.serial):
                        os.rename(c.path, c.path.parent / f"damaged-{c.path.name}")
                        warn(f"warning: moved the damaged checkpoint {c.path} to "
                             f"damaged-{c.path.name}")
        dist.barrier(world)                   # the other ranks read after rank 0 has tidied
        start, saved = ckpt.find_checkpoint(out, "latest", log=warn)
        if int(saved.get("world_size", 1)) != world.size:
            raise ValueError(f"the run in {out} was trained with {saved.get('world_size', 1)} "
                             f"rank(s); resume it with the same number (now {world.size})")
        opts, changes = resume_options(saved.get("train", {}), opts, given)
        decay = saved.get("train", {}).get("lr_decay_iters")
        if any(c.startswith("--max-iters") for c in changes) and "lr_decay_iters" not in given \
                and decay is not None:
            changes.append(f"(the learning-rate decay still ends at iteration {decay}; "
                           f"--lr-decay-iters changes that)")
        resumes = list(saved.get("resumes", []))
        if changes:
            resumes.append({"iteration": int(saved["iteration"]), "changed": changes})
    if not resume:
        apply_recipe(opts, given)
        if "lr" in given and "min_lr" not in given:
            opts.min_lr = opts.lr / 10         # the decay's floor follows a chosen peak rate
    opts.check()
    if opts.lr_decay_iters is None:     # fixed now: a later --max-iters extends the run
        opts.lr_decay_iters = opts.max_iters   # on a defined schedule
    threads = opts.threads
    if threads is None and world.size > 1:         # ranks sharing a machine share its cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // world.local_size)
    if threads:
        from tensor.kernels import set_num_threads
        set_num_threads(threads)
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

    # the data and the model, before anything is written
    prepared = opts.data is not None and os.path.isdir(opts.data)
    if prepared:                     # `tinygpt prepare`'s token files: mapped, never read whole
        data, meta = open_prepared(opts.data)
        if meta.get("notice"):
            log(meta["notice"])
        text, checksum = None, prepared_checksum(opts.data)
    else:
        text, checksum = load_text(opts.data), data_checksum(opts.data)
    if resume and saved.get("data_sha256") not in (None, checksum):
        raise ValueError(f"the training data {opts.data or 'the bundled Shakespeare'} changed "
                         f"since this run started (its SHA-256 differs); resuming would train "
                         f"on other text. Restore the file, or start a new run with another --out")
    pretrained = None
    if resume:
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
    if prepared:
        if meta["tokenizer"] != tokenizer.to_dict():
            raise ValueError(f"--data {opts.data} was prepared with another tokenizer than the "
                             f"model's ({meta['tokenizer'].get('type')}); prepare it again with "
                             f"the model's tokenizer")
        for split, ids in (("train", data.train), ("val", data.val)):
            if len(ids) < model_cfg.block_size + 1:
                raise ValueError(f"{source}: its {split} split holds {len(ids):,} tokens, but one "
                                 f"example needs block_size + 1 = {model_cfg.block_size + 1}; "
                                 f"use a smaller --block-size")
    else:
        data = Dataset.from_ids(encode(tokenizer, text), model_cfg.block_size, source=source)
    check_memory(model_cfg, opts.batch_size)

    tensor.manual_seed(opts.seed)
    if resume:
        model = load_model(start.path, which="latest")[0].train()
    elif pretrained is not None:
        model = pretrained
    else:
        model = GPT(model_cfg, seed=opts.seed)
    optimizer = optim.AdamW(model.parameters(), lr=opts.lr, betas=(opts.beta1, opts.beta2),
                            weight_decay=opts.weight_decay)
    batch_rng = np.random.default_rng(opts.seed)           # which training batches
    dropout_rng = np.random.default_rng(                   # which units dropout drops
        opts.seed + 1 if world.size == 1 else [opts.seed + 1, world.rank])
    for _, m in model.named_modules():
        if isinstance(m, tensor.nn.Dropout):
            m.generator = dropout_rng

    # now, and only now, the run directory is written
    metrics = out / ckpt.METRICS_FILE
    best_val = math.inf
    if resume:
        best_val = float(saved.get("best_val_loss") or math.inf)
        rng_states = ckpt.load_training_state(start.path, optimizer, start_iter)
        batch_rng.bit_generator.state = rng_states["batch"]
        per_rank = rng_states.get("dropout_ranks")         # every rank's stream (over MPI)
        if world.size == 1:
            dropout_rng.bit_generator.state = rng_states["dropout"]
        elif per_rank is not None and len(per_rank) == world.size:
            dropout_rng.bit_generator.state = per_rank[world.rank]
        else:       # a checkpoint of an older tinygpt held rank 0's alone: draw a new stream
            dropout_rng.bit_generator.state = np.random.default_rng(
                [opts.seed + 1, world.rank, start_iter]).bit_generator.state
        if world.is_main:
            _truncate_metrics(metrics, start_iter)
        log(f"resuming {start.describe()} toward iteration {opts.max_iters}")
        if changes:
            log("changed on resume: " + ", ".join(changes))
        if start_iter == opts.max_iters:
            log(f"the run is already complete at iteration {start_iter} of {opts.max_iters}; "
                f"to train longer, resume with a larger --max-iters")
            return TrainResult(start_iter, best_val, time.perf_counter() - start_time)
    elif world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()                                     # then check again: another process
        if overwrite or _only_debris(out):                 # may have started in between
            clear_run(out)
        elif any(e.name != ckpt.LOCK_FILE for e in os.scandir(out)):
            raise ValueError(f"--out {out} was written to by another process while this run "
                             f"was starting; choose another --out")
        from tensor.io import atomic_write_bytes
        atomic_write_bytes(metrics, (METRICS_HEADER + "\n").encode())

    n_params = model.num_parameters()
    log(f"model: {model_cfg.n_layer} layers, {model_cfg.n_head} heads, {model_cfg.n_embd} dims, "
        f"block {model_cfg.block_size}, vocab {model_cfg.vocab_size} — {n_params / 1e6:.2f}M "
        f"parameters; {len(data.train):,} train / {len(data.val):,} val tokens")

    def save(it, val_loss):
        dropout_states = dist.gather_rng_states(dropout_rng, world)   # every rank takes part
        if not world.is_main:
            return
        config = {"model": model_cfg.to_dict(), "tokenizer": tokenizer.to_dict(),
                  "train": asdict(opts), "iteration": it, "val_loss": val_loss,
                  "best_val_loss": best_val if math.isfinite(best_val) else None,
                  "data_sha256": checksum, "resumes": resumes, "world_size": world.size}
        states = {"batch": batch_rng.bit_generator.state,
                  "dropout": dropout_rng.bit_generator.state}
        if world.size > 1:
            states["dropout_ranks"] = dropout_states
        ckpt.save_checkpoint(out, model, config, optimizer, states)

    params = model.parameters()
    T, B, G = model_cfg.block_size, opts.batch_size, opts.grad_accum
    reducer = dist.GradientReducer(params, world)          # averages gradients over the ranks
    def draw(rng):
        return data.batch("train", B, T, rng)
    history, train_time, train_tokens = [], 0.0, 0
    stop_ctx = stop or _Stop()
    bar = Progress(opts.max_iters, desc="train", unit="tok", enabled=progress, start=start_iter,
                   scale=B * T * G * world.size, echo=log)
    interrupted = False
    it = start_iter

    def lr_at(it):
        return optim.cosine_lr(it, opts.lr, opts.min_lr, opts.warmup_iters, opts.lr_decay_iters)

    with stop_ctx:
        while True:
            lr = lr_at(it)
            fresh = not (resume and it == start_iter)      # that eval is already in metrics.csv
            if fresh and (it % opts.eval_interval == 0 or it == opts.max_iters):
                losses = estimate_loss(model, data, opts.batch_size, T, opts.eval_iters,
                                       [opts.seed, it], world)
                dist.check_same(params, world, f"at iteration {it}")
                tps = train_tokens / train_time if train_time else 0.0
                row = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                       "lr": lr, "tokens_per_sec": tps,
                       "elapsed_s": time.perf_counter() - start_time}
                history.append(row)
                if world.is_main:
                    _append_metrics(metrics, row)
                best_val = min(best_val, losses["val"])
                bar.write(f"iter {it}: train loss {losses['train']:.4f}, "
                          f"val loss {losses['val']:.4f}")
                save(it, losses["val"])
            if it >= opts.max_iters:
                break
            if on_iter is not None:
                on_iter(it, stop_ctx, model)
            ckpt.kill_point_iteration(it)
            if dist.any_rank(stop_ctx.requested, world):      # every rank stops at one step
                save(it, None)
                interrupted = True
                break

            t0 = time.perf_counter()
            # --grad-accum G: the gradients of G micro-batches, each of the mean loss / G, add
            # up to the gradient of one batch G times larger (tests/test_runs.py checks it)
            model.zero_grad()
            loss_value = 0.0
            for x, y in micro_batches(batch_rng, draw, G, world.rank, world.size):
                _, loss = model(x, y)
                loss_value += loss.item() / G
                (loss * (1.0 / G) if G > 1 else loss).backward()
            reducer.reduce()                    # over MPI: the mean gradient of all ranks
            loss_value = dist.allreduce_mean(loss_value, world)
            if not math.isfinite(loss_value):
                bar.close()
                raise NonFiniteLoss(
                    f"the loss became {loss_value} at iteration {it}; stopping. The last good "
                    f"checkpoint in {out} is kept: continue from it with a lower learning rate, "
                    f"e.g. `tinygpt train --resume --out {out} --lr {opts.lr / 3:.3g}`, or a "
                    f"smaller --grad-clip.")
            optim.clip_grad_norm_(params, opts.grad_clip)
            optimizer.lr = lr
            optimizer.step()
            train_time += time.perf_counter() - t0
            train_tokens += B * T * G * world.size
            it += 1
            bar.update(it, loss=f"{loss_value:.4f}", lr=f"{lr:.1e}")
    bar.close()
    wall = time.perf_counter() - start_time
    if interrupted:
        log(f"interrupted: checkpoint saved at iteration {it} in {out}; continue the same run "
            f"with `tinygpt train --resume --out {out}`")
    log(f"best val loss {best_val:.4f} · {it} iterations · wall time {wall:.1f} s")
    return TrainResult(it, best_val, wall, interrupted, history)


def _append_metrics(path: Path, row: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{row['iter']},{row['train_loss']:.6f},{row['val_loss']:.6f},{row['lr']:.6g},"
                f"{row['tokens_per_sec']:.1f},{row['elapsed_s']:.2f}\n")
        f.flush()


def _truncate_metrics(path: Path, last_iter: int):
    """Drop rows written after the checkpoint we resume from (a crash may leave some)."""
    from tensor.io import atomic_write_bytes
    keep = [METRICS_HEADER]
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            try:
                if int(line.split(",")[0]) <= last_iter:
                    keep.append(line)
            except ValueError:
                continue                  # a line cut short by a kill
    atomic_write_bytes(path, ("\n".join(keep) + "\n").encode())
