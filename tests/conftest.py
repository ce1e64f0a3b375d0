import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# "ci": fixed seed, no deadline (Numba compiles on first call), so CI runs are repeatable.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The fixtures below are tinygpt's: they import helpers.py (and so tinygpt) when first used, not
# when pytest loads this file, so that the tensor tests never depend on tinygpt importing.


# ----- tiny training runs (helpers.train_tiny builds them) -------------------------------------

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tiny_run(**options): the directory of a finished tiny training run (helpers.train_tiny:
    helpers.RUN with these options changed), trained once per session for each set of options.
    Only for tests that read the run; a test that changes it works on copy_run(...) of it, or
    trains its own with helpers.train_tiny or helpers.run_tiny."""
    from helpers import train_tiny
    runs = {}

    def get(**options):
        key = json.dumps(options, sort_keys=True, default=str)
        if key not in runs:
            runs[key] = train_tiny(tmp_path_factory.mktemp("run") / "out", **options)
        return runs[key]
    return get


@pytest.fixture(scope="session")
def trained_run(tiny_run):
    """The run most tests read: helpers.RUN (one layer, the char tokenizer on the bundled tiny
    Shakespeare, 20 iterations, evaluated and saved at 0, 10 and 20)."""
    return tiny_run()


@pytest.fixture
def copy_run(tmp_path):
    """copy_run(run, name="run"): a copy of a run in this test's tmp_path, for a test that
    changes the run (a session run stays as it was trained)."""
    def copy(run, name="run"):
        return Path(shutil.copytree(run, tmp_path / name))
    return copy


# ----- tiny GPT-2 models for the Hugging Face tests (helpers.random_model, write_hf_dir) --------

@pytest.fixture(scope="module")
def hf_source():
    """The source model of the Hugging Face tests: helpers.TINY_GPT2 with every parameter
    random, in eval mode. Directories are written from it; its logits are the oracle."""
    from helpers import TINY_GPT2, random_model
    return random_model(TINY_GPT2, gain_std=0.2)


@pytest.fixture(scope="module")
def hf_ids():
    """Twelve GPT-2 token ids to run hf_source on."""
    import numpy as np

    from helpers import TINY_GPT2
    return [int(i) for i in np.random.default_rng(5).integers(0, TINY_GPT2["vocab_size"], 12)]


@pytest.fixture(scope="module")
def inspect_hf_dir(tmp_path_factory):
    """The Hugging Face directory of the inspect tests (tinygpt/inspect.py's, and the `inspect`
    command's in test_cli.py): helpers.INSPECT_GPT2 in float32, with weights random and large
    enough that attention is far from uniform, written by tinygpt's own export functions."""
    import numpy as np

    from helpers import INSPECT_GPT2, random_model, write_hf_dir
    return write_hf_dir(tmp_path_factory.mktemp("hf") / "tiny",
                        random_model(INSPECT_GPT2, dtype=np.float32, std=0.5))


# ----- data ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def shakespeare() -> str:
    """The bundled tiny Shakespeare, as text."""
    from tinygpt.dataset import SHAKESPEARE
    return SHAKESPEARE.read_text(encoding="utf-8")
