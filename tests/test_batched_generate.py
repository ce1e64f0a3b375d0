"""Several sequences decoded together (tinygpt.generate.generate_batch, `--num-samples N`).

The oracle is the one-sequence generator: row i of a batch must produce exactly what
generate() produces for prompt i with seed i. The models are float64, so the batched products'
different rounding cannot flip a token."""
import numpy as np
import pytest
from click.testing import CliRunner

from tinygpt.generate import generate, generate_batch
from tinygpt.model import GPT, GPTConfig

CFG = dict(vocab_size=31, block_size=12, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def model():
    return GPT(GPTConfig(**CFG), seed=3, dtype=np.float64)


def rows_of(steps, B):
    """Per-step lists -> B lists of tokens (None after a row ended dropped)."""
    return [[s[i] for s in steps if s[i] is not None] for i in range(B)]


def test_greedy_rows_equal_one_at_a_time(model):
    prompts = np.random.default_rng(0).integers(0, 31, (4, 5)).tolist()
    got = rows_of(list(generate_batch(model, prompts, 9, temperature=0)), 4)
    for p, row in zip(prompts, got):
        assert row == list(generate(model, p, 9, temperature=0))


@pytest.mark.parametrize("top_k,top_p", [(None, None), (5, None), (None, 0.8)])
def test_sampled_rows_follow_their_own_seeds(model, top_k, top_p):
    prompt = [1, 2, 3]
    seeds = [7, 8, 9, 10, 11]
    got = rows_of(list(generate_batch(model, [prompt] * 5, 10, temperature=1.3, top_k=top_k,
                                      top_p=top_p, seeds=seeds)), 5)
    want = [list(generate(model, prompt, 10, temperature=1.3, top_k=top_k, top_p=top_p,
                          seed=s)) for s in seeds]
    assert got == want
    assert len({tuple(r) for r in got}) > 1             # the seeds gave different samples


def test_past_the_context_the_window_slides_as_for_one_sequence(model):
    """30 new tokens with a 12-token context: every row restarts from its last 12 tokens."""
    prompts = [[4, 5, 6], [7, 8, 9]]
    got = rows_of(list(generate_batch(model, prompts, 30, temperature=0.9, seeds=[1, 2])), 2)
    for p, s, row in zip(prompts, [1, 2], got):
        assert row == list(generate(model, p, 30, temperature=0.9, seed=s))


def test_a_row_that_samples_the_stop_token_ends_and_the_others_go_on(model):
    prompts = [[1, 2]] * 6
    seeds = list(range(6))
    stop = 0
    want = [list(generate(model, [1, 2], 25, temperature=2.0, seed=s, stop_token=stop))
            for s in seeds]
    assert min(map(len, want)) < 25 and max(map(len, want)) == 25   # some rows stop early
    steps = list(generate_batch(model, prompts, 25, temperature=2.0, seeds=seeds,
                                stop_token=stop))
    assert rows_of(steps, 6) == want
    assert len(steps) == 25
    for i, row in enumerate(want):                       # None only after the stop token
        assert all(s[i] is None for s in steps[len(row):])


def test_the_batch_stops_when_every_row_has_stopped(model):
    seeds = [0, 1]
    want = [list(generate(model, [1, 2], 200, temperature=3.0, seed=s, stop_token=5))
            for s in seeds]
    assert max(map(len, want)) < 200, "pick another stop token for this test"
    steps = list(generate_batch(model, [[1, 2]] * 2, 200, temperature=3.0, seeds=seeds,
                                stop_token=5))
    assert len(steps) == max(map(len, want))


def test_prompts_of_different_lengths_are_refused(model):
    with pytest.raises(ValueError, match=r"same length.*generate\(\)"):
        list(generate_batch(model, [[1, 2], [1, 2, 3]], 3))
    with pytest.raises(ValueError, match="one each"):
        list(generate_batch(model, [[1], [2]], 3, seeds=[1]))


def test_batched_int8_rows_equal_one_at_a_time():
    """The quantized kernels' few-rows path gives each row what the one-row path gives."""
    from tinygpt.quantize import quantize_gpt
    m = quantize_gpt(GPT(GPTConfig(**CFG), seed=4, dtype=np.float64), "int8")
    prompts = np.random.default_rng(1).integers(0, 31, (5, 4)).tolist()
    got = rows_of(list(generate_batch(m, prompts, 8, temperature=0)), 5)
    assert got == [list(generate(m, p, 8, temperature=0)) for p in prompts]


# ----- the command line: --num-samples N decodes together, prints what one at a time would ----

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tinygpt.cli import main
    out = tmp_path_factory.mktemp("batched") / "out"
    result = CliRunner().invoke(main, ["train", "--n-layer", "1", "--n-head", "2", "--n-embd",
                                       "16", "--block-size", "16", "--batch-size", "4",
                                       "--eval-interval", "10", "--eval-iters", "2", "--quiet",
                                       "--max-iters", "10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


def test_num_samples_prints_the_samples_one_at_a_time_would(run):
    from tinygpt import loading
    from tinygpt.cli import main
    r = CliRunner().invoke(main, ["sample", "--model", run, "--num-samples", "3", "--seed", "5",
                                  "--max-new-tokens", "20", "ROMEO:"])
    assert r.exit_code == 0, r.output
    model, tok, _ = loading.load_model(run)
    ids = tok.encode("ROMEO:")
    want = ["ROMEO:" + tok.decode(list(generate(model, ids, 20, temperature=0.8, top_k=200,
                                                seed=5 + n, vocab_size=tok.vocab_size)))
            for n in range(3)]
    assert r.stdout == "\n".join(want[:1] + [s for w in want[1:] for s in ("-" * 40, w)]) + "\n"
    assert "3 samples decoded together" in r.stderr
