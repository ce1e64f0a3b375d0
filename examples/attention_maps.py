"""Attention maps: which earlier tokens each token looks at, in every head of GPT-2.

    python examples/attention_maps.py --prompt "The cat sat on the mat. The cat sat on the"
    python examples/attention_maps.py --model out --layer 1 --head 0 --png att.png

Each attention head computes, for token i, weights a[i, j] over the tokens j ≤ i (a softmax, so
they sum to 1; the causal mask makes a[i, j] = 0 for j > i). This script gets every head's
weights with tinygpt.inspect.attention_maps, draws one head as a heat map in the terminal
(and, with --png, every head of the layer as an image), then ranks all heads by simple
patterns you can find in trained GPT-2s:

    previous token   a[i, i-1]  large: the head passes each token's information one step on
    first token      a[i, 0]    large: a "resting" head, parked on the first token when it has
                                 nothing to do
    self             a[i, i]    large: the token looks at itself
    induction        a[i, p+1]  large, where token p is an earlier copy of token i: the head
                                 looks up what came after it last time, to predict it again

A repeated prompt (as the default) shows them best: in gpt2, previous-token heads sit in the
early layers, and the induction heads that use them in the middle layers.
"""
import argparse
import sys

import numpy as np

from tinygpt.inspect import (attention_maps, check_layer_head, encode, figure_path_problem,
                             heatmap, save_attention_png, token_labels)
from tinygpt.loading import LoadError, load_model


def induction_targets(ids) -> list:
    """(i, p + 1) for each token i seen before, at p (the latest such p): an induction head
    at i looks at p + 1, the token that followed the earlier occurrence."""
    last, pairs = {}, []
    for i, t in enumerate(ids):
        if t in last and last[t] + 1 < i:
            pairs.append((i, last[t] + 1))
        last[t] = i
    return pairs


def head_patterns(att: np.ndarray, ids) -> dict:
    """Average weight of one head's (T, T) map on each pattern, over queries i ≥ 1."""
    T = att.shape[0]
    i = np.arange(1, T)
    scores = {"previous token": float(att[i, i - 1].mean()),
              "first token": float(att[i, 0].mean()),
              "self": float(att[i, i].mean())}
    pairs = induction_targets(ids)
    if pairs:
        scores["induction"] = float(np.mean([att[q, k] for q, k in pairs]))
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2",
                        help="a GPT-2 name, a Hugging Face directory or a `tinygpt train` "
                             "directory (default: gpt2)")
    parser.add_argument("--prompt", default="The cat sat on the mat. The cat sat on the")
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--head", type=int, default=0)
    parser.add_argument("--png", help="save every head of --layer to this PNG (needs matplotlib)")
    parser.add_argument("--fast", action="store_true", help="fewer heads listed (for tests)")
    args = parser.parse_args(argv)

    try:
        problem = figure_path_problem(args.png) if args.png else None   # before the slow load
        if problem:
            raise ValueError(f"--png {problem}")
        model, tok, _ = load_model(args.model)
        layer, head = check_layer_head(model.config, args.layer, args.head)
        ids = encode(tok, args.prompt)[-model.config.block_size:]
    except (LoadError, ValueError, KeyError, RuntimeError) as e:   # RuntimeError: no matplotlib
        print(f"error: {e}", file=sys.stderr)
        return 1
    labels = token_labels(tok, ids)
    maps = attention_maps(model, ids)                 # n_layer arrays of (n_head, T, T)
    print(f"{len(ids)} tokens: {' '.join(labels)}")
    print(f"{len(maps)} layers × {maps[0].shape[0]} heads, each a {maps[0].shape[1:]} map\n")

    print(f"layer {layer}, head {head} (row i: how much token i takes from token j):")
    print(heatmap(maps[layer][head], labels))

    # every head, scored on the three patterns
    rows = [(name, score, l, h) for l, m in enumerate(maps) for h in range(m.shape[0])
            for name, score in head_patterns(m[h], ids).items()]
    top = 3 if args.fast else 5
    uniform = float(np.mean(1.0 / np.arange(2, len(ids) + 1)))   # a head that spreads evenly
    print(f"\nthe heads that most follow each pattern (a head spreading its weight evenly "
          f"would score {uniform:.2f}):")
    for pattern in dict.fromkeys(r[0] for r in rows):
        best = sorted((r for r in rows if r[0] == pattern), key=lambda r: -r[1])[:top]
        print(f"  {pattern:<16}" + "   ".join(f"layer {l} head {h}: {s:.2f}" for _, s, l, h in best))

    if args.png:
        try:
            path = save_attention_png(maps[layer], labels, args.png,
                                      title=f"{args.model}: attention of layer {layer}")
        except RuntimeError as e:                      # PlotUnavailable: how to install it
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"\nsaved every head of layer {layer} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
