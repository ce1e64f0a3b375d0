"""How good is a model: its loss on batches of a dataset, and its perplexity on a text.

    losses = estimate_loss(model, data, batch_size=12, block_size=64, eval_iters=20, seed=[0])
    ppl, n_scored, seconds = strided_perplexity(model, ids, stride=512)

estimate_loss is what training prints at each evaluation (tinygpt/train.py); strided_perplexity
is `tinygpt perplexity` (Hugging Face's strided evaluation, so the numbers compare).
"""
from __future__ import annotations

import math
import time

import numpy as np

import tensor


def estimate_loss(model, data, batch_size: int, block_size: int, eval_iters: int, seed,
                  world=None, progress=None) -> dict:
    """Mean loss over eval_iters batches of each split, in eval mode, without a graph.

    The batches are drawn from np.random.default_rng([*seed, split == "val"]); training passes
    seed = [its seed, the iteration], so an evaluation draws the same batches however the run
    got there (resumed or not). Over MPI (`world`, tinygpt/distributed.py), rank r evaluates
    batches r, r + N, ... of the same list and the sums are added: the same estimate as one
    process, N times sooner. progress(done, total) is called before the first batch and after
    each (total = 2 * eval_iters, both splits)."""
    from . import distributed as dist
    world = world or dist.World()
    was_training, losses = model.training, {}
    try:
        model.eval()
        if progress is not None:
            progress(0, 2 * eval_iters)
        with tensor.no_grad():
            for s, split in enumerate(("train", "val")):
                rng = np.random.default_rng([*seed, split == "val"])
                total = 0.0
                for j in range(eval_iters):
                    x, y = data.batch(split, batch_size, block_size, rng)
                    if j % world.size == world.rank:
                        total += model(x, y)[1].item()
                    if progress is not None:
                        progress(s * eval_iters + j + 1, 2 * eval_iters)
                losses[split] = dist.allreduce_mean(total, world) * world.size / eval_iters
    finally:                       # also when a Ctrl-C abandons the evaluation
        model.train(was_training)
    return losses


def strided_perplexity(model, ids, stride: int | None = None, progress=None):
    """Perplexity exp(mean NLL per token) of ids, over windows of the model's context.

    The strided evaluation of Hugging Face's perplexity guide, so the numbers compare: windows
    of T = block_size tokens start `stride` tokens apart; each window scores only the tokens
    that no earlier window scored, so each of those sees at least T - stride tokens of context:

        ids    : 0 1 2 3 4 5 6 7 8 9            T = 4, stride = 2
        window : [0 1 2 3]                      scores 1 2 3     (token 0 has no context)
                     [2 3 4 5]                  scores 4 5       (3 was scored already)
                         [4 5 6 7] ...

    A smaller stride gives more context per token and costs T / stride forward passes per T
    tokens. With stride = T the windows are disjoint and the first token of each has no context,
    so it is not scored (as in the guide). Default stride: T / 2.
    progress(scored, total) is called before the first window and after each. Returns
    (perplexity, n_scored, seconds).
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    T = model.config.block_size
    if stride is None:
        stride = max(1, T // 2)
    if not 1 <= stride <= T:
        raise ValueError(f"stride must be between 1 and the block size {T}, got {stride}")
    n = len(ids)
    if n < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {n}")
    total = n - 1 - ((n - 1) // T if stride == T else 0)     # the tokens that will be scored
    total_nll, scored, prev_end, t0 = 0.0, 0, 0, time.perf_counter()
    was_training = model.training
    try:
        model.eval()
        if progress is not None:
            progress(0, total)
        with tensor.no_grad():
            for begin in range(0, n - 1, stride):
                end = min(begin + T, n)                 # the window is ids[begin:end]
                x = ids[begin:end - 1]                  # (t,) inputs
                y = ids[begin + 1:end].copy()           # (t,) targets: token j is y[j - begin - 1]
                y[:max(0, prev_end - begin - 1)] = -1   # tokens before prev_end: scored already
                kept = int((y >= 0).sum())
                _, loss = model(x[None, :], y[None, :])            # mean NLL of the kept targets
                total_nll += float(loss.item()) * kept
                scored += kept
                prev_end = end
                if progress is not None:
                    progress(scored, total)
                if end == n:
                    break
    finally:
        model.train(was_training)
    return math.exp(total_nll / scored), scored, time.perf_counter() - t0
