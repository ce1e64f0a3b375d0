"""tinygpt/generate.py: the KV cache against full forward passes, the sliding window, sampling,
the method GPT.generate against the free function it is built on, several sequences decoded
together (generate_batch), and the text a stream of tokens prints (TextStream, encode_prompt).

Oracles: a full forward pass over the whole context (no cache) for the logits; a plain loop of
full forwards + argmax for greedy decoding; NumPy softmax for the sampling distributions; the
streaming function tinygpt.generate.generate, one row at a time, for GPT.generate and for
generate_batch (whose models are float64, so the batched products' different rounding cannot
flip a token); and decoding all bytes at once for TextStream.
"""
import numpy as np
import pytest

import tensor
from tinygpt.bpe import GPT2Tokenizer
from tinygpt.model import KVCache
from tinygpt.generate import TextStream, generate, generate_batch, sample_next
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer

from helpers import random_model

CFG = dict(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32)


def full_logits(model, ids):
    with tensor.no_grad():
        return model(np.array([ids]))[0].data[0]                   # (T, V)


def greedy_oracle(model, ids, n, stop_token=None):
    """Greedy decoding with a full forward over the last block_size tokens at every step."""
    ids, out = list(ids), []
    for _ in range(n):
        nxt = int(np.argmax(full_logits(model, ids[-model.config.block_size:])[-1]))
        ids.append(nxt)
        out.append(nxt)
        if nxt == stop_token:
            break
    return out


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, offset=100)


@pytest.fixture(scope="module")
def ids():
    return list(np.random.default_rng(1).integers(0, CFG["vocab_size"], CFG["block_size"]))


@pytest.mark.parametrize("prefix", [1, 5])
def test_kv_cache_logits_equal_full_forward_at_every_step(model, ids, prefix):
    full = full_logits(model, ids)                                 # (T, V), the oracle
    cache = KVCache(model.config.n_layer)
    with tensor.no_grad():
        first = model(np.array([ids[:prefix]]), cache=cache)[0].data[0]   # the prompt at once
        np.testing.assert_allclose(first, full[:prefix], rtol=0, atol=1e-5)
        for t in range(prefix, len(ids)):                          # then one token per step
            step = model(np.array([[ids[t]]]), cache=cache)[0].data[0, -1]
            assert cache.length == t + 1
            assert np.max(np.abs(step - full[t])) <= 1e-5, f"step {t}"


def test_kv_cache_returns_every_key_and_value_so_far_across_buffer_growth():
    """The oracle is np.concatenate of everything appended; 40 single tokens after a prompt of 3
    make the buffers grow 16 -> 32 -> 64, and earlier views must stay intact."""
    rng = np.random.default_rng(0)
    cache = KVCache(n_layer=2)
    seen = [[], []]
    views = []
    for step, t in enumerate([3] + [1] * 40):
        for layer in range(2):
            k, v = (rng.standard_normal((2, 3, t, 4)).astype(np.float32) for _ in range(2))
            seen[layer].append((k, v))
            got_k, got_v = cache.extend(tensor.Tensor(k), tensor.Tensor(v))
            np.testing.assert_array_equal(got_k.data, np.concatenate([a for a, _ in seen[layer]],
                                                                     axis=2))
            np.testing.assert_array_equal(got_v.data, np.concatenate([b for _, b in seen[layer]],
                                                                     axis=2))
            views.append((got_k.data, np.array(got_k.data)))
        assert cache.length == 3 + step
    for view, copy in views:          # later appends and regrowth left earlier results alone
        np.testing.assert_array_equal(view, copy)


def test_kv_cache_refuses_keys_of_another_batch_or_dtype_and_hands_out_read_only_views():
    cache = KVCache(n_layer=1)
    k = tensor.Tensor(np.zeros((2, 3, 4, 5), np.float32))
    cache.extend(k, k)
    keys, _ = cache.extend(k, k)
    assert not keys.data.flags.writeable
    for bad in (np.zeros((1, 3, 1, 5), np.float32), np.zeros((2, 3, 1, 5), np.float64)):
        with pytest.raises(ValueError, match=r"KVCache.extend: layer 0 holds keys of shape "
                                             r"\(2, 3, 8, 5\) and dtype float32"):
            cache.extend(tensor.Tensor(bad), tensor.Tensor(bad))


def test_last_only_is_the_last_row(model, ids):
    with tensor.no_grad():
        last = model(np.array([ids]), last_only=True)[0].data[0]
    np.testing.assert_allclose(last[-1], full_logits(model, ids)[-1], rtol=0, atol=1e-5)


def test_cache_overflow_is_refused_with_a_clear_error(model, ids):
    cache = KVCache(model.config.n_layer)
    with tensor.no_grad():
        model(np.array([ids]), cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            model(np.array([[ids[0]]]), cache=cache)


def test_greedy_generation_equals_full_forward_loop(model, ids):
    prompt = ids[:5]
    got = list(generate(model, prompt, 12, temperature=0))
    assert got == greedy_oracle(model, prompt, 12)
    assert got == list(generate(model, prompt, 12, temperature=0, use_cache=False))


def test_sliding_window_past_block_size(model, ids):
    """Context past block_size: no error, and every step equals a fresh forward on the last window."""
    prompt = ids[:20]                                              # block 24: passes it at step 5
    n = 30
    got = list(generate(model, prompt, n, temperature=0))
    assert len(got) == n
    assert got == greedy_oracle(model, prompt, n)


def test_prompt_longer_than_block_size(model):
    prompt = list(np.random.default_rng(2).integers(0, CFG["vocab_size"], 3 * CFG["block_size"]))
    assert list(generate(model, prompt, 6, temperature=0)) == greedy_oracle(model, prompt, 6)


def test_sampling_with_a_seed_is_repeatable(model, ids):
    a = list(generate(model, ids[:4], 25, temperature=1.0, seed=7))
    b = list(generate(model, ids[:4], 25, temperature=1.0, seed=7))
    c = list(generate(model, ids[:4], 25, temperature=1.0, seed=8))
    assert a == b
    assert a != c         # 25 draws from ~97 tokens: equal by chance with negligible probability


def test_top_k_1_and_tiny_top_p_are_greedy(model, ids):
    greedy = greedy_oracle(model, ids[:4], 15)
    assert list(generate(model, ids[:4], 15, temperature=1.5, top_k=1, seed=3)) == greedy
    assert list(generate(model, ids[:4], 15, temperature=1.5, top_p=1e-9, seed=3)) == greedy


def test_stop_token_ends_generation(model, ids):
    free = greedy_oracle(model, ids[:4], 20)
    stop = free[3]
    first = free.index(stop)
    got = list(generate(model, ids[:4], 20, temperature=0, stop_token=stop))
    assert got == free[:first + 1]                                 # up to and including the stop


def test_generate_restores_training_mode(ids):
    model = random_model(CFG, offset=100).train()
    list(generate(model, ids[:3], 2, temperature=0))
    assert model.training


def test_empty_prompt_is_refused(model):
    with pytest.raises(ValueError, match="empty"):
        list(generate(model, [], 3))


# ----- GPT.generate: the whole sequences, as nanoGPT's method returns them ---------------------

def test_method_returns_prompt_and_new_ids_in_the_shape_it_was_given(model, ids):
    prompt = np.array(ids[:5])
    one = model.generate(prompt, 7, temperature=0)                 # (T,) in, (T + new,) out
    assert one.shape == (12,) and np.issubdtype(one.dtype, np.integer)
    np.testing.assert_array_equal(one[:5], prompt)
    two = model.generate(np.stack([prompt, prompt[::-1]]), 7, temperature=0)   # (B, T)
    assert two.shape == (2, 12)
    np.testing.assert_array_equal(two[:, :5], [prompt, prompt[::-1]])
    np.testing.assert_array_equal(two[0], one)
    assert model.generate([[3, 1, 4]], 0).tolist() == [[3, 1, 4]]  # nothing new: the prompt
    assert model.generate(tensor.Tensor(prompt), 2, temperature=0).tolist() == one[:7].tolist()


def test_method_greedy_equals_the_full_forward_loop_for_every_row(model, ids):
    rows = np.array([ids[:6], ids[6:12], ids[12:18]])              # (3, 6)
    got = model.generate(rows, 10, temperature=0)
    for row, out in zip(rows, got):
        assert out[6:].tolist() == greedy_oracle(model, list(row), 10)


def test_method_equals_the_free_function_with_the_same_seed(model, ids):
    kw = dict(temperature=1.3, top_k=20, top_p=0.9)
    got = model.generate(np.array(ids[:4]), 15, seed=5, **kw)
    assert got[4:].tolist() == list(generate(model, ids[:4], 15, seed=5, **kw))
    assert model.generate(np.array(ids[:4]), 15, seed=5, **kw).tolist() == got.tolist()


def test_method_rows_draw_from_one_random_stream(model, ids):
    """Row b continues the random stream where row b - 1 left it: row 0 is what the free function
    gives for the seed, and two equal prompts get two different samples, not one sample twice."""
    rows = np.array([ids[:4], ids[:4]])
    got = model.generate(rows, 25, temperature=1.0, seed=11)
    assert got[0, 4:].tolist() == list(generate(model, ids[:4], 25, seed=11))
    rng = np.random.default_rng(11)
    want = [list(generate(model, row, 25, seed=rng)) for row in rows]
    assert got[:, 4:].tolist() == want
    assert want[0] != want[1]           # 25 draws from ~97 tokens: equal with negligible odds


def test_method_stop_token_pads_the_rows_that_ended_early(model, ids):
    """A row that samples stop_token ends there and is padded with it; the array is as long as
    the row that went on longest."""
    rows = [ids[:4], ids[4:8]]
    free = [greedy_oracle(model, r, 20) for r in rows]
    # a stop id that ends row 0 before row 1 (which may never meet it)
    stop = next(t for t in free[0]
                if free[0].index(t) < (free[1].index(t) if t in free[1] else 20))
    ends = [f[:f.index(stop) + 1] if stop in f else f for f in free]
    n = max(len(e) for e in ends)
    assert len(ends[0]) < n                                         # else this proves nothing
    got = model.generate(np.array(rows), 20, temperature=0, stop_token=stop)
    assert got.shape == (2, 4 + n)
    for row, end, out in zip(rows, ends, got):
        assert out.tolist() == row + end + [stop] * (n - len(end))
    one = model.generate(np.array(rows[0]), 20, temperature=0, stop_token=stop)
    assert one.tolist() == rows[0] + ends[0]                       # one row: never padded


def test_method_refuses_ids_of_the_wrong_shape_or_type(model):
    with pytest.raises(ValueError, match=r"GPT.generate: idx must be .* got shape \(1, 2, 3\)"):
        model.generate(np.zeros((1, 2, 3), np.int64), 2)
    with pytest.raises(ValueError, match="GPT.generate: idx must hold integer token ids"):
        model.generate(np.array([0.5, 1.0]), 2)


# ----- sample_next against NumPy softmax --------------------------------------------------------

def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


N_DRAWS = 3000                 # 5-sigma bounds below: a false failure has odds ~1e-6


def frequencies(logits, n=N_DRAWS, **kwargs):
    rng = np.random.default_rng(0)
    draws = [sample_next(logits, rng, **kwargs) for _ in range(n)]
    return np.bincount(draws, minlength=logits.size) / n


LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_samples_softmax_of_scaled_logits(temperature):
    p = softmax(LOGITS / temperature)
    f = frequencies(LOGITS, temperature=temperature)
    sigma = np.sqrt(p * (1 - p) / N_DRAWS)
    assert np.all(np.abs(f - p) <= 5 * sigma + 1e-12)


def test_top_k_renormalizes_over_the_k_largest():
    p = softmax(LOGITS[:3])                                        # the 3 largest logits
    f = frequencies(LOGITS, top_k=3)
    assert np.all(f[3:] == 0)
    assert np.all(np.abs(f[:3] - p) <= 5 * np.sqrt(p * (1 - p) / N_DRAWS))


@pytest.mark.parametrize("top_p", [0.5, 0.8, 0.95])
def test_top_p_keeps_the_smallest_head_reaching_p(top_p):
    p = softmax(LOGITS)                                            # already sorted, descending
    k = int(np.searchsorted(np.cumsum(p), top_p) + 1)              # smallest k with sum >= top_p
    kept = p[:k] / p[:k].sum()
    f = frequencies(LOGITS, top_p=top_p)
    assert np.all(f[k:] == 0)
    assert np.all(np.abs(f[:k] - kept) <= 5 * np.sqrt(kept * (1 - kept) / N_DRAWS) + 1e-12)


def test_vocab_size_keeps_padded_embedding_rows_out_of_the_samples(model, ids):
    """A model whose embedding table is padded past its tokenizer: ids at or past vocab_size
    are no tokens and must never come out (oracle: greedy over the first vocab_size logits)."""
    limit = 50
    assert any(t >= limit for t in greedy_oracle(model, ids, 12))       # else this proves nothing
    want, ctx = [], list(ids)
    for _ in range(12):
        nxt = int(np.argmax(full_logits(model, ctx[-model.config.block_size:])[-1][:limit]))
        want.append(nxt)
        ctx.append(nxt)
    assert list(generate(model, ids, 12, temperature=0, vocab_size=limit)) == want
    sampled = list(generate(model, ids, 200, temperature=2.0, seed=0, vocab_size=limit))
    assert max(sampled) < limit


# ----- generate_batch: several sequences decoded together (`--num-samples N`) ---------------------

BATCH_CFG = dict(vocab_size=31, block_size=12, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def batch_model():
    return GPT(GPTConfig(**BATCH_CFG), seed=3, dtype=np.float64)


def rows_of(steps, B):
    """Per-step lists -> B lists of tokens (None after a row ended dropped)."""
    return [[s[i] for s in steps if s[i] is not None] for i in range(B)]


def test_greedy_rows_equal_one_at_a_time(batch_model):
    prompts = np.random.default_rng(0).integers(0, 31, (4, 5)).tolist()
    got = rows_of(list(generate_batch(batch_model, prompts, 9, temperature=0)), 4)
    for p, row in zip(prompts, got):
        assert row == list(generate(batch_model, p, 9, temperature=0))


@pytest.mark.parametrize("top_k,top_p", [(None, None), (5, None), (None, 0.8)])
def test_sampled_rows_follow_their_own_seeds(batch_model, top_k, top_p):
    prompt = [1, 2, 3]
    seeds = [7, 8, 9, 10, 11]
    got = rows_of(list(generate_batch(batch_model, [prompt] * 5, 10, temperature=1.3, top_k=top_k,
                                      top_p=top_p, seeds=seeds)), 5)
    want = [list(generate(batch_model, prompt, 10, temperature=1.3, top_k=top_k, top_p=top_p,
                          seed=s)) for s in seeds]
    assert got == want
    assert len({tuple(r) for r in got}) > 1             # the seeds gave different samples


def test_past_the_context_the_window_slides_as_for_one_sequence(batch_model):
    """30 new tokens with a 12-token context: every row restarts from its last 12 tokens."""
    prompts = [[4, 5, 6], [7, 8, 9]]
    got = rows_of(list(generate_batch(batch_model, prompts, 30, temperature=0.9, seeds=[1, 2])), 2)
    for p, s, row in zip(prompts, [1, 2], got):
        assert row == list(generate(batch_model, p, 30, temperature=0.9, seed=s))


def test_a_row_that_samples_the_stop_token_ends_and_the_others_go_on(batch_model):
    prompts = [[1, 2]] * 6
    seeds = list(range(6))
    stop = 0
    want = [list(generate(batch_model, [1, 2], 25, temperature=2.0, seed=s, stop_token=stop))
            for s in seeds]
    assert min(map(len, want)) < 25 and max(map(len, want)) == 25   # some rows stop early
    steps = list(generate_batch(batch_model, prompts, 25, temperature=2.0, seeds=seeds,
                                stop_token=stop))
    assert rows_of(steps, 6) == want
    assert len(steps) == 25
    for i, row in enumerate(want):                       # None only after the stop token
        assert all(s[i] is None for s in steps[len(row):])


def test_the_batch_stops_when_every_row_has_stopped(batch_model):
    seeds = [0, 1]
    want = [list(generate(batch_model, [1, 2], 200, temperature=3.0, seed=s, stop_token=5))
            for s in seeds]
    assert max(map(len, want)) < 200, "pick another stop token for this test"
    steps = list(generate_batch(batch_model, [[1, 2]] * 2, 200, temperature=3.0, seeds=seeds,
                                stop_token=5))
    assert len(steps) == max(map(len, want))


def test_prompts_of_different_lengths_are_refused(batch_model):
    with pytest.raises(ValueError, match=r"same length.*generate\(\)"):
        list(generate_batch(batch_model, [[1, 2], [1, 2, 3]], 3))
    with pytest.raises(ValueError, match="one each"):
        list(generate_batch(batch_model, [[1], [2]], 3, seeds=[1]))


def test_batched_int8_rows_equal_one_at_a_time():
    """The quantized kernels' few-rows path gives each row what the one-row path gives."""
    from tinygpt.quantize import quantize_gpt
    m = quantize_gpt(GPT(GPTConfig(**BATCH_CFG), seed=4, dtype=np.float64), "int8")
    prompts = np.random.default_rng(1).integers(0, 31, (5, 4)).tolist()
    got = rows_of(list(generate_batch(m, prompts, 8, temperature=0)), 5)
    assert got == [list(generate(m, p, 8, temperature=0)) for p in prompts]


# ----- the text of a stream of tokens -------------------------------------------------------------

def test_text_stream_never_splits_a_character():
    tok = GPT2Tokenizer.from_tiktoken()
    text = "héllo 世界 🎉 naïve — ok"
    ids = tok.encode(text)
    # the test needs tokens that end inside a character (else it proves nothing)
    assert any(_cuts_a_character(tok.decode_bytes([i])) for i in ids)
    stream = TextStream(tok)
    pieces = [stream.feed(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def _cuts_a_character(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_text_stream_flushes_an_unfinished_character():
    tok = GPT2Tokenizer.from_tiktoken()
    lead = next(i for i in range(256) if tok.decode_bytes([i]) == b"\xc3")   # é's first byte
    stream = TextStream(tok)
    assert stream.feed(lead) == ""                              # held back: half a character
    assert stream.flush() == "\ufffd"                           # the end: shown as unfinished


def test_an_empty_prompt_is_a_new_document_for_bpe_and_a_newline_for_characters():
    from tinygpt.generate import encode_prompt, prompt_text
    bpe = GPT2Tokenizer.from_tiktoken()
    assert encode_prompt(bpe, "") == [bpe.eot_token]
    assert prompt_text(bpe, "") == ""
    chars = CharTokenizer.from_text("ab\ncd")
    assert prompt_text(chars, "") == "\n"
    assert encode_prompt(chars, "") == chars.encode("\n")
    assert encode_prompt(chars, "ba") == chars.encode("ba")
    no_newline = CharTokenizer.from_text("abcd")
    with pytest.raises(ValueError, match="prompt"):
        encode_prompt(no_newline, "")
