"""The training loop: batches in, AdamW steps, evaluation, metrics, checkpoints.

Defaults are the reference CPU recipe for the `baby` preset on tiny Shakespeare (nanoGPT's
published laptop recipe): batch 12, block 64, 2000 iterations, lr 1e-3 with 100 warmup
iterations and cosine decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1, clip 1.0.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, asdict, field, fields
from pathlib import Path

import numpy as np

import tensor
from tensor import optim

from . import checkpoint as ckpt
from .dataset import Dataset, read_text
from .model import GPT, GPTConfig, PRESETS

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
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
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
    threads: int | None = None

    def model_config(self, vocab_size: int) -> GPTConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = {"vocab_size": vocab_size, **PRESETS[self.preset]}
        cfg["vocab_size"] = vocab_size
        for name in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        return GPTConfig(**cfg)

    def check(self):
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, "
                                 f"got {getattr(self, name)}")
        if not (self.lr > 0 and self.min_lr >= 0):
            raise ValueError(f"--lr must be > 0 and --min-lr >= 0, got {self.lr} and {self.min_lr}")
        if self.tokenizer not in ("char", "gpt2"):
            raise ValueError(f"--tokenizer must be 'char' or 'gpt2', got {self.tokenizer!r}")


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
    """Set by Ctrl-C (SIGINT): the loop finishes the current step, saves, and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:       # not the main thread: Ctrl-C stays a KeyboardInterrupt
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:       # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainResult:
    iterations: int
    best_val_loss: float
    wall_time: float
    interrupted: bool = False
    history: list = field(default_factory=list)   # metrics rows as dicts


def estimate_loss(model, data: Dataset, opts: TrainOptions, block_size: int, it: int) -> dict:
    """Mean loss over eval_iters batches of each split, in eval mode, without a graph."""
    model.eval()
    losses = {}
    with tensor.no_grad():
        for split in ("train", "val"):
            rng = np.random.default_rng([opts.seed, it, split == "val"])   # same batches on resume
            total = 0.0
            for _ in range(opts.eval_iters):
                x, y = data.batch(split, opts.batch_size, block_size, rng)
                total += model(x, y)[1].item()
            losses[split] = total / opts.eval_iters
    model.train()
    return losses


def train(opts: TrainOptions, resume: bool = False, log=print, progress: bool = True,
          stop: "_Stop | None" = None, on_iter=None) -> TrainResult:
    """Train (or resume) a model as `opts` says; checkpoints and metrics go to opts.out.

    on_iter(it, stop, model): called before each step; tests use it to simulate a Ctrl-C.
    """
    start_time = time.perf_counter()
    opts.check()
    out = Path(opts.out)
    if opts.threads:
        from tensor.kernels import set_num_threads
        set_num_threads(opts.threads)

    if resume:
        saved = ckpt.load_config(out)
        saved_opts = saved.get("train", {})
        # the run's identity comes from the checkpoint; only the length may be extended
        keep = {"max_iters": opts.max_iters, "out": opts.out, "threads": opts.threads}
        opts = TrainOptions(**{**{f.name: saved_opts[f.name] for f in fields(TrainOptions)
                                  if f.name in saved_opts}, **keep})
    text = read_text(opts.data)
    if resume:
        from .tokenizer import tokenizer_from_dict
        tokenizer = tokenizer_from_dict(saved["tokenizer"])
    else:
        tokenizer = build_tokenizer(opts.tokenizer, text)
    model_cfg = (GPTConfig.from_dict(saved["model"]) if resume
                 else opts.model_config(tokenizer.vocab_size))
    data = Dataset.from_ids(encode(tokenizer, text), model_cfg.block_size,
                            source=str(opts.data or "the bundled Shakespeare"))

    tensor.manual_seed(opts.seed)
    if resume:
        model, _, saved = ckpt.load_model(out)
    else:
        model = GPT(model_cfg, seed=opts.seed)
    optimizer = optim.AdamW(model.parameters(), lr=opts.lr, betas=(opts.beta1, opts.beta2),
                            weight_decay=opts.weight_decay)
    batch_rng = np.random.default_rng(opts.seed)           # which training batches
    dropout_rng = np.random.default_rng(opts.seed + 1)     # which units dropout drops
    for _, m in model.named_modules():
        if isinstance(m, tensor.nn.Dropout):
            m.generator = dropout_rng

    start_iter, best_val = 0, math.inf
    if resume:
        start_iter = int(saved["iteration"])
        best_val = float(saved.get("best_val_loss", math.inf))
        rng_states = ckpt.load_training_state(out, optimizer, start_iter)
        batch_rng.bit_generator.state = rng_states["batch"]
        dropout_rng.bit_generator.state = rng_states["dropout"]
        _truncate_metrics(out / "metrics.csv", start_iter)
        log(f"resuming from {out} at iteration {start_iter} of {opts.max_iters}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.csv").write_text(METRICS_HEADER + "\n")

    n_params = model.num_parameters()
    log(f"model: {model_cfg.n_layer} layers, {model_cfg.n_head} heads, {model_cfg.n_embd} dims, "
        f"block {model_cfg.block_size}, vocab {model_cfg.vocab_size} — {n_params / 1e6:.2f}M "
        f"parameters; {len(data.train):,} train / {len(data.val):,} val tokens")

    def save(it):
        config = {"model": model_cfg.to_dict(), "tokenizer": tokenizer.to_dict(),
                  "train": asdict(opts), "iteration": it, "best_val_loss": best_val}
        ckpt.save_checkpoint(out, model, config, optimizer,
                             {"batch": batch_rng.bit_generator.state,
                              "dropout": dropout_rng.bit_generator.state})

    params = model.parameters()
    T, B = model_cfg.block_size, opts.batch_size
    history, train_time, train_tokens = [], 0.0, 0
    stop_ctx = stop or _Stop()
    bar = _Progress(opts.max_iters, start_iter, enabled=progress)
    interrupted = False
    it = start_iter
    lr = optim.cosine_lr(it, opts.lr, opts.min_lr, opts.warmup_iters, opts.max_iters)
    with stop_ctx:
        while True:
            lr = optim.cosine_lr(it, opts.lr, opts.min_lr, opts.warmup_iters, opts.max_iters)
            fresh = not (resume and it == start_iter)      # that eval is already in metrics.csv
            if fresh and (it % opts.eval_interval == 0 or it == opts.max_iters):
                losses = estimate_loss(model, data, opts, T, it)
                tps = train_tokens / train_time if train_time else 0.0
                row = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                       "lr": lr, "tokens_per_sec": tps,
                       "elapsed_s": time.perf_counter() - start_time}
                history.append(row)
                _append_metrics(out / "metrics.csv", row)
                best_val = min(best_val, losses["val"])
                bar.message(f"iter {it}: train loss {losses['train']:.4f}, "
                            f"val loss {losses['val']:.4f}")
                save(it)
            if it >= opts.max_iters:
                break
            if on_iter is not None:
                on_iter(it, stop_ctx, model)
            if stop_ctx.requested:
                save(it)
                interrupted = True
                break

            t0 = time.perf_counter()
            x, y = data.batch("train", B, T, batch_rng)
            _, loss = model(x, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bar.close()
                raise NonFiniteLoss(
                    f"the loss became {loss_value} at iteration {it}; stopping. The last good "
                    f"checkpoint in {out} is kept. Try a lower --lr or a smaller --grad-clip.")
            model.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(params, opts.grad_clip)
            optimizer.lr = lr
            optimizer.step()
            train_time += time.perf_counter() - t0
            train_tokens += B * T
            it += 1
            bar.update(it, loss_value, lr, train_tokens / train_time)
    bar.close()
    wall = time.perf_counter() - start_time
    if interrupted:
        log(f"interrupted: checkpoint saved at iteration {it} in {out}; continue with "
            f"`tinygpt train --resume --out {out}`")
    log(f"best val loss {best_val:.4f} · {it} iterations · wall time {wall:.1f} s")
    return TrainResult(it, best_val, wall, interrupted, history)


def _append_metrics(path: Path, row: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{row['iter']},{row['train_loss']:.6f},{row['val_loss']:.6f},{row['lr']:.6g},"
                f"{row['tokens_per_sec']:.1f},{row['elapsed_s']:.2f}\n")
        f.flush()


def _truncate_metrics(path: Path, last_iter: int):
    """Drop rows written after the checkpoint we resume from (a crash may leave some)."""
    if not path.exists():
        path.write_text(METRICS_HEADER + "\n")
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = [lines[0]] + [l for l in lines[1:] if l and int(l.split(",")[0]) <= last_iter]
    path.write_text("\n".join(keep) + "\n")


class _Progress:
    """A one-line progress bar on stderr: iteration, loss, learning rate, tokens/s."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last_print = 0.0
        self.start = start

    def update(self, it, loss, lr, tps):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and now - self.last_print < 10 and it != self.total:
            return   # in a log file, one line every 10 s is enough
        self.last_print = now
        width = 30
        filled = int(width * it / max(1, self.total))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {it}/{self.total}  loss {loss:.4f}  "
                f"lr {lr:.2e}  {tps:,.0f} tok/s")
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def message(self, text):
        if self.enabled:
            sys.stderr.write(("\r\033[K" if self.tty else "") + text + "\n")
            sys.stderr.flush()

    def close(self):
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
