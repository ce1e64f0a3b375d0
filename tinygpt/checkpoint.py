"""Training runs and their checkpoints, written so that no kill, crash or Ctrl-C loses one.

A *run directory* (`tinygpt train --out out`) holds:

    out/
      metrics.csv                one row per evaluation
      train.lock                 locked by the process training in this run; holds its PID
      ckpt-0001750/              a complete checkpoint (the best one: lowest val loss)
      ckpt-0002000/              a complete checkpoint (the latest one: where --resume starts)
        model.safetensors          the weights, by GPT-2's names (readable by other tools)
        optimizer.safetensors      AdamW's moments m.<i>, v.<i>, its step count and lr
        rng.json                   the random generators' states (batches, dropout)
        config.json                model, tokenizer, training options, iteration, val loss
        manifest.json              size and SHA-256 of each file above, and of itself; last

How a save stays safe: the new checkpoint is written into a hidden `.partial-*` directory next
to the others, every file is flushed to disk, the manifest is written last, and then the whole
directory is renamed to `ckpt-<iteration>` in one atomic step. Only after that are older
checkpoints removed (renamed to `.partial-*` first, then deleted), keeping the latest and the
best (the best among those that verify). A kill at any instant leaves either the old set or the
new one, plus perhaps a `.partial-*` directory that the next `train` removes; a save that fails
(a full disk) removes its own. Loading checks every file against the manifest, names the file
that fails, and falls back to the previous complete checkpoint, saying which one it uses. A
checkpoint found damaged (by a resume, or by a save that would keep it as the best) is not
deleted but set aside as `damaged-ckpt-*`, out of the run. No pickle.

A *checkpoint directory* (one `ckpt-*`) can be given wherever a run directory can.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from tensor.io import (SafetensorsError, atomic_write_json, open_safetensors, save_safetensors,
                       _fsync_directory)

from .loading import LoadError

MODEL_FILE, OPTIM_FILE, RNG_FILE, CONFIG_FILE = ("model.safetensors", "optimizer.safetensors",
                                                 "rng.json", "config.json")
MANIFEST_FILE, LOCK_FILE, METRICS_FILE = "manifest.json", "train.lock", "metrics.csv"
PARTIAL_PREFIX = ".partial-"
FORMAT = "tinygpt-checkpoint"
_NAME = re.compile(r"ckpt-(\d{7,})(?:\.(\d+))?$")


class CheckpointError(LoadError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


class EditedCheckpoint(CheckpointError):
    """A checkpoint whose weights match the manifest but whose config.json or rng.json does not:
    an edit by hand, most likely. Nothing is lost; the message says how to put it back."""


# ----------------------------------------------------------------------------------------------
# What is in a directory
# ----------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    path: Path
    iteration: int
    serial: int                 # ckpt-0000500.1 is a second save at the same iteration
    val_loss: float | None      # the evaluation made with exactly these weights (None: not one)

    def describe(self) -> str:
        loss = f", val loss {self.val_loss:.4f}" if self.val_loss is not None else ""
        return f"{self.path} (iteration {self.iteration}{loss})"


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is damaged and cannot be read ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path} is damaged: expected a JSON object")
    return d


def _is_single(path: Path) -> bool:
    """A directory holding one checkpoint's files directly (a ckpt-*, given itself)."""
    try:
        d = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "model" in d and "tokenizer" in d


def list_checkpoints(run_dir) -> list[Checkpoint]:
    """The checkpoints of a run, oldest first: every ckpt-* directory, complete or not (a save
    renames a checkpoint into place only once its manifest is written, so one without it is
    damage, which verify() reports and which a resume or a save sets aside). A checkpoint
    directory given itself counts as one."""
    run = Path(run_dir)
    found = []
    try:
        entries = list(os.scandir(run))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for e in entries:
        m = _NAME.match(e.name)
        if not (m and e.is_dir()):
            continue
        val = None
        try:
            v = json.loads((Path(e.path) / CONFIG_FILE).read_text(encoding="utf-8")).get("val_loss")
            val = float(v) if v is not None and math.isfinite(float(v)) else None
        except (OSError, ValueError, TypeError, AttributeError):
            pass                       # damaged: verify() will say so if it is chosen
        found.append(Checkpoint(Path(e.path), int(m.group(1)), int(m.group(2) or 0), val))
    if not found and ((run / MANIFEST_FILE).exists() or _is_single(run)):   # one checkpoint
        try:
            source = run / (MANIFEST_FILE if (run / MANIFEST_FILE).exists() else CONFIG_FILE)
            iteration = int(json.loads(source.read_text(encoding="utf-8")).get("iteration", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            iteration = 0              # damaged: verify() says which file when it is loaded
        found.append(Checkpoint(run, iteration, 0, None))
    return sorted(found, key=lambda c: (c.iteration, c.serial))


def is_checkpoint(path) -> bool:
    """Is `path` a directory written by `tinygpt train` (a run, or one checkpoint of a run)?
    The one rule every command uses to tell a training run from a Hugging Face directory."""
    path = Path(str(path))
    return path.is_dir() and (_is_single(path) or bool(list_checkpoints(path)))


def is_run_started(run_dir) -> bool:
    """Does `run_dir` hold anything at all (so a fresh run must not write into it)?"""
    try:
        return any(os.scandir(run_dir))
    except (FileNotFoundError, NotADirectoryError):
        return False


# ----------------------------------------------------------------------------------------------
# Checksums
# ----------------------------------------------------------------------------------------------
def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_MANIFEST_KEYS = {"format", "iteration", "files"}


def _manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's content (keys sorted, compact), its own field left out."""
    text = json.dumps(manifest, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_manifest_digest(manifest: dict, path: Path) -> None:
    """The manifest checks itself: a changed byte in it (a checksum turned upper-case, say)
    would otherwise look like damage to the file whose entry it hit."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if set(body) != _MANIFEST_KEYS or manifest.get("manifest_sha256") != _manifest_digest(body):
        raise CheckpointError(f"{path} is damaged: its own checksum does not match its "
                              f"content (a changed or corrupted byte)")


def verify(ckpt_dir) -> None:
    """Check every file of a checkpoint against its manifest; the error names each bad file.
    Only config.json or rng.json differing (the weights intact) is an EditedCheckpoint."""
    d = Path(ckpt_dir)
    manifest_path = d / MANIFEST_FILE
    if not manifest_path.exists():
        raise CheckpointError(f"{d} has no {MANIFEST_FILE} (deleted, or its save never "
                              f"completed), so its files cannot be checked")
    manifest = _read_json(manifest_path)
    _check_manifest_digest(manifest, manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict) or CONFIG_FILE not in files or MODEL_FILE not in files:
        raise CheckpointError(f"{manifest_path} is damaged: it does not list the checkpoint's files")
    bad = {name: why for name, entry in files.items() if (why := _mismatch(d / name, entry))}
    if not bad:
        return
    if all(name.endswith(".json") for name in bad):         # the weights verified
        weights = ", ".join(n for n in files if n.endswith(".safetensors"))
        advice = "" if CONFIG_FILE not in bad else (
            f" Options a resume may change are given on its command line (`tinygpt train "
            f"--resume --lr ...`), not edited in {CONFIG_FILE}.")
        raise EditedCheckpoint(
            "; ".join(f"{d / n} is missing" if why == "missing" else
                      f"{d / n} differs from its manifest entry ({why})" for n, why in bad.items())
            + f": edited by hand, or a changed byte. The weights ({weights}) match theirs: they "
              f"are intact. Put back the original {' and '.join(bad)} (undo the edit, or copy it "
              f"from a backup)." + advice)
    raise CheckpointError("; ".join(
        f"checkpoint file missing: {d / n}" if why == "missing" else
        f"{d / n} is damaged: {why}" + (" (a changed or corrupted byte)" if "SHA" in why else "")
        for n, why in bad.items()))


def _mismatch(path: Path, entry) -> str | None:
    """What is wrong with one file of a checkpoint, by its manifest entry (None: nothing)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if not isinstance(entry, dict) or size != entry.get("size"):
        return (f"{size} bytes, the manifest says "
                f"{entry.get('size') if isinstance(entry, dict) else '?'}")
    if sha256_file(path) != entry.get("sha256"):
        return "its SHA-256 differs from the manifest's"
    return None


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------
def _kill_point(step: str) -> None:
    """Test hook: TINYGPT_TEST_KILL_AT="<save number>:<step>" kills this process with SIGKILL at
    that step of that save (1 = the first save), so the tests can check that a kill at every
    step of the save sequence loses nothing. Does nothing otherwise."""
    spec = os.environ.get("TINYGPT_TEST_KILL_AT")
    if not spec:
        return
    _kill_point.saves = getattr(_kill_point, "saves", 0) + (step == "start")
    number, _, at = spec.partition(":")
    if number.isdigit() and int(number) == _kill_point.saves and at == step:
        os.kill(os.getpid(), signal.SIGKILL)


SAVE_STEPS = ("start", "model", "optimizer", "rng", "config", "manifest", "rename", "prune")


def _name_for(run: Path, iteration: int) -> Path:
    path, serial = run / f"ckpt-{iteration:07d}", 0
    while path.exists():
        serial += 1
        path = run / f"ckpt-{iteration:07d}.{serial}"
    return path


def save_checkpoint(run_dir, model, config: dict, optimizer=None, rng_states: dict | None = None,
                    keep_best: bool = True, log=None) -> Path:
    """Write one complete checkpoint into run_dir, atomically, and prune older ones (keeping
    the one just written and the best). `config` must hold 'iteration'; 'val_loss' (the
    evaluation of these weights, or None) decides which checkpoint is the best. A write that
    fails (a full disk) removes the unfinished save and raises a CheckpointError that says how
    much space a checkpoint needs. log(line): where prune's warnings go (default: stderr)."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    iteration = int(config.get("iteration", 0))
    _kill_point("start")
    partial = run / f"{PARTIAL_PREFIX}ckpt-{iteration:07d}-{secrets.token_hex(4)}"
    try:
        partial.mkdir()
        _write_files(partial, iteration, model, config, optimizer, rng_states)
        final = _name_for(run, iteration)
        os.rename(partial, final)      # the one atomic step: the checkpoint now exists, whole
    except BaseException as e:         # a full disk, a second Ctrl-C: leave no debris behind
        shutil.rmtree(partial, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        raise _save_error(e, run, iteration, checkpoint_bytes(model, optimizer, config,
                                                              rng_states)) from None
    _fsync_directory(str(run))
    _kill_point("rename")
    prune(run, keep_best=keep_best, log=log)
    _kill_point("prune")
    return final


def _write_files(partial: Path, iteration: int, model, config, optimizer, rng_states) -> None:
    """Every file of a checkpoint into its .partial-* directory, flushed; the manifest last."""
    stamp = {"iteration": str(iteration)}
    save_safetensors(partial / MODEL_FILE, dict(model.state_dict()), metadata=stamp)
    _kill_point("model")
    if optimizer is not None:
        state = optimizer.state_dict()
        save_safetensors(partial / OPTIM_FILE, state["arrays"],
                         metadata={**stamp, "step": str(state["step"]), "lr": repr(state["lr"])})
    _kill_point("optimizer")
    if rng_states is not None:
        atomic_write_json(partial / RNG_FILE, {**rng_states, "iteration": iteration})
    _kill_point("rng")
    atomic_write_json(partial / CONFIG_FILE, {"format": FORMAT, "version": 2, **config})
    _kill_point("config")
    files = {e.name: {"size": e.stat().st_size, "sha256": sha256_file(e.path)}
             for e in sorted(os.scandir(partial), key=lambda e: e.name) if e.is_file()}
    manifest = {"format": FORMAT, "iteration": iteration, "files": files}
    atomic_write_json(partial / MANIFEST_FILE,
                      {**manifest, "manifest_sha256": _manifest_digest(manifest)})
    _kill_point("manifest")


def checkpoint_bytes(model, optimizer=None, config: dict | None = None,
                     rng_states: dict | None = None) -> int:
    """The bytes one checkpoint of these takes on disk, a little over: every array, a header
    entry of at most 256 bytes per array, the JSON files (ASCII-escaped, so never shorter than
    written) and 4 KiB for the manifest."""
    arrays = list(model.state_dict().values())
    if optimizer is not None:
        arrays += list(optimizer.state_dict()["arrays"].values())
    text = sum(len(json.dumps(obj, indent=2)) + 64 for obj in (config or {}, rng_states or {}))
    return sum(a.nbytes for a in arrays) + 256 * len(arrays) + text + 4096


def _save_error(e: OSError, run: Path, iteration: int, need: int) -> CheckpointError:
    what = f"cannot save the checkpoint of iteration {iteration} in {run}: {e.strerror or e}"
    kept = "the unfinished save was removed; the checkpoints already there are as they were"
    if e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return CheckpointError(f"{what} ({e.filename or run}); {kept}")
    try:
        free = f"that filesystem has {shutil.disk_usage(run).free:,} bytes free"
    except OSError:
        free = "how much that filesystem has free is unknown"
    return CheckpointError(f"{what}. A checkpoint needs about {need:,} bytes "
                           f"({need / 2**20:,.1f} MiB); {free}. Free some space; {kept}")


def prune(run_dir, keep_best: bool = True, log=None) -> None:
    """Remove every checkpoint but the latest (the one just written) and the best: the lowest
    val loss among those that verify. A damaged one that would be the best is set aside as
    damaged-ckpt-* (said through log, default stderr), never kept as the best, so that the best
    good checkpoint is not pruned in its place."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts or ckpts[-1].path == Path(run_dir):
        return
    newest, keep = ckpts[-1], {ckpts[-1].path}
    scored = sorted((c for c in ckpts if c.val_loss is not None),
                    key=lambda c: (c.val_loss, -c.iteration))
    for c in scored if keep_best else []:
        if c.path == newest.path:      # just written: the best, and nothing older is needed
            break
        try:
            verify(c.path)
        except CheckpointError as e:
            set_aside(c, str(e), log or _stderr)
            continue
        keep.add(c.path)
        break
    for c in ckpts:
        if c.path not in keep and c.path.exists():      # (one set aside above is not)
            _remove_dir(c.path)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _remove_dir(path: Path) -> None:
    """Rename to .partial-* first (atomic), so a kill halfway through the delete leaves no
    half-deleted checkpoint that looks complete."""
    doomed = path.parent / f"{PARTIAL_PREFIX}{path.name}-{secrets.token_hex(4)}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_partial(run_dir) -> list[str]:
    """Remove what killed saves left behind (call with the run's lock held). Returns the names."""
    removed = []
    for e in list(os.scandir(run_dir)):
        if e.name.startswith(PARTIAL_PREFIX) or (e.name.startswith(".") and e.name.endswith(".tmp")):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed.append(e.name)
    return removed


# ----------------------------------------------------------------------------------------------
# Housekeeping: what a fresh run may start over, --overwrite, a resume's damaged newer saves
# ----------------------------------------------------------------------------------------------
RUN_FILES = (METRICS_FILE, MODEL_FILE, OPTIM_FILE, RNG_FILE, CONFIG_FILE, MANIFEST_FILE,
             "loss.png")                # what tinygpt writes directly in a run directory


def only_debris(run_dir) -> bool:
    """A run killed before its first checkpoint completed: a metrics.csv, a lock, an unfinished
    save. Nothing there can be resumed, so a fresh run may start over it."""
    names = {e.name for e in os.scandir(run_dir)}
    return not list_checkpoints(run_dir) and all(
        n in (METRICS_FILE, LOCK_FILE) or n.startswith(PARTIAL_PREFIX) for n in names)


def clear_run(run_dir) -> None:
    """--overwrite: remove what tinygpt wrote in run_dir (checkpoints, metrics), nothing else."""
    for e in list(os.scandir(run_dir)):
        if e.is_dir(follow_symlinks=False) and (_NAME.match(e.name) or
                                                 e.name.startswith(PARTIAL_PREFIX)):
            _remove_dir(Path(e.path))
        elif e.name in RUN_FILES:
            os.unlink(e.path)
    clean_partial(run_dir)


def set_aside_damaged(run_dir, start: Checkpoint, log) -> None:
    """Resuming from `start` (the newest checkpoint that verifies): set aside every other
    checkpoint that does not verify, the newer ones (all damaged, or start would be one of them)
    and a damaged best, so that the run goes on with good checkpoints only and keeps the
    damaged ones, visibly, for whoever wants to look at them."""
    for c in list_checkpoints(run_dir):
        if (c.iteration, c.serial) > (start.iteration, start.serial):
            set_aside(c, None, log)    # find_checkpoint has said what is wrong with it
        elif c.path != start.path:
            try:
                verify(c.path)
            except CheckpointError as e:
                set_aside(c, str(e), log)


def set_aside(c: Checkpoint, why: str | None, log) -> Path:
    """Rename a damaged checkpoint to damaged-ckpt-* (no longer a checkpoint of the run: never
    loaded, never pruned) and say so, and why (unless that was said already)."""
    aside, n = c.path.parent / f"damaged-{c.path.name}", 0
    while aside.exists():
        n += 1
        aside = c.path.parent / f"damaged-{c.path.name}-{n}"
    os.rename(c.path, aside)
    log(f"warning: {why + '; ' if why else ''}moved the damaged checkpoint {c.path} to "
        f"{aside.name} (kept for you to look at or restore; delete it when you no longer need it)")
    return aside


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _candidates(path: Path, which: str) -> list[Checkpoint]:
    ckpts = list_checkpoints(path)
    if which == "latest":
        return ckpts[::-1]
    if which == "best":
        scored = sorted((c for c in ckpts if c.val_loss is not None),
                        key=lambda c: (c.val_loss, -c.iteration))
        return scored + [c for c in ckpts[::-1] if c.val_loss is None]
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")


def find_checkpoint(path, which: str = "latest", log=None) -> tuple[Checkpoint, dict]:
    """The checkpoint to load from a run (or checkpoint) directory, verified, with its config.
    A damaged one is reported through log() and skipped for the next one."""
    path = Path(str(path))
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: it is not a directory. Train first "
                              f"with `tinygpt train --out {path}`.")
    candidates = _candidates(path, which)
    if not candidates:
        partial = [e.name for e in os.scandir(path) if e.name.startswith(PARTIAL_PREFIX)]
        why = (" (only an unfinished save, killed before it completed)" if partial else
               f" ({path / CONFIG_FILE} is not a tinygpt config: damaged, or from another tool)"
               if (path / CONFIG_FILE).exists() else "")
        raise CheckpointError(f"no checkpoint in {path}{why}: `tinygpt train --out {path}` "
                              f"writes one at its first evaluation.")
    errors = []                         # (the checkpoint, what is wrong with it)
    for c in candidates:
        try:
            verify(c.path)
            config = load_config(c.path)
        except CheckpointError as e:
            if _pruned(c, path):        # a `train` writing to this run removed it as we read:
                return find_checkpoint(path, which, log)         # not damage; look again
            errors.append((c, e))
            continue
        for bad, e in errors if log is not None else []:
            fix = "" if isinstance(e, EditedCheckpoint) else (
                f" Restore it from a backup, or move it out of the run (`tinygpt train --resume "
                f"--out {path}` sets it aside as damaged-{bad.path.name}).")
            log(f"warning: {str(e).rstrip('.')}. Skipping the checkpoint {bad.path}; using "
                f"{c.describe()} instead.{fix}")
        return c, config
    fix = ("" if all(isinstance(e, EditedCheckpoint) for _, e in errors) else
           " Restore a backup, or start a new run (`tinygpt train --out NEW_DIR`).")
    raise CheckpointError(f"no checkpoint in {path} verifies: "
                          + "; ".join(str(e).rstrip(".") for _, e in errors) + "." + fix)


def _pruned(c: Checkpoint, run_dir: Path) -> bool:
    """True when checkpoint c of run_dir is gone because a training run pruned it (it was one of
    several in a run directory and no longer exists), so a fresh look will find its successor."""
    return c.path != run_dir and not c.path.exists()


def load_config(ckpt_dir) -> dict:
    path = Path(ckpt_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {ckpt_dir}: {path} is missing. Train first with "
                              f"`tinygpt train --out {ckpt_dir}`.")
    config = _read_json(path)
    for key in ("model", "tokenizer"):
        if key not in config:
            raise CheckpointError(f"{path} has no {key!r} section; it is not a tinygpt checkpoint")
    return config


@contextlib.contextmanager
def _open_checked(path: Path, iteration: int):
    """A checkpoint's safetensors file, open, once its header and its save are checked: its
    "iteration" must be config.json's. A missing file (perhaps pruned a moment ago) and a
    damaged one become CheckpointErrors, while it is opened and while it is read."""
    try:
        with open_safetensors(path) as f:
            saved = f.metadata.get("iteration")
            if saved is not None and int(saved) != iteration:
                raise CheckpointError(f"{path} is from iteration {saved} but config.json says "
                                      f"{iteration}: the files belong to different saves.")
            yield f
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except SafetensorsError as e:
        raise CheckpointError(f"{path} is damaged: {e}") from None


def _load_arrays(path: Path, iteration: int):
    with _open_checked(path, iteration) as f:
        return {name: f.read(name) for name in f.names()}, dict(f.metadata)


def open_source(path, which: str = "best", log=None):
    """The best or latest checkpoint of a run (or one checkpoint directory) as what
    tinygpt/loading.py loads: found and verified (a damaged one is reported through log() and
    skipped for the one before), its config.json parsed. Loading it is loading.load_model."""
    from .loading import Source
    from .model import GPTConfig
    from .tokenizer import tokenizer_from_dict
    ckpt, config = find_checkpoint(path, which, log)
    where = ckpt.path / CONFIG_FILE
    try:
        model_cfg = GPTConfig.from_dict(config["model"])
        tokenizer = tokenizer_from_dict(config["tokenizer"])
        iteration = int(config.get("iteration", 0))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where} is damaged: {e}") from None
    file = ckpt.path / MODEL_FILE

    @contextlib.contextmanager
    def weights(model):
        with _open_checked(file, iteration) as f:
            try:
                model.check_state_shapes({name: f.shape(name) for name in f.names()})
            except KeyError as e:
                raise CheckpointError(f"{file}: {e.args[0]}") from None
            try:
                yield lambda name, rows=None: f.read(name, raw=True, rows=rows)
            except SafetensorsError:
                raise                             # _open_checked says the file is damaged
            except ValueError as e:               # a weight that cannot be quantized (nan, inf)
                raise CheckpointError(f"{file}: {e}") from None

    return Source(config=model_cfg, tokenizer=tokenizer,
                  description=f"{ckpt.describe()}, the {which} checkpoint",
                  vocabulary_file=f"{where}: the tokenizer",
                  vocabulary_fix="The file is damaged or edited: restore it, or retrain",
                  weights=weights, error=CheckpointError, vanished=lambda: _pruned(ckpt, Path(str(path))))


def load_training_state(ckpt_dir, optimizer, iteration: int) -> dict:
    """Restore the optimizer in place; return the saved RNG states."""
    arrays, meta = _load_arrays(Path(ckpt_dir) / OPTIM_FILE, iteration)
    try:
        optimizer.load_state_dict({"arrays": arrays, "step": int(meta["step"]),
                                   "lr": float(meta["lr"])})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{Path(ckpt_dir) / OPTIM_FILE}: {e}") from None
    rng = _read_json(Path(ckpt_dir) / RNG_FILE)
    if rng.get("iteration") != iteration:
        raise CheckpointError(f"{Path(ckpt_dir) / RNG_FILE} is from iteration "
                              f"{rng.get('iteration')} but config.json says {iteration}: the "
                              f"files belong to different saves.")
    return rng


# ----------------------------------------------------------------------------------------------
# One writer per run
# ----------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run directory for as long as a process trains in it, so a second
    `tinygpt train` into the same --out is refused. The lock is an flock on train.lock: the
    kernel drops it when the process dies, however it dies, so a killed run never leaves a
    stale lock behind. (On a system without fcntl, no lock is taken.)"""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:            # Windows: no flock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise self._held_by(holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def check_free(self) -> None:
        """Refuse at once, as acquire() would, if a process trains in this run now; take
        nothing and write nothing otherwise. (A shared flock, held for an instant: it conflicts
        only with a training process's exclusive one.)"""
        try:
            import fcntl
            fd = os.open(self.path, os.O_RDONLY)
        except (ImportError, FileNotFoundError, NotADirectoryError):
            return                     # no flock, or no lock file: nobody is training here
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise self._held_by(os.read(fd, 64).decode("ascii", "replace").strip()
                                or "unknown") from None
        finally:
            os.close(fd)               # and with it the shared lock

    def _held_by(self, holder: str) -> CheckpointError:
        return CheckpointError(f"another `tinygpt train` (PID {holder}) is training in "
                               f"{self.path.parent} now; wait for it to finish, stop it, or "
                               f"use another --out")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)          # closing drops the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
