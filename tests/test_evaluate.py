"""tinygpt/evaluate.py: perplexity over strided windows (strided_perplexity).

Oracle: helpers.perplexity_oracle, which scores every token from the first window that predicts
it with the model's own full forward pass and NumPy's log-softmax. The comparison with torch on
Hugging Face's recipe is in test_parity.py; the `perplexity` command in test_cli.py."""
import numpy as np
import pytest

from tinygpt.evaluate import strided_perplexity

from helpers import TINY_GPT2, perplexity_oracle, random_model


@pytest.fixture(scope="module")
def small_vocab():
    return random_model({**TINY_GPT2, "vocab_size": 97}, seed=2, gain_std=0.2)


@pytest.mark.parametrize("n, stride", [(20, 16), (75, 32), (75, 8), (75, 5), (33, 1), (64, 31),
                                       (70, 32), (65, 32)])
def test_strided_perplexity(small_vocab, n, stride):
    ids = [int(i) for i in np.random.default_rng(n).integers(0, 97, n)]
    seen = []
    ppl, scored, _ = strided_perplexity(small_vocab, ids, stride,
                                        lambda done, total: seen.append((done, total)))
    want, count = perplexity_oracle(small_vocab, ids, stride)
    assert scored == count
    assert count == (n - 1 if stride < TINY_GPT2["block_size"] else n - 1 - (n - 1) // stride)
    assert seen[-1] == (count, count) and seen == sorted(seen)
    assert ppl == pytest.approx(want, rel=1e-5)


def test_strided_perplexity_refuses_a_bad_stride(hf_source):
    with pytest.raises(ValueError, match="stride"):
        strided_perplexity(hf_source, [1, 2, 3], stride=TINY_GPT2["block_size"] + 1)


def test_estimate_loss_reports_its_progress_and_matches_a_plain_mean():
    """An evaluation says how far it is (a 22-minute evaluation showed nothing), and its
    losses are the plain mean of the model's loss on the same batches (the oracle: the batches
    drawn again from the documented seeds)."""
    from tinygpt.dataset import Dataset
    from tinygpt.evaluate import estimate_loss
    from tinygpt.model import GPT, GPTConfig
    import tensor
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    data = Dataset.from_ids(np.random.default_rng(0).integers(0, 11, 400), block_size=8)
    seen = []
    losses = estimate_loss(model, data, 3, 8, 4, [5, 7], progress=lambda d, t: seen.append((d, t)))
    assert seen == [(k, 8) for k in range(9)]
    assert model.training                          # put back as it was
    for split in ("train", "val"):
        rng = np.random.default_rng([5, 7, split == "val"])
        with tensor.no_grad():
            model.eval()
            want = np.mean([model(*data.batch(split, 3, 8, rng))[1].item() for _ in range(4)])
            model.train()
        assert losses[split] == pytest.approx(want, rel=1e-6)
