"""tinygpt/inspect.py on tiny local models: attention maps, next-token probabilities, the trace
through the blocks, and the text it prints (heatmaps, token labels). The `inspect` and `plot`
commands are tested in test_cli.py.

Oracles: the definition of attention (rows are probability distributions, zero in the future),
the model's own forward pass (the logits and every block's output must be reproduced from the
maps we report), and, when the `parity` extra is installed, transformers' GPT2LMHeadModel with
output_attentions=True on the same weights.
"""
import math

import numpy as np
import pytest

import tensor
from tinygpt.inspect import (MASKED, attention_maps, causal_attention_weights, heatmap,
                             next_token_probs, token_labels, top_k, trace)
from tinygpt.tokenizer import CharTokenizer
from tinygpt.loading import load_model

from helpers import INSPECT_GPT2, random_model


@pytest.fixture(scope="module")
def model():
    """Every parameter random (gains and biases too) and large enough that attention is far
    from uniform, so a wrong scale, head order or mask shows."""
    return random_model(INSPECT_GPT2, dtype=np.float64, std=0.5)


@pytest.fixture(scope="module")
def ids():
    return [int(i) for i in np.random.default_rng(7).integers(0, INSPECT_GPT2["vocab_size"], 11)]


# ----- the attention maps ----------------------------------------------------------------------

def test_every_row_is_a_distribution_over_earlier_tokens(model, ids):
    maps = attention_maps(model, ids)
    T = len(ids)
    assert len(maps) == model.config.n_layer
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    for att in maps:
        assert att.shape == (model.config.n_head, T, T)
        np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
        assert np.all(att >= 0)
        assert np.all(att[:, future] == 0.0)               # exactly 0, not just small
        assert np.all(att[:, ~future] > 0)                 # every earlier token gets some weight


def test_next_token_probs_are_the_softmax_of_the_models_last_logits(model, ids):
    probs = next_token_probs(model, ids)
    assert probs.shape == (INSPECT_GPT2["vocab_size"],)
    assert math.isclose(probs.sum(), 1.0, abs_tol=1e-12)
    with tensor.no_grad():
        logits = model(np.array([ids]))[0].data[0, -1]
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(probs, expected / expected.sum(), rtol=1e-10, atol=1e-15)


def test_stepping_through_the_blocks_gives_the_models_logits(model, ids):
    with tensor.no_grad():
        expected = model(np.array([ids]))[0].data[0]
    np.testing.assert_allclose(trace(model, ids).logits, expected, rtol=1e-12, atol=1e-12)


def test_the_maps_reproduce_every_blocks_output(model, ids):
    """Put each layer's reported weights back through the block's own v, c_proj and MLP: the
    result must be the block's output. A wrong scale, mask or head order would change it."""
    maps = attention_maps(model, ids)
    T, C, nh = len(ids), model.config.n_embd, model.config.n_head
    with tensor.no_grad():
        x = model.wte(np.array([ids])) + model.wpe(np.arange(T))              # (1, T, C)
        for block, att in zip(model.h, maps):
            v = block.attn.c_attn(block.ln_1(x)).data[..., 2 * C:]           # (1, T, C)
            v = v.reshape(1, T, nh, C // nh).transpose(0, 2, 1, 3)           # (1, nh, T, hs)
            y = (att[None] @ v).transpose(0, 2, 1, 3).reshape(1, T, C)       # (1, T, C)
            h = x + block.attn.c_proj(tensor.Tensor(y))
            ours = h + block.mlp(block.ln_2(h))
            x = block(x)
            np.testing.assert_allclose(ours.data, x.data, rtol=1e-9, atol=1e-9)


def test_fused_and_op_by_op_models_give_the_same_maps(ids):
    model = random_model(INSPECT_GPT2, dtype=np.float64, std=0.5)
    with tensor.fused(False):
        plain = trace(model, ids)
    with tensor.fused(True):
        fused = trace(model, ids)
    for a, b in zip(plain.attention, fused.attention):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(plain.logits, fused.logits, rtol=1e-7, atol=1e-9)


def test_attention_weights_from_one_qkv_by_definition():
    """One head, T = 2, written out: row 0 sees only itself; row 1 is a 2-way softmax."""
    q = np.array([[1.0, 0.0], [0.5, 2.0]])                  # (T, hs), hs = 2
    k = np.array([[1.0, 1.0], [0.0, 3.0]])
    qkv = np.concatenate([q, k, np.zeros_like(q)], axis=-1)[None]     # (1, T, 3C), nh = 1
    att = causal_attention_weights(qkv, n_head=1)[0, 0]
    s10, s11 = q[1] @ k[0] / math.sqrt(2), q[1] @ k[1] / math.sqrt(2)
    p10 = math.exp(s10) / (math.exp(s10) + math.exp(s11))
    np.testing.assert_allclose(att, [[1.0, 0.0], [p10, 1 - p10]], rtol=1e-14)


def test_prompt_longer_than_the_context_is_refused(model):
    with pytest.raises(ValueError, match="block_size"):
        trace(model, list(range(INSPECT_GPT2["block_size"] + 1)))


def test_agrees_with_transformers_output_attentions(inspect_hf_dir, ids):
    torch = pytest.importorskip("torch", reason="needs the `parity` extra")
    transformers = pytest.importorskip("transformers", reason="needs the `parity` extra")
    hf = transformers.GPT2LMHeadModel.from_pretrained(inspect_hf_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True)
    model, _ = load_model(inspect_hf_dir)[:2]
    for ours, theirs in zip(attention_maps(model, ids), out.attentions):
        np.testing.assert_allclose(ours, theirs[0].numpy(), rtol=0, atol=2e-5)
    logits = out.logits[0, -1].double().numpy()
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(next_token_probs(model, ids), expected / expected.sum(),
                               rtol=0, atol=1e-5)


# ----- text -----------------------------------------------------------------------------------

def test_top_k_is_sorted_and_picks_the_largest():
    probs = np.random.default_rng(0).dirichlet(np.ones(50))
    best = top_k(probs, 5)
    assert [i for i, _ in best] == list(np.argsort(-probs)[:5])
    assert [p for _, p in best] == sorted((p for _, p in best), reverse=True)


def test_heatmap_draws_weights_and_leaves_the_future_blank():
    T = 4
    att = np.zeros((T, T))
    att[:, 0] = 1.0                                         # every token looks at token 0
    lines = heatmap(att, ["a", "b", "c", "d"]).splitlines()
    rows = [line for line in lines if line[:3].strip().isdigit()]
    assert len(rows) == T
    for i, row in enumerate(rows):
        cells = row[row.index(" ", 5) + 1:][: 2 * T]        # the 2-character cells after the label
        assert cells[:2] == "██"                            # weight 1 on key 0
        assert cells[2:2 * (i + 1)] == "··" * i             # weight 0 on the other seen keys
        assert cells[2 * (i + 1):] == MASKED * (T - 1 - i)  # the future: blank
        assert row.rstrip().endswith("→ 0 a 1.00")


def test_token_labels_show_spaces_newlines_and_partial_characters():
    from tinygpt.bpe import GPT2Tokenizer
    tok = GPT2Tokenizer.from_tiktoken()
    assert token_labels(tok, tok.encode(" cat\n")) == ["␣cat", "↵"]
    emoji = tok.encode("🤗")                                 # 4 bytes, split over 3 tokens
    assert len(emoji) > 1
    labels = token_labels(tok, emoji)
    assert "".join(labels) == "".join(f"\\x{b:02x}" for b in "🤗".encode())   # \xf0\x9f\xa4\x97
    assert token_labels(CharTokenizer("ab \n"), [2, 3, 0]) == ["␣", "↵", "a"]


def test_token_labels_of_an_id_past_the_tokenizer():
    """A padded embedding row (no token) can rank in the top-k of a small model: it gets a
    label, not a crash."""
    tok = CharTokenizer.from_text("ab")
    assert token_labels(tok, [0, 5]) == ["a", "<no token 5>"]
