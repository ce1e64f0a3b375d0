"""Sampling text from a GPT, one token at a time, with a key/value cache.

At each step the model sees only the newest token; the keys and values of all earlier tokens
are kept per layer (tinygpt/model.py's KVCache, beside the attention that fills it), so a step
costs O(T) instead of re-running the whole context. When the context outgrows the model's block_size, the last block_size tokens are run
again from scratch (a sliding window), as the model never saw positions past block_size in
training.

generate() streams the new ids of one sequence; GPT.generate (tinygpt/model.py) is the nanoGPT-
style method over it that returns whole (B, T + new) arrays. generate_batch() decodes several
sequences of one length together, B rows per forward pass in one KVCache (`--num-samples N`):
a decode step is bound by reading the weights, so B rows cost little more than one.
"""
from __future__ import annotations

import codecs

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
             top_k: int | None = None, top_p: float | None = None,
             seed: int | np.random.Generator | None = None, stop_token: int | None = None,
             use_cache: bool = True, vocab_size: int | None = None):
    """Yield new token ids one by one (a generator, so callers can stream them).

    seed: an int, or a np.random.Generator to draw from (GPT.generate passes one generator to
    each row in turn, so the rows continue one random stream).

    vocab_size: draw only ids below it. A model's embedding table may be padded past its
    tokenizer's vocabulary (50,304 rows for GPT-2's 50,257 tokens, a faster matmul width); the
    extra rows are no tokens, so they must never be sampled."""
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
                nxt = sample_next(logits.data[0, -1, :vocab_size], rng, temperature, top_k,
                                  top_p)
                ids.append(nxt)
                yield nxt
                if stop_token is not None and nxt == stop_token:
                    return
                pending = [nxt] if use_cache else ids[-block:]
                if not use_cache:
                    cache = None
    finally:
        model.train(was_training)


def generate_batch(model: GPT, prompts, max_new_tokens: int, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, seeds=None,
                   stop_token: int | None = None, vocab_size: int | None = None):
    """Several sequences decoded together: one forward pass of B rows per step, one KVCache
    whose buffers are (B, nh, T, hs). Yields, per step, a list of B new ids; a row that ended
    (it sampled stop_token at an earlier step) gets None.

    Why it is faster: a one-row step reads every weight for 2 flops each (memory-bound); B rows
    read the weights once for 2B flops each, so B samples cost little more than one.

    prompts: B lists of ids, all of one length (several samples of one prompt, or prompts of
    equal length: rows of different lengths would need a padding mask, which the model lacks).
    seeds: B seeds (int, np.random.Generator or None), one random stream per row; row i then
    draws exactly what generate(model, prompts[i], ..., seed=seeds[i]) would draw, up to the
    rounding of the batched products. A row that ended keeps being fed its stop token, so every
    row stays the same length (the cache has one length); its outputs are thrown away."""
    rows = [[int(i) for i in p] for p in prompts]
    if not rows or not rows[0]:
        raise ValueError("generate_batch: give at least one prompt of at least one token")
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"generate_batch: the prompts have {sorted({len(r) for r in rows})} "
                         f"tokens; batched rows must all have the same length (generate them "
                         f"one at a time with generate())")
    B = len(rows)
    seeds = [None] * B if seeds is None else list(seeds)
    if len(seeds) != B:
        raise ValueError(f"generate_batch: {len(seeds)} seeds for {B} prompts; give one each")
    rngs = [np.random.default_rng(s) for s in seeds]
    done = [False] * B
    block = model.config.block_size
    was_training = model.training
    model.eval()
    try:
        with tensor.no_grad():
            cache, pending = None, None
            for _ in range(max_new_tokens):
                if cache is None or cache.length + pending.shape[1] > block:
                    cache = KVCache(model.config.n_layer)
                    pending = np.array([r[-block:] for r in rows])  # (B, T): the last window
                logits, _ = model(pending, cache=cache, last_only=True)    # (B, 1, V)
                step = []
                for i in range(B):
                    if done[i]:
                        nxt = stop_token                    # fed on, never shown
                        step.append(None)
                    else:
                        nxt = sample_next(logits.data[i, -1, :vocab_size], rngs[i],
                                          temperature, top_k, top_p)
                        done[i] = stop_token is not None and nxt == stop_token
                        step.append(nxt)
                    rows[i].append(nxt)
                yield step
                if all(done):
                    return
                pending = np.array([[r[-1]] for r in rows])            # (B, 1)
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------
# Memory: how many rows generate_batch may decode at once
# ----------------------------------------------------------------------------------------------

TOKEN_BYTES = 100       # a token kept in Python: its id in a list, its piece of text


def generation_bytes(config, prompt_tokens: int, max_new_tokens: int) -> dict[str, int]:
    """Bytes that one row of generate_batch holds at its peak, roughly, from the sizes alone
    (float32; a batch of B rows needs B times each):

        cache   the KVCache: per layer keys and values, (nh, cap, hs) each, where cap, the
                buffer's length, doubles as it fills: at most 2 * the context (and one layer's
                new buffer beside its old one while it grows)
        window  a pass over a whole window (the prompt, or the last block_size tokens when
                the context slides): about 16 (T, C) arrays in a block (q, k, v, the MLP's 4C,
                residuals, layer norms) and two (nh, T, T) attention maps; the logits (V,)
        tokens  the prompt and the new tokens kept as Python ids and text"""
    C, L, nh, V = config.n_embd, config.n_layer, config.n_head, config.vocab_size
    context = min(config.block_size, prompt_tokens + max_new_tokens)
    cap = max(16, 2 * context)
    return {"cache": 4 * 2 * C * cap * (L + 1),
            "window": 4 * (16 * context * C + 2 * nh * context * context + 2 * V),
            "tokens": TOKEN_BYTES * (prompt_tokens + max_new_tokens)}


# ----------------------------------------------------------------------------------------------
# Text in, text out: what every command and example shares around generate()
# ----------------------------------------------------------------------------------------------

def prompt_text(tokenizer, prompt: str) -> str:
    """The text the model continues. An empty prompt means "start from nothing": for a BPE model
    that is <|endoftext|>, the start of a new document (GPT-2's convention), which prints as
    nothing; a character model has no such token, so it starts from a newline, as tiny
    Shakespeare's speeches do (and a vocabulary without a newline needs a prompt)."""
    if prompt or getattr(tokenizer, "eot_token", None) is not None:
        return prompt
    if "\n" not in getattr(tokenizer, "chars", ""):
        raise ValueError("the prompt is empty, and this character model has no newline in its "
                         "vocabulary to start from; give a prompt")
    return "\n"


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids, never empty (see prompt_text). `<|endoftext|>` typed in the prompt is
    the document separator, as in training."""
    eot = getattr(tokenizer, "eot_token", None)
    if eot is None:
        return list(tokenizer.encode(prompt_text(tokenizer, prompt)))
    return list(tokenizer.encode(prompt, allowed_special="all")) or [eot]


class TextStream:
    """Token ids in, text out as soon as it is whole.

    One BPE token is a few bytes, not always whole characters: "é" is 2 bytes in UTF-8 and an
    emoji 4, and GPT-2 can emit them one byte-token at a time. Decoding each token on its own
    would print U+FFFD (�) for each half. So the bytes go into a buffer and we print its longest
    prefix that is complete UTF-8, keeping the unfinished character's first bytes for the next
    token. Python's incremental UTF-8 decoder is exactly that buffer; bytes that can never
    become a character (invalid UTF-8) are printed as U+FFFD right away rather than held back.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bytewise = hasattr(tokenizer, "decode_bytes")       # BPE; a char tokenizer is not
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        if not self.bytewise:
            return self.tokenizer.decode([token])
        return self.decoder.decode(self.tokenizer.decode_bytes([token]))

    def flush(self) -> str:
        """Whatever is left at the end (an unfinished character becomes U+FFFD)."""
        return self.decoder.decode(b"", final=True) if self.bytewise else ""
