"""A killed `tinygpt prepare` never leaves a mix of two datasets (tinygpt/dataset.py, `_swap_in`).

`prepare` runs in a real subprocess over a directory that already holds a dataset of the other
tokenizer (char over gpt2, gpt2 over char) and is killed with SIGKILL: at each named step of
the write and the swap (the TINYGPT_TEST_KILL_AT="prepare:<step>" hook), and at random moments
spread over a whole preparation of the bundled Shakespeare. Afterwards the directory must be
exactly the old dataset or exactly the new one: the bytes of train.bin and val.bin and the
content of meta.json equal those of a preparation that ran to the end (whose ids decode back to
its source text), with nothing else changed in the directory.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygpt.dataset import SHAKESPEARE, open_prepared, prepare
from tinygpt.tokenizer import tokenizer_from_dict

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

CHILD = """
import sys, time
import tinygpt.dataset as dataset
source, out, kind, chunk_chars = sys.argv[1:]
encode = dataset._encode_chunk
def slow_encode(text, dtype):    # 3 ms more per chunk of ids: the writing spans most of the run
    time.sleep(0.003)
    return encode(text, dtype)
dataset._encode_chunk = slow_encode
print("go", flush=True)
start = time.perf_counter()
dataset.prepare(source, out, kind, workers=1, progress=False, chunk_chars=int(chunk_chars))
print(time.perf_counter() - start, flush=True)
"""
CHUNK = 10_000                  # small chunks: many writes, and kill points between them
STEPS_BEFORE = ["start", "vocabulary", "chunk2", "ids", "split"]   # old dataset after
STEPS_AFTER = ["commit", "train.bin", "val.bin", "meta.json"]                # new dataset after
USER_FILES = {"notes.txt": "my notes\n", "runs/log.txt": "not tinygpt's\n"}


def dataset_files(d) -> dict:
    return {"train.bin": (d / "train.bin").read_bytes(), "val.bin": (d / "val.bin").read_bytes(),
            "meta": json.loads((d / "meta.json").read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def refs(tmp_path_factory, shakespeare):
    """Texts, and each one prepared to the end with each tokenizer: {(name, kind): files}."""
    root = tmp_path_factory.mktemp("prepare_kill")
    texts = {"old": shakespeare[-40_000:], "small": shakespeare[300_000:340_000], "big": shakespeare}
    paths = {"old": root / "old.txt", "small": root / "small.txt", "big": SHAKESPEARE}
    for name in ("old", "small"):
        paths[name].write_text(texts[name], encoding="utf-8")
    out = {}
    for name in texts:
        for kind in ("char", "gpt2"):
            d = root / f"{name}-{kind}"
            prepare(paths[name], d, kind, workers=1, progress=False)
            data, meta = open_prepared(d)
            tok = tokenizer_from_dict(meta["tokenizer"])
            assert tok.decode(np.concatenate([data.train, data.val])) == texts[name]
            assert meta["tokenizer"]["type"] == kind
            out[name, kind] = {"dir": d, "files": dataset_files(d)}
    return {"paths": paths, "sets": out, "root": root}


class Case:
    """One directory holding the old dataset (and the user's files), to prepare `new` over."""
    serial = 0

    def __init__(self, refs, old_kind, new_name, new_kind):
        Case.serial += 1
        self.dir = refs["root"] / f"case{Case.serial}"
        shutil.copytree(refs["sets"]["old", old_kind]["dir"], self.dir)
        for name, text in USER_FILES.items():
            (self.dir / name).parent.mkdir(exist_ok=True)
            (self.dir / name).write_text(text, encoding="utf-8")
        self.old = refs["sets"]["old", old_kind]["files"]
        self.new = refs["sets"][new_name, new_kind]["files"]
        self.args = [sys.executable, "-c", CHILD, str(refs["paths"][new_name]), str(self.dir),
                     new_kind, str(CHUNK)]

    def start(self, kill_at=None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "TINYGPT_TEST_KILL_AT"}
        if kill_at:
            env["TINYGPT_TEST_KILL_AT"] = f"prepare:{kill_at}"
        proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout.readline().strip() == "go", proc.stderr.read()
        return proc

    def state(self) -> str:
        """"old" or "new", after checking that the directory holds that dataset, whole."""
        data, meta = open_prepared(self.dir)        # finishes or removes what the kill left
        meta.pop("notice", None)
        found = dataset_files(self.dir)
        assert found["meta"] == meta
        assert (len(data.train), len(data.val)) == (meta["train_tokens"], meta["val_tokens"])
        states = [name for name, ref in (("old", self.old), ("new", self.new)) if found == ref]
        assert len(states) == 1, f"{self.dir} holds neither the old nor the new dataset whole"
        assert sorted(p.relative_to(self.dir).as_posix() for p in self.dir.rglob("*")) == \
            sorted(["meta.json", "train.bin", "val.bin", "runs", *USER_FILES])
        for name, text in USER_FILES.items():
            assert (self.dir / name).read_text(encoding="utf-8") == text
        return states[0]


DIRECTIONS = [("gpt2", "char"), ("char", "gpt2")]


@pytest.mark.parametrize("old_kind, new_kind", DIRECTIONS, ids=["char-over-gpt2", "gpt2-over-char"])
def test_killed_at_each_step_leaves_the_old_or_the_new_dataset(refs, old_kind, new_kind):
    steps = STEPS_BEFORE + STEPS_AFTER
    cases = [Case(refs, old_kind, "small", new_kind) for _ in steps]
    procs = [case.start(kill_at=step) for case, step in zip(cases, steps)]   # all at once
    for step, case, proc in zip(steps, cases, procs):
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"prepare was not killed at {step}"
        assert (case.dir / "meta.json").exists()            # never a directory without one
        expected = "old" if step in STEPS_BEFORE else "new"
        assert case.state() == expected, step


@pytest.mark.parametrize("old_kind, new_kind", DIRECTIONS, ids=["char-over-gpt2", "gpt2-over-char"])
def test_killed_at_random_moments_leaves_the_old_or_the_new_dataset(refs, old_kind, new_kind):
    case = Case(refs, old_kind, "big", new_kind)         # once to the end: how long it takes
    proc = case.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    seconds = float(out.split()[-1])
    assert case.state() == "new"
    rng = np.random.default_rng(0)
    kills = 5
    for i in range(kills):                       # one moment in each fifth of the preparation
        case = Case(refs, old_kind, "big", new_kind)
        proc = case.start()
        time.sleep(seconds * (i + rng.random()) / kills)
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL)
        case.state()


def test_the_next_prepare_finishes_or_cleans_up(refs):
    """The command line, killed in the middle of its swap: the next `tinygpt prepare` (not only
    open_prepared) moves the finished dataset in before writing its own; one killed before its
    swap leaves the old dataset, and the next prepare clears its partial directory."""
    case = Case(refs, "char", "small", "gpt2")
    env = {**os.environ, "TINYGPT_TEST_KILL_AT": "prepare:train.bin"}
    result = subprocess.run([sys.executable, "-m", "tinygpt.cli", "prepare", case.args[3],
                             "--out", str(case.dir), "--tokenizer", "gpt2", "--quiet"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    partial = [p for p in case.dir.iterdir() if p.name.startswith(".prepare-")]
    assert len(partial) == 1 and (partial[0] / "meta.json").exists()
    prepare(refs["paths"]["old"], case.dir, "char", workers=1, progress=False)
    assert not any(p.name.startswith(".prepare-") for p in case.dir.iterdir())
    case.old, case.new = case.new, case.old           # before: gpt2 "small"; now char "old" again
    assert case.state() == "new"

    case.old = case.new
    proc = case.start(kill_at="chunk1")                 # gpt2 of "small", killed while writing
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".prepare-") for p in case.dir.iterdir())
    prepare(refs["paths"]["small"], case.dir, "gpt2", workers=1, progress=False)
    assert not any(p.name.startswith(".prepare-") for p in case.dir.iterdir())
    case.new = refs["sets"]["small", "gpt2"]["files"]
    assert case.state() == "new"
