"""tinygpt.params.count_parameters: the formula against two independent oracles — the published
sizes of the released GPT-2 checkpoints, and the parameters a GPT actually allocates."""
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from tinygpt.model import GPT, GPTConfig, PRESETS
from tinygpt.params import breakdown, breakdown_table, count_parameters, sizes_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "gpt2.md"

# The widely published totals of OpenAI's released checkpoints (openai-community/gpt2*, tied
# embeddings, no lm_head of their own): facts from outside this repository.
RELEASED = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
            "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("name", RELEASED)
def test_released_gpt2_sizes(name):
    assert count_parameters(name) == RELEASED[name]
    assert count_parameters(GPTConfig(**PRESETS[name])) == RELEASED[name]


@given(n_layer=st.integers(1, 3), n_head=st.integers(1, 4), head_size=st.integers(1, 8),
       vocab_size=st.integers(1, 80), block_size=st.integers(1, 40), bias=st.booleans())
@settings(max_examples=25)
def test_formula_matches_an_allocated_model(n_layer, n_head, head_size, vocab_size, block_size,
                                            bias):
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_head * head_size, bias=bias)
    model = GPT(config, seed=0)
    assert count_parameters(config) == model.num_parameters()
    assert count_parameters(config, non_embedding=True) == model.num_parameters(non_embedding=True)


@pytest.mark.parametrize("preset", ["baby", "shakespeare-char"])
def test_small_presets_match_an_allocated_model(preset):
    config = GPTConfig(**{"vocab_size": 65, **PRESETS[preset]})
    assert count_parameters(config) == GPT(config, seed=0).num_parameters()


def test_breakdown_names_are_the_models_parameter_names():
    config = GPTConfig(vocab_size=11, block_size=5, n_layer=2, n_head=2, n_embd=8)
    model = GPT(config, seed=0)
    actual = {}
    for name, p in model.named_parameters():          # "h.1.attn.c_attn.weight" -> "h.*.attn.c_attn"
        parts = name.split(".")[:-1]
        key = ".".join(["h", "*"] + parts[2:]) if parts[0] == "h" else ".".join(parts)
        actual[key] = actual.get(key, 0) + p.size
    per_block = {k: v * (config.n_layer if k.startswith("h.*.") else 1)
                 for k, v in breakdown(config).items()}
    assert per_block == actual


def test_docs_hold_the_computed_tables():
    """docs/gpt2.md shows exactly what the code computes (regenerate: python -m tinygpt.params)."""
    text = DOC.read_text(encoding="utf-8")
    assert sizes_table() in text
    assert breakdown_table("gpt2") in text


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="gpt3"):
        count_parameters("gpt3")


@pytest.mark.parametrize("fields", [
    dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),    # gpt2
    dict(n_layer=3, n_head=4, n_embd=48, block_size=77, vocab_size=1003),
])
def test_formula_matches_transformers_gpt2(fields):
    """A third oracle: Hugging Face's GPT2LMHeadModel of the same shape, built on the meta
    device (shapes only, no memory); its parameters() lists the tied wte/lm_head once."""
    torch = pytest.importorskip("torch", reason="needs the `parity` extra")
    transformers = pytest.importorskip("transformers", reason="needs the `parity` extra")
    hf = transformers.GPT2Config(n_layer=fields["n_layer"], n_head=fields["n_head"],
                                 n_embd=fields["n_embd"], n_positions=fields["block_size"],
                                 vocab_size=fields["vocab_size"])
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(hf)
    assert count_parameters(GPTConfig(**fields)) == sum(p.numel() for p in model.parameters())
