"""Does tinygpt learn as well as PyTorch?  The default `tinygpt train` recipe (baby preset,
tiny Shakespeare, 2000 iterations), run by tinygpt and by the same model in PyTorch, for a few
seeds. Prints, for each side and seed, the two figures worth comparing:
  best val  the smallest of the evaluations every 250 iterations, each the mean of 20 val batches
            drawn exactly as `tinygpt train` draws them (the figure `tinygpt train` reports, and
            the one nanoGPT publishes for this recipe)
  final val the loss after the last step on the same 200 fixed val batches (less noisy)

    python benchmarks/train_quality.py --seeds 1337 1 2 [--iters 2000] [--side both|tinygpt|torch]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import torch_reference as ref  # noqa: E402

import tensor  # noqa: E402
from tinygpt.train import TrainOptions, train, build_tokenizer, encode  # noqa: E402
from tinygpt.checkpoint import load_model  # noqa: E402
from tinygpt.dataset import Dataset, read_text  # noqa: E402
from tensor import optim  # noqa: E402


def val_loss(forward, data, n=200):
    rng = np.random.default_rng(12345)
    return float(np.mean([forward(*data.batch("val", 12, 64, rng)) for _ in range(n)]))


def run_tinygpt(seed, iters, threads):
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = train(TrainOptions(seed=seed, max_iters=iters, out=d, threads=threads),
                    progress=False,
                    log=lambda *a: None)
        wall = time.perf_counter() - t0
        model, tok, _ = load_model(d)
    model.eval()
    data = Dataset.from_ids(encode(tok, read_text()), 64)
    with tensor.no_grad():
        final = val_loss(lambda x, y: model(x, y)[1].item(), data)
    return res.best_val_loss, final, wall


def run_torch(seed, iters, threads):
    torch = ref.require_torch()
    torch.set_num_threads(threads)
    opts = TrainOptions(seed=seed, max_iters=iters)
    text = read_text()
    tok = build_tokenizer("char", text)
    data = Dataset.from_ids(encode(tok, text), 64)
    cfg = opts.model_config(tok.vocab_size)
    model = ref.build(cfg, seed)
    opt = ref.adamw(model, opts.lr, (opts.beta1, opts.beta2), opts.weight_decay)
    rng = np.random.default_rng(seed)
    forward = lambda x, y: model(ref.to_torch(x), ref.to_torch(y))[1].item()  # noqa: E731
    best = float("inf")
    t0 = time.perf_counter()
    for it in range(iters + 1):
        if it % opts.eval_interval == 0 or it == iters:     # as tinygpt/train.py evaluates
            model.eval()
            with torch.no_grad():
                erng = np.random.default_rng([seed, it, True])     # train.py's val batches
                best = min(best, float(np.mean([forward(*data.batch("val", 12, 64, erng))
                                                for _ in range(opts.eval_iters)])))
            model.train()
        if it == iters:
            break
        lr = optim.cosine_lr(it, opts.lr, opts.min_lr, opts.warmup_iters, iters)
        x, y = data.batch("train", 12, 64, rng)
        ref.train_step(model, opt, ref.to_torch(x), ref.to_torch(y), lr, opts.grad_clip)
    wall = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        final = val_loss(forward, data)
    return best, final, wall


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--side", choices=["both", "tinygpt", "torch"], default="both")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    for seed in a.seeds:
        if a.side in ("both", "tinygpt"):
            best, final, wall = run_tinygpt(seed, a.iters, a.threads)
            print(f"tinygpt seed {seed}: best val (20 batches) {best:.4f}, final val "
                  f"(200 fixed batches) {final:.4f}, {wall:.0f} s", flush=True)
        if a.side in ("both", "torch"):
            if ref.require_torch() is None:
                print("torch not installed: pip install -e '.[parity]'")
            else:
                best, final, wall = run_torch(seed, a.iters, a.threads)
                print(f"torch   seed {seed}: best val (20 batches) {best:.4f}, final val "
                      f"(200 fixed batches) {final:.4f}, {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
