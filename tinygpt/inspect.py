"""Look inside a GPT as it reads a prompt: what `tinygpt inspect` prints.

    model, tok, _ = load_model("gpt2")                # tinygpt.loading: a name, an HF dir or a run
    ids = encode(tok, "The cat sat on the")
    maps = attention_maps(model, ids)                 # one (n_head, T, T) array per layer
    probs = next_token_probs(model, ids)              # (vocab,): what comes next
    print(report(model, tok, ids, layer=0, head=0))   # all of it, as text

How we get the attention weights without touching tinygpt/model.py: the blocks are run one by
one, as GPT.forward runs them; before each block runs, its own ln_1 and c_attn give q, k and v,
and we recompute the weights from them in NumPy:

    a = softmax(q kᵀ / √hs)  with a[i, j] = 0 for j > i (the causal mask)      (n_head, T, T)

Row i says how much token i takes from the value of each token j ≤ i. The block itself then
runs as usual (x = block(x)), so what we print is what the model computes; the tests check that
the weights, put back through the block's own c_proj and MLP, give the block's output.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tensor

from .model import GPT

SHADES = "·░▒▓█"          # attention weight in [0, .2), [.2, .4), [.4, .6), [.6, .8), [.8, 1]
MASKED = "  "             # a future token: weight 0 by construction
MAX_MAP_TOKENS = 48       # the terminal heat map shows at most the last 48 tokens


class PlotUnavailable(RuntimeError):
    """matplotlib (the optional extra `plot`) is not installed."""


def require_matplotlib():
    """matplotlib's Figure class (no pyplot: no GUI, no global state), or a clear error."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable('saving a PNG needs matplotlib, the optional extra `plot`: '
                              'pip install "tinygpt[plot]"') from None
    return Figure


# ---------------------------------------------------------------------------------------------
# Loading a model and reading a prompt
# ---------------------------------------------------------------------------------------------
def encode(tok, prompt: str) -> list[int]:
    """The prompt's token ids; `<|endoftext|>` may be typed in it (BPE). An empty prompt is
    <|endoftext|> alone for a BPE model, a newline for a character model (see
    tinygpt.generate.prompt_text)."""
    from .generate import encode_prompt
    return encode_prompt(tok, prompt)


def token_labels(tok, ids) -> list[str]:
    """A short printable label per token: spaces as ␣, newlines as ↵, partial UTF-8 as \\xNN;
    an id past the tokenizer (a padded embedding row, which is no token) as <no token id>."""
    labels = []
    for i in ids:
        if int(i) >= tok.vocab_size:
            labels.append(f"<no token {int(i)}>")
            continue
        if hasattr(tok, "decode_bytes"):        # BPE: one token may be half a character
            text = tok.decode_bytes([int(i)]).decode("utf-8", errors="backslashreplace")
        else:
            text = tok.decode([int(i)])
        text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
        labels.append("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))
    return labels


# ---------------------------------------------------------------------------------------------
# Running the model step by step
# ---------------------------------------------------------------------------------------------
def causal_attention_weights(qkv: np.ndarray, n_head: int) -> np.ndarray:
    """softmax(q kᵀ / √hs, causal) for every head, from c_attn's output; in float64.
    qkv (B, T, 3C) -> (B, n_head, T, T)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, _ = np.split(qkv.astype(np.float64), 3, axis=-1)           # 3 × (B, T, C)
    q = q.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)            # (B, nh, T, hs)
    k = k.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)            # (B, nh, T, hs)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)             # (B, nh, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)               # j > i: hidden from i
    scores[..., future] = -np.inf
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))          # exp(-inf) = 0 exactly
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class LayerTrace:
    index: int
    shapes: dict            # name -> shape of what flows through the block
    attention: np.ndarray   # (n_head, T, T)
    rms_in: float           # root-mean-square of the residual stream entering the block
    rms_out: float


@dataclass
class Trace:
    ids: list
    tok_emb: np.ndarray     # (T, C): rows of wte
    pos_emb: np.ndarray     # (T, C): rows of wpe
    logits: np.ndarray      # (T, vocab)
    layers: list = field(default_factory=list)

    @property
    def attention(self) -> list:
        return [layer.attention for layer in self.layers]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def trace(model: GPT, ids) -> Trace:
    """Run `ids` (a prompt of T ≤ block_size tokens) through the model one block at a time and
    keep what a learner wants to see. No graph is built; the model is left in the mode it was in."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    T, cfg = len(ids), model.config
    if not 1 <= T <= cfg.block_size:
        raise ValueError(f"trace: the prompt has {T} tokens; the model reads 1 to "
                         f"{cfg.block_size} (its block_size)")
    idx = np.array([ids])                                            # (1, T)
    nh = cfg.n_head
    was_training = model.training
    model.eval()
    try:
        with tensor.no_grad():
            tok_emb = model.wte(idx)                                 # (1, T, C)
            pos_emb = model.wpe(np.arange(T))                        # (T, C)
            x = model.drop(tok_emb + pos_emb)                        # (1, T, C)
            layers = []
            for i, block in enumerate(model.h):
                qkv = block.attn.c_attn(block.ln_1(x))               # (1, T, 3C): the block's own
                att = causal_attention_weights(qkv.data, nh)[0]      # (nh, T, T)
                x_in = x
                x = block(x)                                         # the model's own code
                C = x.shape[-1]
                shapes = {"x": x_in.shape, "c_attn": qkv.shape,
                          "q, k, v": (1, nh, T, C // nh), "att": (1, nh, T, T),
                          "att @ v": (1, nh, T, C // nh), "attn.c_proj": (1, T, C),
                          "mlp.c_fc": (1, T, block.mlp.c_fc.weight.shape[1]),
                          "mlp.c_proj": (1, T, C), "out": x.shape}
                layers.append(LayerTrace(i, shapes, att, _rms(x_in.data), _rms(x.data)))
            x = model.ln_f(x)                                        # (1, T, C)
            logits = x @ model.wte.weight.T                          # (1, T, vocab)
    finally:
        model.train(was_training)
    return Trace(ids, tok_emb.data[0], pos_emb.data, logits.data[0], layers)


def attention_maps(model: GPT, ids) -> list:
    """The attention weights of every layer: a list of n_layer arrays (n_head, T, T), float64.
    Row i of a head sums to 1 and is 0 right of the diagonal (token i sees tokens 0..i)."""
    return trace(model, ids).attention


def next_token_probs(model: GPT, ids) -> np.ndarray:
    """p(next token | ids): the softmax of the last position's logits, (vocab,) float64."""
    return softmax(trace(model, ids).logits[-1])


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def top_k(probs: np.ndarray, k: int) -> list:
    """[(token id, probability)] of the k likeliest tokens, likeliest first."""
    k = max(1, min(int(k), probs.size))
    best = np.argpartition(-probs, k - 1)[:k]
    best = best[np.argsort(-probs[best], kind="stable")]
    return [(int(i), float(probs[i])) for i in best]


# ---------------------------------------------------------------------------------------------
# Text: the heat map and the whole report
# ---------------------------------------------------------------------------------------------
def _fit(label: str, width: int) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"


def _shape(s) -> str:
    return "(" + ", ".join(str(n) for n in s) + ")"


def heatmap(att: np.ndarray, labels: list, max_tokens: int = MAX_MAP_TOKENS) -> str:
    """One head's (T, T) attention weights as rows of shade blocks: row i is query token i,
    column j key token j; each row ends with the token it attends to most."""
    T = att.shape[0]
    start = max(0, T - max_tokens)             # a long prompt: only its last max_tokens tokens
    width = min(10, max(len(l) for l in labels))
    lines = []
    if start:
        lines.append(f"(showing tokens {start}..{T - 1} of {T}; --png draws all of them)")
    pad = " " * (width + 6)
    if T > 10:                                 # key numbers: a tens line above the units line
        lines.append(pad + "".join(f"{j // 10 % 10:>2}" if j % 10 == 0 else "  "
                                   for j in range(start, T)))
    lines.append(pad + "".join(f"{j % 10:>2}" for j in range(start, T))
                 + "   ← key j (the token looked at)")
    for i in range(start, T):
        cells = "".join(SHADES[min(len(SHADES) - 1, int(att[i, j] * len(SHADES)))] * 2
                        if j <= i else MASKED for j in range(start, T))
        j = int(np.argmax(att[i]))
        lines.append(f"{i:>3}  {_fit(labels[i], width):<{width}} {cells}   → {j} {labels[j]} "
                     f"{att[i, j]:.2f}")
    lines.append(" " * 5 + "↑ query i (the token looking)   " + "  ".join(
        f"{s} ≥ {k / len(SHADES):.1f}" if k else f"{s} < {1 / len(SHADES):.1f}"
        for k, s in enumerate(SHADES)) + "   blank: a future token (masked)")
    return "\n".join(lines)


def _percent(p: float) -> str:
    return f"{p:.2%}" if p >= 1e-4 else f"{100 * p:.1e}%"     # an untrained model: tiny p


def _row(values: np.ndarray, n: int = 4) -> str:
    return "[" + ", ".join(f"{v:+.3f}" for v in values[:n]) + ", …]"


def report(model: GPT, tok, ids, layer: int = 0, head: int = 0, k: int = 10) -> str:
    """Everything `tinygpt inspect` prints, as one string."""
    cfg = model.config
    layer, head = check_layer_head(cfg, layer, head)
    tr = trace(model, ids)
    labels = token_labels(tok, tr.ids)
    T, C, nh = len(tr.ids), cfg.n_embd, cfg.n_head
    w = min(12, max(len(l) for l in labels) + 2)
    out = [f"model: {cfg.n_layer} layers, {nh} heads, {C} dims (head size {C // nh}), "
           f"context {cfg.block_size}, vocabulary {cfg.vocab_size:,}; "
           f"{model.num_parameters():,} parameters",
           "", f"1. tokens: the prompt is {T} token{'s' if T != 1 else ''}"]
    out += [f"   {t:>4}  {_fit(l, w):<{w}} id {i}"
            for t, (l, i) in enumerate(zip(labels[:64], tr.ids[:64]))]
    if T > 64:
        out.append(f"   … ({T - 64} more)")

    out += ["", "2. embeddings: one row of each table per token, added",
            f"   wte.weight {_shape(model.wte.weight.shape)}: row <id>  -> token vector ({C},)",
            f"   wpe.weight {_shape(model.wpe.weight.shape)}: row <position> -> position "
            f"vector ({C},)"]
    for t, l in enumerate(labels[:8]):
        out.append(f"   {t:>4}  {_fit(l, w):<{w}} {f'wte[{tr.ids[t]}]':<11} {_row(tr.tok_emb[t])}  "
                   f"{f'wpe[{t}]':<9} {_row(tr.pos_emb[t])}")
    if T > 8:
        out.append(f"   … ({T - 8} more)")
    out.append(f"   x = wte[ids] + wpe[0:{T}]   {_shape((1, T, C))}")

    first = tr.layers[0].shapes
    flow = "  ".join(f"{name} {_shape(s)}" for name, s in first.items())
    out += ["", f"3. {cfg.n_layer} blocks, each  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))",
            f"   shapes in every block: {flow}",
            "   rms(x) is the size of the residual stream entering and leaving each block"]
    for lt in tr.layers:
        s = lt.shapes
        out.append(f"   h.{lt.index:<3} x {_shape(s['x'])}  att {_shape(s['att'])}  "
                   f"out {_shape(s['out'])}   rms(x) {lt.rms_in:.3f} -> {lt.rms_out:.3f}")

    out += ["", f"4. attention of layer {layer}, head {head}: row i is how much token i takes "
                f"from each token j <= i", heatmap(tr.layers[layer].attention[head], labels)]

    probs = softmax(tr.logits[-1])
    out += ["", f"5. next token: ln_f, then logits = x @ wte.weightᵀ {_shape((1, T, cfg.vocab_size))};"
                f" softmax of the last row; the top {min(k, cfg.vocab_size)}:"]
    for rank, (i, p) in enumerate(top_k(probs, k), 1):
        bar = "█" * int(round(p * 30))
        label = token_labels(tok, [i])[0]
        out.append(f"   {rank:>3}. {_percent(p):>8}  {_fit(label, w):<{w}} id {i:<6} {bar}")
    return "\n".join(out)


def check_layer_head(cfg, layer: int, head: int) -> tuple:
    """layer and head as non-negative indices (-1 is the last), or a ValueError naming the range."""
    for name, value, n in (("layer", layer, cfg.n_layer), ("head", head, cfg.n_head)):
        if not -n <= value < n:
            raise ValueError(f"--{name} {value} is out of range: this model has {n} "
                             f"{name}s, numbered 0..{n - 1} (or -1 for the last)")
    return layer % cfg.n_layer, head % cfg.n_head


# ---------------------------------------------------------------------------------------------
# PNG (optional extra `plot`)
# ---------------------------------------------------------------------------------------------
def figure_path_problem(path) -> str | None:
    """Why matplotlib could not save a figure to `path` (None: it can), checked before any slow
    work: an extension it writes, in a directory that exists and is writable."""
    Figure = require_matplotlib()
    formats = sorted(Figure().canvas.get_supported_filetypes())
    path = Path(path)
    ext = path.suffix[1:].lower()
    if ext not in formats:
        what = f"has an unknown extension .{ext}" if ext else "has no extension"
        return (f"{path} {what}; give a file name ending in .png (or one of "
                f"{', '.join('.' + f for f in formats)})")
    if not path.parent.is_dir():
        return f"{path}: the directory {path.parent} does not exist; create it first"
    if not os.access(path.parent, os.W_OK):
        return f"{path}: the directory {path.parent} is not writable"
    if path.is_dir():
        return f"{path} is a directory; give a file name"
    return None


def save_attention_png(maps: np.ndarray, labels: list, path, title: str = "") -> Path:
    """Every head of one layer, maps (n_head, T, T), as a grid of heat maps in a PNG."""
    Figure = require_matplotlib()
    nh, T, _ = maps.shape
    cols = min(nh, 4)
    rows = math.ceil(nh / cols)
    size = 2.2 + 0.12 * min(T, 64)
    fig = Figure(figsize=(cols * size, rows * size + 0.6), layout="constrained")
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    ticks = T <= 32
    for h in range(nh):
        ax = fig.add_subplot(rows, cols, h + 1)
        image = ax.imshow(np.ma.masked_array(maps[h], future), vmin=0.0, vmax=1.0,
                          cmap="viridis", interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=9)
        if ticks:
            ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(T), labels, fontsize=7)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    fig.colorbar(image, ax=fig.axes, shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
