"""A training checkpoint is a directory (default `out/`) holding:

    model.safetensors      the weights, by their GPT-2 names
    optimizer.safetensors  AdamW's moments m.<i>, v.<i>
    rng.json               the random generators' states (batches, dropout)
    config.json            model config, tokenizer, training options, iteration, best val loss

Each file is written atomically (temp file, fsync, rename), config.json last: it is the record
that says which iteration the set belongs to, and every other file carries that iteration in its
own metadata, so a set mixed by a crash between two files is detected on load.  No pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tensor.io import (SafetensorsError, atomic_write_json, load_safetensors,
                       load_safetensors_metadata, save_safetensors)

MODEL_FILE, OPTIM_FILE, RNG_FILE, CONFIG_FILE = ("model.safetensors", "optimizer.safetensors",
                                                 "rng.json", "config.json")


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(out_dir, model, config: dict, optimizer=None, rng_states: dict | None = None):
    """Write the checkpoint files into out_dir. `config` must hold an 'iteration' key."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"iteration": str(config.get("iteration", 0))}
    save_safetensors(out / MODEL_FILE, dict(model.state_dict()), metadata=stamp)
    if optimizer is not None:
        state = optimizer.state_dict()
        save_safetensors(out / OPTIM_FILE, state["arrays"],
                         metadata={**stamp, "step": str(state["step"]), "lr": repr(state["lr"])})
    if rng_states is not None:
        atomic_write_json(out / RNG_FILE, {**rng_states, "iteration": config.get("iteration", 0)})
    atomic_write_json(out / CONFIG_FILE, config)


def load_config(out_dir) -> dict:
    path = Path(out_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {out_dir}: {path} is missing. Train first with "
                              f"`tinygpt train --out {out_dir}`.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); the checkpoint cannot be used") from None
    for key in ("model", "tokenizer"):
        if not isinstance(config, dict) or key not in config:
            raise CheckpointError(f"{path} has no {key!r} section; it is not a tinygpt checkpoint")
    return config


def _load_arrays(path: Path, iteration: int) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        arrays = load_safetensors(path)
        meta = load_safetensors_metadata(path)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None
    if "iteration" in meta and int(meta["iteration"]) != iteration:
        raise CheckpointError(f"{path} is from iteration {meta['iteration']} but config.json says "
                              f"{iteration}: a save was interrupted between files. Resume is "
                              f"not safe; start a new run or restore a backup.")
    return arrays, meta


def load_model(out_dir, dtype=np.float32):
    """The model, its tokenizer and the checkpoint's config.json, from a checkpoint directory."""
    from .model import GPT, GPTConfig
    from .tokenizer import tokenizer_from_dict
    config = load_config(out_dir)
    model = GPT(GPTConfig.from_dict(config["model"]), dtype=dtype, init=False)
    arrays, _ = _load_arrays(Path(out_dir) / MODEL_FILE, int(config.get("iteration", 0)))
    try:
        model.load_state_dict(arrays)
    except KeyError as e:
        raise CheckpointError(f"{Path(out_dir) / MODEL_FILE}: {e.args[0]}") from None
    return model, tokenizer_from_dict(config["tokenizer"]), config


def load_training_state(out_dir, optimizer, iteration: int) -> dict:
    """Restore the optimizer in place; return the saved RNG states."""
    arrays, meta = _load_arrays(Path(out_dir) / OPTIM_FILE, iteration)
    try:
        optimizer.load_state_dict({"arrays": arrays, "step": int(meta["step"]),
                                   "lr": float(meta["lr"])})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{Path(out_dir) / OPTIM_FILE}: {e}") from None
    path = Path(out_dir) / RNG_FILE
    try:
        rng = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is corrupt ({e})") from None
    if rng.get("iteration") != iteration:
        raise CheckpointError(f"{path} is from iteration {rng.get('iteration')} but config.json "
                              f"says {iteration}: a save was interrupted between files.")
    return rng
