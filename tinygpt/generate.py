"""Sampling text from a GPT, one token at a time, with a key/value cache.

At each step the model sees only the newest token; the keys and values of all earlier tokens
are kept per layer (KVCache), so a step costs O(T) instead of re-running the whole context.
When the context outgrows the model's block_size, the last block_size tokens are run again from
scratch (a sliding window), as the model never saw positions past block_size in training.
"""
from __future__ import annotations

import numpy as np

import tensor
from .model import GPT, KVCache


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> int:
    """Pick the next token id from one row of logits (V,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(logits))                      # greedy
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.size:
        kth = np.partition(logits, -top_k)[-top_k]          # the k-th largest logit
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if top_p is not None and 0 < top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = cumulative - probs[order] < top_p            # the smallest head reaching top_p
        trimmed = np.zeros_like(probs)
        trimmed[order[keep]] = probs[order[keep]]
        probs = trimmed / trimmed.sum()
    return int(rng.choice(probs.size, p=probs))


def generate(model: GPT, ids, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             stop_token: int | None = None, use_cache: bool = True):
    """Yield new token ids one by one (a generator, so callers can stream them)."""
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("generate: the prompt is empty; give at least one token")
    rng = np.random.default_rng(seed)
    block = model.config.block_size
    was_training = model.training
    model.eval()
    try:
        with tensor.no_grad():
            cache, pending = None, ids[-block:]
            for _ in range(max_new_tokens):
                if cache is None or (cache.length + len(pending) > block):
                    cache = KVCache(model.config.n_layer) if use_cache else None
                    pending = ids[-block:]                  # (re)start from the last window
                logits, _ = model(np.array([pending]), cache=cache, last_only=True)
                nxt = sample_next(logits.data[0, -1], rng, temperature, top_k, top_p)
                ids.append(nxt)
                yield nxt
                if stop_token is not None and nxt == stop_token:
                    return
                pending = [nxt] if use_cache else ids[-block:]
                if not use_cache:
                    cache = None
    finally:
        model.train(was_training)
