"""What the tinygpt tests build their inputs from: tiny model configurations, random models,
Hugging Face directories, tiny training runs and their command lines, and the few oracles more
than one test file uses. The fixtures built on these are in conftest.py.

These are plain functions and constants, imported by the tests (`from helpers import ...`),
because the tests call them with their own arguments: in test bodies, in module-scoped fixtures,
and in module constants. A fixture can do none of that without becoming a factory behind an
indirection, and conftest.py is pytest's to load, not a module to import.
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensor
from tensor.io import load_safetensors, save_safetensors
from tinygpt import checkpoint as ckpt
from tinygpt.export import hf_config, hf_tensors
from tinygpt.model import GPT, GPTConfig
from tinygpt.train import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------
# Tiny models
# ----------------------------------------------------------------------------------------------
# The smallest GPT the model and checkpoint tests build (no dropout).
TINY_GPT = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
# GPT-2's vocabulary, so that the bundled GPT-2 tokenizer fits, on a tiny model.
TINY_GPT2 = dict(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=16)
# The inspect tests' model: a context of 24, so that `wpe.weight (24, 16)` names it.
INSPECT_GPT2 = dict(TINY_GPT2, block_size=24)

LAYERNORM_GAINS = ("ln_1.weight", "ln_2.weight", "ln_f.weight")


def tiny_gpt(dtype=np.float32, **overrides):
    """GPT(GPTConfig(**TINY_GPT) with `overrides`, seed=0): its own initialization."""
    return GPT(GPTConfig(**{**TINY_GPT, **overrides}), seed=0, dtype=dtype)


def random_model(config: dict, seed: int = 0, dtype=np.float32, *, offset: int = 1,
                 std: float = 0.1, gain_std: float = 0.3, gains=LAYERNORM_GAINS):
    """A GPT(GPTConfig(**config), seed=seed) whose every parameter, biases and LayerNorm gains
    too, is then drawn at random (so that a swapped, skipped or misplaced tensor shows), in eval
    mode. The draws come from np.random.default_rng(seed + offset), parameter by parameter in
    named_parameters() order: the parameters named by `gains` get 1 + gain_std * N(0, 1), every
    other one std * N(0, 1)."""
    model = GPT(GPTConfig(**config), seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + offset)
    for name, p in model.named_parameters():
        gain = name.endswith(gains)
        p.data[...] = (1.0 if gain else 0.0) + (gain_std if gain else std) * rng.standard_normal(p.shape)
    return model.eval()


def logits(model, ids):
    """The model's logits (T, V) for one sequence of ids."""
    with tensor.no_grad():
        return model(np.array([ids]))[0].data[0]


# ----------------------------------------------------------------------------------------------
# Hugging Face directories
# ----------------------------------------------------------------------------------------------
PREFIX = "transformer."


def write_hf_dir(path: Path, model, tensors=None, config=None) -> Path:
    """A Hugging Face GPT-2 directory: config.json and model.safetensors, written by default by
    tinygpt's own export functions (tinygpt.export.hf_config with GPT-2's end-of-text id 50256,
    tinygpt.export.hf_tensors); `tensors` and `config` replace either."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config(model.config, 50256)
                                                 if config is None else config))
    save_safetensors(path / "model.safetensors", hf_tensors(model) if tensors is None else tensors)
    return path


def hf_config_by_hand(cfg: GPTConfig) -> dict:
    """config.json as transformers' GPT2Config.save_pretrained writes it (the fields that matter),
    written here, independently of tinygpt.export."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "activation_function": "gelu_new", "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
            "n_head": cfg.n_head, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
            "vocab_size": cfg.vocab_size, "layer_norm_epsilon": 1e-05, "resid_pdrop": 0.1,
            "embd_pdrop": 0.1, "attn_pdrop": 0.1, "bos_token_id": 50256, "eos_token_id": 50256}


def hf_tensors_by_hand(model, prefix=PREFIX, buffers=True, dtype=np.float32):
    """The weights under Hugging Face's names, with the causal-mask buffers old files carry
    (independently of tinygpt.export)."""
    out = {prefix + name: x.astype(dtype) for name, x in model.state_dict().items()}
    if buffers:
        T = model.config.block_size
        for i in range(model.config.n_layer):
            out[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
            out[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    return out


def write_hf_dir_by_hand(path: Path, model, tensors=None, config=None) -> Path:
    """write_hf_dir with a config.json and tensors of our own (hf_config_by_hand,
    hf_tensors_by_hand) unless given: a Hugging Face directory that owes nothing to the
    tinygpt.export code it may be compared with."""
    return write_hf_dir(path, model, hf_tensors_by_hand(model) if tensors is None else tensors,
                        config or hf_config_by_hand(model.config))


def write_checkpoint(out: Path, model, tokenizer: dict) -> Path:
    """A one-checkpoint training run of `model` at iteration 0, by tinygpt.checkpoint."""
    ckpt.save_checkpoint(out, model, {"model": model.config.to_dict(), "tokenizer": tokenizer,
                                      "iteration": 0})
    return out


def load_error(path) -> str:
    """The message of the PretrainedError that loading the Hugging Face directory path raises."""
    from tinygpt.loading import load_model
    from tinygpt.pretrained import PretrainedError
    with pytest.raises(PretrainedError) as e:
        load_model(path)
    return str(e.value)


def load_run(path, which="best", log=None, weight_dtype="float32"):
    """(model, tokenizer, config) of a run's best or latest checkpoint, loaded by
    tinygpt.loading.load_model; config is that checkpoint's config.json, with "source" set to
    the loader's description and "checkpoint_dir" to the directory it read. A directory that
    holds no run raises the checkpoint module's own error (what is missing or damaged in it),
    as `tinygpt sample` would report it."""
    from tinygpt.loading import load_model
    if not ckpt.is_checkpoint(path):
        ckpt.open_source(path, which, log)          # raises the reason it is not a run
    model, tok, description = load_model(path, which=which, log=log, weight_dtype=weight_dtype)
    chosen, config = ckpt.find_checkpoint(path, which)
    return model, tok, {**config, "source": description, "checkpoint_dir": str(chosen.path)}


def reseal(ckpt_dir) -> Path:
    """Rewrite a checkpoint's manifest.json for its files as they are now, as save_checkpoint
    writes it: a test's edit then passes the manifest and meets the files' own checks."""
    d = Path(ckpt_dir)
    old = json.loads((d / ckpt.MANIFEST_FILE).read_text())
    files = {p.name: {"size": p.stat().st_size, "sha256": ckpt.sha256_file(p)}
             for p in sorted(d.iterdir()) if p.is_file() and p.name != ckpt.MANIFEST_FILE}
    manifest = {"format": ckpt.FORMAT, "iteration": old["iteration"], "files": files}
    (d / ckpt.MANIFEST_FILE).write_text(json.dumps(
        {**manifest, "manifest_sha256": ckpt._manifest_digest(manifest)}))
    return d


def edit_configs(run: Path, edit) -> None:
    """Change every config.json of a copied run that holds a tokenizer (wherever the checkpoint
    layout puts them)."""
    for path in run.rglob("config.json"):
        d = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "tokenizer" in d:
            edit(d)
            path.write_text(json.dumps(d), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Tiny training runs
# ----------------------------------------------------------------------------------------------
# The model and batch of every tiny run.
TINY_MODEL = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4)
# A run to read: 20 iterations, evaluated (and saved) at 0, 10 and 20.
RUN = dict(TINY_MODEL, max_iters=20, eval_interval=10, eval_iters=2)
# A run to stop, damage and resume: 12 iterations, evaluated every 4, with dropout (so that a
# resume must restore the random streams too).
TINY = dict(TINY_MODEL, max_iters=12, eval_interval=4, eval_iters=2, warmup_iters=2, dropout=0.1)


def quiet(*args, **kwargs):
    pass


def train_tiny(out, resume=False, given=None, **options) -> Path:
    """Train (or resume) a run in `out` through tinygpt.train.train, the only way the tests make
    one: the options of RUN with `options` changed (a `data` path is given as a string), no
    progress display, no log. Returns out."""
    if options.get("data") is not None:
        options["data"] = str(options["data"])
    train(TrainOptions(**{**RUN, **options, "out": str(out)}), resume=resume, progress=False,
          log=quiet, given=given)
    return out


def run_tiny(out, resume=False, **kw) -> Path:
    """A TINY run with `kw` changed, or its resume: on a resume, the options in `kw` are the ones
    given on the command line (the others come from the saved plan)."""
    return train_tiny(out, resume=resume, given=set(kw) if resume else None, **{**TINY, **kw})


def train_args(out, **options) -> list:
    """The `tinygpt train` command line of a run with these options, --quiet."""
    args = []
    for k, v in options.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return ["train", *args, "--out", str(out), "--quiet"]


def tiny_args(out, **kw) -> list:
    """The command line of a TINY run with `kw` changed."""
    return train_args(out, **{**TINY, **kw})


def final_weights(out) -> dict:
    """The weights of a run's latest checkpoint, as the file holds them."""
    return load_safetensors(ckpt.list_checkpoints(out)[-1].path / ckpt.MODEL_FILE)


def assert_same_weights(a: dict, b: dict) -> None:
    """Two dicts of arrays, bit for bit."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ----------------------------------------------------------------------------------------------
# Oracles
# ----------------------------------------------------------------------------------------------
def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def perplexity_oracle(model, ids, stride):
    """Windows ids[k*stride : k*stride + T] predict their tokens k*stride+1 .. k*stride+T-1.
    Token i is scored by the first window that predicts it: the smallest k with
    k*stride + T - 1 >= i, if k*stride < i (else no window gives it context); its context is
    ids[k*stride : i]."""
    T, nll = model.config.block_size, []
    for i in range(1, len(ids)):
        k = max(0, -(-(i - T + 1) // stride))                        # ceil((i - T + 1) / stride)
        if k * stride >= i:
            continue
        context = ids[k * stride:i]
        assert 1 <= len(context) <= T - 1
        nll.append(-log_softmax(logits(model, context)[-1])[ids[i]])
    return float(np.exp(np.mean(nll))), len(nll)


def load_ranks_for_oracle() -> dict[bytes, int]:
    """The bundled GPT-2 ranks, read with our own few lines (not with tinygpt's loader)."""
    from tinygpt.bpe import BUNDLED_RANKS
    ranks = {}
    for line in BUNDLED_RANKS.read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


# ----------------------------------------------------------------------------------------------
# MPI
# ----------------------------------------------------------------------------------------------
def env_without_launcher() -> dict:
    """This process's environment without an MPI launcher's variables, tinygpt importable."""
    from tinygpt import distributed as dist
    launcher_vars = dist.LAUNCHER_RANK_VARS + dist.LAUNCHER_SIZE_VARS
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def find_mpiexec() -> str:
    """The mpiexec installed beside this Python (the MPI of its mpi4py), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip('no mpiexec on PATH: pip install -e ".[mpi]" installs MPICH\'s')
    return found


def run_in_group(cmd, timeout, env=None):
    """Run cmd in its own process group, so that on a timeout every rank is killed too (a rank
    left waiting in an Allreduce spins a core)."""
    proc = subprocess.Popen(cmd, env=env if env is not None else env_without_launcher(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
