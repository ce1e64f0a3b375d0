"""tinygpt against the reference: transformers' GPT2LMHeadModel (PyTorch) and tiktoken.

Needs the optional `parity` extra (torch, transformers, tiktoken); skipped with the reason
otherwise. Nothing is downloaded: the reference model is a small random-init GPT2LMHeadModel
saved with save_pretrained, and tiktoken's encoding is built from tinygpt's bundled ranks.
"""
import base64
import json

import numpy as np
import pytest
from click.testing import CliRunner

REASON = "the parity tests need the optional `parity` extra: pip install -e '.[parity]'"
torch = pytest.importorskip("torch", reason=REASON)
transformers = pytest.importorskip("transformers", reason=REASON)
tiktoken = pytest.importorskip("tiktoken", reason=REASON)

import tensor  # noqa: E402
from tinygpt.bpe import BUNDLED_RANKS, EOT  # noqa: E402
from tinygpt.checkpoint import save_checkpoint  # noqa: E402
from tinygpt.cli import main  # noqa: E402
from tinygpt.generate import generate  # noqa: E402
from tinygpt.model import GPT, GPTConfig  # noqa: E402
from tinygpt.evaluate import strided_perplexity  # noqa: E402
from tinygpt.loading import load_model  # noqa: E402

CONFIG = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=50257, n_positions=128)
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # small matrices: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random GPT2LMHeadModel, every weight perturbed (HF inits biases to 0 and LayerNorm
    gains to 1, which would hide a bias or gain loaded into the wrong place), saved to a dir."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**CONFIG)).eval()
    with torch.no_grad():
        for p in model.parameters():         # wte and lm_head are one tied parameter
            p.add_(0.05 * torch.randn_like(p))
    directory = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model.save_pretrained(directory)         # safetensors (the transformers default)
    assert (directory / "model.safetensors").exists()
    return model, directory


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids))).logits.numpy()


def tinygpt_logits(model, ids):
    with tensor.no_grad():
        return model(np.asarray(ids))[0].data


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (2, 96))


def test_save_pretrained_loads_with_equal_logits(reference, ids):
    hf, directory = reference
    model, tok = load_model(directory)[:2]
    assert model.config == GPTConfig(vocab_size=50257, block_size=128, n_layer=2, n_head=4,
                                     n_embd=64, dropout=0.0)
    np.testing.assert_allclose(tinygpt_logits(model, ids), torch_logits(hf, ids), rtol=0, atol=ATOL)


def test_greedy_generation_matches_transformers(reference):
    hf, directory = reference
    model, tok = load_model(directory)[:2]
    prompt = np.random.default_rng(1).integers(0, CONFIG["vocab_size"], 10)
    with torch.no_grad():
        out = hf.generate(torch.tensor(prompt[None]), attention_mask=torch.ones(1, 10, dtype=torch.long),
                          max_new_tokens=20, do_sample=False, pad_token_id=tok.eot_token)
    want = out[0, 10:].tolist()               # stops early only if it produced <|endoftext|>
    got = list(generate(model, prompt, 20, temperature=0, stop_token=tok.eot_token))
    assert got == want


def test_strided_perplexity_matches_torch(reference):
    """The strided evaluation of Hugging Face's perplexity guide, computed with torch."""
    hf, directory = reference
    model, _ = load_model(directory)[:2]
    ids = np.random.default_rng(2).integers(0, CONFIG["vocab_size"], 300)
    T, stride = CONFIG["n_positions"], 48
    nll_sum, n_scored, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + T, len(ids))
            trg_len = end - prev_end                          # tokens this window scores
            x = torch.tensor(ids[begin:end])[None]
            labels = x.clone()
            labels[:, :-trg_len] = -100
            logp = torch.log_softmax(hf(x).logits[0, :-1].double(), dim=-1)
            target = labels[0, 1:]
            keep = target != -100
            nll_sum -= logp[keep, target[keep]].sum().item()
            n_scored += int(keep.sum())
            prev_end = end
            if end == len(ids):
                break
    ppl, scored, _ = strided_perplexity(model, ids, stride)
    assert scored == n_scored == len(ids) - 1
    assert ppl == pytest.approx(np.exp(nll_sum / n_scored), rel=1e-4)


def bundled_tiktoken():
    """tiktoken's gpt2 Encoding, built offline from tinygpt's bundled ranks."""
    ranks = {}
    for line in BUNDLED_RANKS.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name="gpt2-bundled",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})


def test_exported_checkpoint_loads_in_transformers(tmp_path):
    model = GPT(GPTConfig(vocab_size=50257, block_size=128, n_layer=2, n_head=4, n_embd=64,
                          dropout=0.1), seed=0)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():
        p.data += 0.05 * rng.standard_normal(p.shape).astype(np.float32)
    save_checkpoint(tmp_path / "out", model, {"model": model.config.to_dict(),
                                              "tokenizer": {"type": "gpt2"}, "iteration": 0})
    result = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "out"),
                                       "--to", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output

    hf, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf",
                                                            output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.resid_pdrop == hf.config.attn_pdrop == hf.config.embd_pdrop == 0.1
    ids = np.random.default_rng(3).integers(0, 50257, (2, 128))
    model.eval()
    np.testing.assert_allclose(torch_logits(hf, ids), tinygpt_logits(model, ids), rtol=0, atol=ATOL)

    # vocab.json / merges.txt: transformers' tokenizer gives tiktoken's ids
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Hello, I'm a language model, naïve café 🎉\n\n  spaces   and 1234 digits"
    assert hf_tok.encode(text) == bundled_tiktoken().encode(text)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == 50256
