"""How many parameters a GPT has, from its config alone (nothing is allocated).

Every weight of tinygpt/model.py, with C = n_embd, V = vocab_size, P = block_size, L = n_layer:

    wte          V·C        token embedding; also the output projection (weight tying)
    wpe          P·C        position embedding
    per block:
      ln_1       2C         gain and bias
      attn.c_attn  C·3C + 3C    q, k, v for all heads in one matrix
      attn.c_proj  C·C + C      heads back into the residual stream
      ln_2       2C
      mlp.c_fc     C·4C + 4C    expand 4×
      mlp.c_proj   4C·C + C     project back
                 = 12C² + 13C   (12C² + 0 without biases: the 2C of each LayerNorm become C)
    ln_f         2C

    total = (V + P)·C + L·(12C² + 13C) + 2C                 (with biases, as GPT-2)

The number of heads does not appear: splitting C into nh heads of hs = C / nh reshapes the
same matrices. `python -m tinygpt.params` prints the tables in docs/gpt2.md.
"""
from __future__ import annotations

from .model import PRESETS, GPTConfig

GPT2_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def _config(config) -> GPTConfig:
    """A GPTConfig from a GPTConfig, a preset name or a dict of fields."""
    if isinstance(config, GPTConfig):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"count_parameters: unknown preset {config!r}; choose one of "
                             f"{', '.join(PRESETS)} or pass a GPTConfig")
        return GPTConfig(**PRESETS[config])
    if isinstance(config, dict):
        return GPTConfig(**config)
    raise TypeError(f"count_parameters: expected a GPTConfig, a preset name or a dict, "
                    f"got {type(config).__name__}")


def breakdown(config) -> dict[str, int]:
    """Parameter count of each part, by the names of tinygpt/model.py ("h.*" = one block)."""
    c = _config(config)
    C, b = c.n_embd, int(c.bias)                 # b = 1 if every Linear/LayerNorm has a bias
    return {
        "wte": c.vocab_size * C,
        "wpe": c.block_size * C,
        "h.*.ln_1": C + b * C,
        "h.*.attn.c_attn": C * 3 * C + b * 3 * C,
        "h.*.attn.c_proj": C * C + b * C,
        "h.*.ln_2": C + b * C,
        "h.*.mlp.c_fc": C * 4 * C + b * 4 * C,
        "h.*.mlp.c_proj": 4 * C * C + b * C,
        "ln_f": C + b * C,
    }


def count_parameters(config, non_embedding: bool = False) -> int:
    """Total parameters of GPT(config): the formula above, so gpt2-xl costs no memory.

    non_embedding=True leaves out wpe (as GPT.num_parameters does, and as the GPT-2 and scaling-law
    papers count); wte stays in, because it is also the output projection."""
    c = _config(config)
    parts = breakdown(c)
    per_block = sum(n for name, n in parts.items() if name.startswith("h.*."))
    total = parts["wte"] + parts["wpe"] + c.n_layer * per_block + parts["ln_f"]
    return total - parts["wpe"] if non_embedding else total


# -- the tables of docs/gpt2.md (tests/test_params.py checks the doc holds exactly these) ------
def sizes_table(names=GPT2_SIZES) -> str:
    """A markdown table: each GPT-2 size, its shape and its parameter count."""
    lines = ["| model | n_layer | n_head | n_embd | head size | parameters |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        c = _config(name)
        lines.append(f"| {name} | {c.n_layer} | {c.n_head} | {c.n_embd} | "
                     f"{c.n_embd // c.n_head} | {count_parameters(c):,} |")
    return "\n".join(lines)


def breakdown_table(name: str = "gpt2") -> str:
    """A markdown table: where the parameters of one size are."""
    c = _config(name)
    parts = breakdown(c)
    lines = ["| part | count | × | parameters |", "| --- | ---: | ---: | ---: |"]
    for part, n in parts.items():
        times = c.n_layer if part.startswith("h.*.") else 1
        lines.append(f"| `{part}` | {n:,} | {times} | {n * times:,} |")
    lines.append(f"| **total** | | | **{count_parameters(c):,}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(sizes_table())
    print()
    print(breakdown_table("gpt2"))
