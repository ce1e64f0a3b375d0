"""Every script in examples/ runs in its fast mode, as a learner would run it: a fresh Python
process (sys.executable), exit code 0, and the output it promises."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tensor.io import save_safetensors
from tinygpt.export import hf_config, hf_tensors
from tinygpt.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny GPT-2 in the Hugging Face layout (config.json + model.safetensors; the tokenizer
    is the bundled GPT-2 BPE), written with tinygpt's export functions."""
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    path.mkdir()
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=16), seed=0)
    save_safetensors(path / "model.safetensors", hf_tensors(model))
    (path / "config.json").write_text(json.dumps(hf_config(model.config, 50256)))
    return path


def run(script, *args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--fast", *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", cwd=cwd, env=env,
                          timeout=300)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_backprop_by_hand(tmp_path):
    out = run("backprop_by_hand.py", cwd=tmp_path)
    assert "OK: the hand-written gradients match autograd" in out
    for name in ("W1", "b1", "W2", "b2"):
        assert f"\n{name} " in out
    losses = [float(l.split("loss")[-1]) for l in out.splitlines() if l.strip().startswith("step")]
    assert len(losses) >= 2 and losses[-1] < losses[0]          # the hand gradients train


def test_new_op(tmp_path):
    out = run("new_op.py", cwd=tmp_path)
    assert "gradcheck(softplus): True" in out
    assert "gradcheck(mean(softplus(x @ w) * softplus(-x @ w))): True" in out
    assert "gradcheck(softplus_buggy) caught the bug" in out
    assert "2 softplus nodes" in out


def test_train_shakespeare(tmp_path):
    out = run("train_shakespeare.py", cwd=tmp_path)
    steps = [l for l in out.splitlines() if l.startswith("step")]
    first, last = (float(s.split("train loss")[1].split(",")[0]) for s in (steps[0], steps[-1]))
    assert last < first                                           # it learned something
    assert "--- sample ---" in out and "ROMEO:" in out.split("--- sample ---")[1]


def test_generate_from_a_local_directory(tmp_path, hf_dir):
    out = run("generate.py", "--model", hf_dir, "--prompt", "Hello world", cwd=tmp_path)
    assert "prompt: 2 tokens [15496, 995]" in out                 # GPT-2's BPE ids
    assert "next-token candidates" in out
    assert "[8 new tokens]" in out


def test_generate_unknown_model_fails_clearly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "generate.py"), "--fast", "--model",
                           str(tmp_path / "missing")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 1
    assert "neither a directory nor a GPT-2 name" in done.stderr


def test_attention_maps(tmp_path, hf_dir):
    out = run("attention_maps.py", "--model", hf_dir, "--layer", "1", "--head", "1", cwd=tmp_path)
    assert "2 layers × 2 heads" in out
    assert "layer 1, head 1" in out and "← key" in out
    for pattern in ("previous token", "first token", "self", "induction"):
        assert f"  {pattern} " in out


def test_attention_maps_png(tmp_path, hf_dir):
    pytest.importorskip("matplotlib", reason="the PNG needs the optional extra `plot`")
    png = tmp_path / "att.png"
    out = run("attention_maps.py", "--model", hf_dir, "--png", png, cwd=tmp_path)
    assert f"saved every head of layer 0 to {png}" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_attention_maps_checks_the_png_path_before_loading(tmp_path):
    pytest.importorskip("matplotlib", reason="the check asks matplotlib which formats it writes")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "attention_maps.py"), "--fast",
                           "--model", str(tmp_path / "missing"), "--png",
                           str(tmp_path / "nodir" / "att.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--png" in done.stderr and "nodir" in done.stderr      # the path, not the model


def test_every_example_is_tested_documented_and_has_a_fast_mode():
    tested = {name[len("test_"):].split("_from")[0] for name in globals() if name.startswith("test_")}
    for script in sorted(EXAMPLES.glob("*.py")):
        source = script.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source))
        assert doc and len(doc.splitlines()) >= 3, f"{script.name}: start with a docstring for learners"
        assert '"--fast"' in source, f"{script.name}: needs a --fast flag for the tests"
        assert script.stem in tested, f"{script.name} has no test in {__name__}"
