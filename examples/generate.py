"""Generate text with GPT-2 (or any compatible model) through the Python API.

    python examples/generate.py --prompt "The meaning of life is"          # gpt2, from the Hub
    python examples/generate.py --model path/to/hf-dir --prompt "Hello"    # a local directory
    python examples/generate.py --model out --prompt "ROMEO:"              # a `tinygpt train` run

What happens, in four lines of API:

    model, tok, _ = tinygpt.load("gpt2")          # weights + tokenizer (tinygpt/loading.py)
    ids = encode_prompt(tok, prompt)              # text -> token ids
    for t in generate(model, ids, 40, ...):       # one forward pass per new token, KV cache
        print(stream.feed(t), end="")             # TextStream: ids -> whole characters

Without streaming, nanoGPT's way: `out = model.generate(ids, 40, temperature=0.8, top_k=40)`
returns the prompt and the new ids in one array, and `tok.decode(out.tolist())` the text.

Each step the model gives 50,257 logits for the next token; `sample_next` turns them into
probabilities (softmax of logits / temperature), keeps the top-k, and draws one. The example
prints the first step's top candidates first, so you can see the choice it is sampling from.
The gpt2 weights (500 MB) are downloaded once into the Hugging Face cache (extra `hub`).
"""
import argparse
import sys

import numpy as np

import tensor
import tinygpt
from tinygpt.generate import TextStream, encode_prompt, generate
from tinygpt.inspect import token_labels
from tinygpt.loading import LoadError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2",
                        help="gpt2 / gpt2-medium / gpt2-large / gpt2-xl, a Hugging Face GPT-2 "
                             "directory, or a `tinygpt train` --out directory (default: gpt2)")
    parser.add_argument("--prompt", default="The meaning of life is")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="a few tokens only (for tests)")
    args = parser.parse_args(argv)

    # tinygpt.load reads a name or a Hugging Face directory with tinygpt/pretrained.py, and a
    # `tinygpt train` run (its best checkpoint) with tinygpt/checkpoint.py
    try:
        model, tok, description = tinygpt.load(args.model)
        ids = encode_prompt(tok, args.prompt)
    except (LoadError, ValueError, KeyError) as e:   # the message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 1
    cfg = model.config
    print(f"{description}: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, "
          f"{model.num_parameters():,} parameters")
    print(f"prompt: {len(ids)} tokens {ids}")

    # the first choice, made visible: the probabilities behind the first sampled token
    with tensor.no_grad():
        logits, _ = model(np.array([ids]), last_only=True)          # (1, 1, vocab)
    z = logits.data[0, -1].astype(np.float64) / max(args.temperature, 1e-6)
    p = np.exp(z - z.max())
    p /= p.sum()
    best = np.argsort(-p)[:5]
    print("next-token candidates at temperature {}: ".format(args.temperature)
          + ", ".join(f"{token_labels(tok, [i])[0]!r} {p[i]:.1%}" for i in best))

    n = 8 if args.fast else args.max_new_tokens
    print("\n" + args.prompt, end="", flush=True)
    new, stream = [], TextStream(tok)   # holds back half a UTF-8 character until it is whole
    for t in generate(model, ids, n, temperature=args.temperature, top_k=args.top_k,
                      seed=args.seed, vocab_size=tok.vocab_size):
        new.append(t)
        print(stream.feed(t), end="", flush=True)                   # stream as it comes
    print(stream.flush() + f"\n\n[{len(new)} new tokens]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
