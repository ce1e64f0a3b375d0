"""Every command except `train`: bad input is a one-line error that names the option or the file
(exit 1, or 2 for a usage error as click does), never a traceback, and nothing is written.
Also: `sample` and `generate` agree on their options and their output, and every command that
loads a run names the checkpoint it took.

Fixtures are made as a user makes them: runs by tinygpt.train.train, Hugging Face directories by
`tinygpt export` or tinygpt's own export functions."""
import json
import shutil

import pytest
from click.testing import CliRunner

from tinygpt.bpe import GPT2Tokenizer
from tinygpt.cli import main
from run_helpers import load_run

from test_loading import edit_configs, train_run

SAMPLING = ["--num-samples", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed",
            "--threads", "--prompt", "--checkpoint", "--model"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def clean_error(result, code, *words):
    """Exit `code`, no traceback, and every word in the output."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def run_without_newline(tmp_path_factory):
    base = tmp_path_factory.mktemp("nonl")
    data = base / "data.txt"
    data.write_text("abcabd cab dab " * 400, encoding="utf-8")
    return train_run(base / "out", data=data, max_iters=2, eval_interval=1)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, run):
    """A BPE model in the Hugging Face layout: tinygpt's export of a GPT-2-tokenized run."""
    base = tmp_path_factory.mktemp("bpe")
    data = base / "data.txt"
    data.write_text("The cat sat on the mat. Héllo wörld, 世界!\n" * 300, encoding="utf-8")
    bpe_run = train_run(base / "run", data=data, tokenizer="gpt2", max_iters=2, eval_interval=1)
    result = invoke("export", "--model", bpe_run, "--to", base / "hf")
    assert result.exit_code == 0, result.output
    return bpe_run, base / "hf"


# ----- empty prompts --------------------------------------------------------------------------

def test_sample_with_an_empty_prompt_starts_from_a_newline(run):
    result = invoke("sample", "--model", run, "--prompt", "", "--max-new-tokens", "5", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("\n")


@pytest.mark.parametrize("args", [[""], []])
def test_generate_with_an_empty_or_no_prompt(run, args):
    result = invoke("generate", "--model", run, "--max-new-tokens", "5", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("\n")                   # a char model starts from a newline


def test_generate_an_empty_prompt_on_a_bpe_model_is_a_new_document(hf_dir):
    _, hf = hf_dir
    result = invoke("generate", "--model", hf, "--max-new-tokens", "3", "--no-stop-at-eot", "")
    assert result.exit_code == 0, result.output


def test_an_empty_prompt_without_a_newline_in_the_vocabulary(run_without_newline):
    for cmd in ("sample", "generate"):
        result = invoke(cmd, "--model", run_without_newline, "--prompt", "")
        clean_error(result, 1, "prompt")


# ----- numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["sample", "generate"])
@pytest.mark.parametrize("option, value", [("--seed", "-5"), ("--seed", "-1"),
                                           ("--temperature", "nan"), ("--temperature", "inf"),
                                           ("--top-p", "nan"), ("--top-p", "inf"),
                                           ("--top-k", "-1"), ("--threads", "0"),
                                           ("--max-new-tokens", "0"), ("--num-samples", "0"),
                                           ("--checkpoint", "newest")])
def test_bad_numbers_are_usage_errors_naming_the_option(run, cmd, option, value):
    result = invoke(cmd, "--model", run, option, value, "hi")
    clean_error(result, 2, option)


def test_top_k_0_means_all_tokens_on_both(run):
    for cmd in ("sample", "generate"):
        result = invoke(cmd, "--model", run, "--top-k", "0", "--max-new-tokens", "3", "--seed", "1",
                        "ROMEO:")
        assert result.exit_code == 0, (cmd, result.output)


# ----- sample and generate agree --------------------------------------------------------------

def test_sample_and_generate_have_the_same_sampling_options():
    for cmd in ("sample", "generate"):
        text = invoke(cmd, "--help").output
        for option in SAMPLING:
            assert option in text, (cmd, option)


def test_sample_and_generate_print_the_same_text(run):
    args = ["--model", run, "--max-new-tokens", "12", "--num-samples", "2", "--seed", "7",
            "--top-k", "0", "--temperature", "0.9"]
    a = invoke("sample", *args, "ROMEO:")
    b = invoke("generate", *args, "--prompt", "ROMEO:")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:")


def test_a_prompt_given_twice_differently_is_a_usage_error(run):
    result = invoke("sample", "--model", run, "--prompt", "a", "b")
    clean_error(result, 2, "--prompt")


def test_sample_streams_whole_characters_from_a_bpe_run(hf_dir, monkeypatch):
    """A run with GPT-2's tokenizer emits "é" and "世" as separate byte tokens; `sample` must
    print the characters, not U+FFFD for each half (oracle: decoding all bytes at once)."""
    bpe_run, _ = hf_dir
    tok = GPT2Tokenizer.from_tiktoken()
    byte_id = {tok.decode_bytes([i]): i for i in range(tok.eot_token) if len(tok.decode_bytes([i])) == 1}
    text = " héllo 世界"
    ids = [byte_id[bytes([b])] for b in text.encode("utf-8")]
    import tinygpt.generate

    def fake(model, prompt, max_new_tokens, *args, **kwargs):
        yield from ids[:max_new_tokens]
    monkeypatch.setattr(tinygpt.generate, "generate", fake)
    result = invoke("sample", "--model", bpe_run, "--max-new-tokens", len(ids), "Hi")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Hi" + text)
    assert "\ufffd" not in result.stdout


# ----- which checkpoint -----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["best", "latest"])
def test_sample_says_which_checkpoint_it_took(run, which):
    want = load_run(run, which=which)[2]["source"]
    args = ["--checkpoint", which] if which != "best" else []
    result = invoke("sample", "--model", run, "--max-new-tokens", "2", *args)
    assert result.exit_code == 0, result.output
    assert want in result.stderr


def test_export_says_which_checkpoint_it_took(run, tmp_path):
    want = load_run(run, which="best")[2]["source"]
    result = invoke("export", "--model", run, "--to", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert want in result.stderr


@pytest.mark.parametrize("cmd, extra", [("sample", ["--max-new-tokens", "2"]), ("plot", []),
                                        ("export", ["--to", "HF"])])
def test_model_is_the_one_name_of_the_run_on_sample_plot_and_export(run, tmp_path, cmd, extra):
    extra = [str(tmp_path / "hf") if a == "HF" else a for a in extra]
    if cmd == "plot":
        pytest.importorskip("matplotlib", reason='plot needs matplotlib: pip install "tinygpt[plot]"')
        extra = ["--png", str(tmp_path / "loss.png")]
    result = invoke(cmd, "--model", run, *extra)
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in invoke(cmd, "--help").output.splitlines()
              if line.strip().startswith("-")]
    assert "--model" in listed and "--out" not in listed
    refused = invoke(cmd, "--out", run, *extra)                 # no second name for the run
    assert refused.exit_code == 2 and "No such option '--out'" in refused.output


@pytest.mark.parametrize("cmd", ["sample", "generate", "perplexity", "inspect", "export"])
def test_every_command_that_runs_kernels_has_threads(cmd):
    assert "--threads" in invoke(cmd, "--help").output


# ----- files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["plot", "inspect"])
@pytest.mark.parametrize("png, words", [("nodir/x.png", ["--png", "nodir"]),
                                        ("x.foo", ["--png", ".foo", "png", "svg"]),
                                        ("x", ["--png", "png"])])
def test_png_is_checked_before_any_work(run, tmp_path, cmd, png, words):
    pytest.importorskip("matplotlib", reason='--png needs matplotlib: pip install "tinygpt[plot]"')
    args = ["--model", run, "--png", tmp_path / png]
    if cmd == "inspect":
        args.append("ROMEO:")
    result = invoke(cmd, *args)
    clean_error(result, 2, *words)
    assert "loading" not in result.output and "evaluations" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_plot_a_metrics_file_that_is_not_utf8(tmp_path):
    (tmp_path / "metrics.csv").write_bytes(b"iter,train_loss,val_loss\n0,\xff\xfe,1\n")
    result = invoke("plot", "--model", tmp_path)
    clean_error(result, 1, "metrics.csv", "UTF-8")
    assert not (tmp_path / "loss.png").exists()


@pytest.mark.parametrize("to", ["/proc/tinygpt-export", "/dev/null/x", "FILE"])
def test_export_to_a_place_it_cannot_write(run, tmp_path, to):
    if to == "FILE":
        to = tmp_path / "afile"
        to.write_text("mine")
    result = invoke("export", "--model", run, "--to", to)
    clean_error(result, 1, "--to", str(to))
    if to == tmp_path / "afile":
        assert to.read_text() == "mine"


def test_sample_a_run_whose_tokenizer_disagrees_with_the_weights(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)

    def trim(d):
        d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    edit_configs(bad, trim)
    for args in (["sample", "--model", bad], ["generate", "--model", bad, "a"],
                 ["export", "--model", bad, "--to", tmp_path / "hf"]):
        clean_error(invoke(*args, "--max-new-tokens", "20") if args[0] != "export" else
                    invoke(*args), 1, "config.json")
    assert not (tmp_path / "hf").exists()


def test_generate_a_hugging_face_dir_whose_char_vocabulary_is_cut(run, tmp_path):
    result = invoke("export", "--model", run, "--to", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    path = tmp_path / "hf" / "tinygpt_char_vocab.json"
    d = json.loads(path.read_text(encoding="utf-8"))
    d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    path.write_text(json.dumps(d), encoding="utf-8")
    clean_error(invoke("generate", "--model", tmp_path / "hf", "--max-new-tokens", "20", "a"), 1,
                "tinygpt_char_vocab.json")
