"""The `tinygpt` command line (tinygpt/cli/), every command through click's CliRunner: what
each command prints and writes, and that bad input is a one-line error that names the option or
the file (exit 1, or 2 for a usage error as click does), never a traceback, with nothing written.
Also: `sample` and `generate` agree on their options and their output, every command that loads a
run names the checkpoint it took, and the library never imports the command line.

Fixtures are made as a user makes them: runs by tinygpt.train.train (helpers.train_tiny) or by
`tinygpt train` itself, Hugging Face directories by `tinygpt export`, by tinygpt's own export
functions, or by hand (helpers.write_hf_dir_by_hand) when the output is compared with a model's
own forward pass."""
import ast
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinygpt.bpe import GPT2Tokenizer
from tinygpt.cli import main
from tinygpt.cli.prepare import prepare_cmd
from tinygpt.cli.train import train_cmd
from tinygpt.generate import generate

from helpers import (load_run, ROOT, RUN, edit_configs, logits, perplexity_oracle, tiny_args,
                     train_args, train_tiny, write_checkpoint, write_hf_dir_by_hand)

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
def trained(tmp_path_factory):
    """A run made by `tinygpt train` itself (helpers.RUN), and the command's result."""
    out = tmp_path_factory.mktemp("cli") / "out"
    result = CliRunner().invoke(main, train_args(out, **RUN))
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def run_without_newline(tmp_path_factory):
    base = tmp_path_factory.mktemp("nonl")
    data = base / "data.txt"
    data.write_text("abcabd cab dab " * 400, encoding="utf-8")
    return train_tiny(base / "out", data=data, max_iters=2, eval_interval=1)


@pytest.fixture(scope="module")
def bpe_export(tmp_path_factory):
    """A BPE model in the Hugging Face layout: tinygpt's export of a GPT-2-tokenized run.
    (the run, the exported directory)"""
    base = tmp_path_factory.mktemp("bpe")
    data = base / "data.txt"
    data.write_text("The cat sat on the mat. Héllo wörld, 世界!\n" * 300, encoding="utf-8")
    bpe_run = train_tiny(base / "run", data=data, tokenizer="gpt2", max_iters=2, eval_interval=1)
    result = invoke("export", "--model", bpe_run, "--to", base / "hf")
    assert result.exit_code == 0, result.output
    return bpe_run, base / "hf"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, hf_source):
    """conftest's hf_source, written by hand in the Hugging Face layout: the commands' output is
    compared with its own forward pass."""
    return write_hf_dir_by_hand(tmp_path_factory.mktemp("hf") / "tiny-gpt2", hf_source)


@pytest.fixture(scope="module")
def two_layer_run(tiny_run):
    """A run of two layers (helpers.RUN, n_layer=2), for the layer numbers `inspect` prints."""
    return tiny_run(n_layer=2)


# ----- the command group, over the library -------------------------------------------------------

def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for cmd in ("train", "sample"):
        assert cmd in result.output


def _imports(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_library_code_and_examples_do_not_import_the_command_line():
    offenders = []
    files = [p for p in (ROOT / "tinygpt").glob("*.py")    # __main__.py is the command's entry
             if not p.name.startswith("cli") and p.name != "__main__.py"]
    files += list((ROOT / "examples").glob("*.py"))
    for path in files:
        for name in _imports(path):
            if name.split(".")[-1].startswith("cli"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_text_stream_and_encode_prompt_live_in_the_library():
    from tinygpt.generate import TextStream, encode_prompt   # noqa: F401
    import tinygpt.cli.generate
    assert not hasattr(tinygpt.cli.generate, "TextStream")


@pytest.mark.parametrize("cmd", ["sample", "generate", "perplexity", "inspect", "export"])
def test_every_command_that_runs_kernels_has_threads(cmd):
    assert "--threads" in invoke(cmd, "--help").output


@pytest.mark.parametrize("cmd, extra", [("sample", ["--max-new-tokens", "2"]), ("plot", []),
                                        ("export", ["--to", "HF"])])
def test_model_is_the_one_name_of_the_run_on_sample_plot_and_export(trained_run, tmp_path, cmd, extra):
    extra = [str(tmp_path / "hf") if a == "HF" else a for a in extra]
    if cmd == "plot":
        pytest.importorskip("matplotlib", reason='plot needs matplotlib: pip install "tinygpt[plot]"')
        extra = ["--png", str(tmp_path / "loss.png")]
    result = invoke(cmd, "--model", trained_run, *extra)
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in invoke(cmd, "--help").output.splitlines()
              if line.strip().startswith("-")]
    assert "--model" in listed and "--out" not in listed
    refused = invoke(cmd, "--out", trained_run, *extra)                 # no second name for the run
    assert refused.exit_code == 2 and "No such option '--out'" in refused.output


# ----- train -------------------------------------------------------------------------------------

def test_train_help_explains_options():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for opt in ("--preset", "--n-layer", "--n-head", "--n-embd", "--block-size", "--batch-size",
                "--max-iters", "--lr", "--min-lr", "--warmup-iters", "--weight-decay",
                "--grad-clip", "--dropout", "--eval-interval", "--eval-iters", "--seed", "--out",
                "--data", "--threads", "--resume"):
        assert opt in result.output, opt


def test_train_for_20_iterations(trained):
    out, result = trained
    assert "best val loss" in result.output.splitlines()[-1]
    assert "wall time" in result.output.splitlines()[-1]
    with open(out / "metrics.csv") as f:
        assert [r["iter"] for r in csv.DictReader(f)] == ["0", "10", "20"]
    from tinygpt.checkpoint import list_checkpoints
    latest = list_checkpoints(out)[-1].path
    assert latest.name == "ckpt-0000020"
    for name in ("model.safetensors", "optimizer.safetensors", "rng.json", "config.json",
                 "manifest.json"):
        assert (latest / name).exists(), name


def test_quiet_still_prints_the_evaluations(tmp_path):
    r = CliRunner().invoke(train_cmd, tiny_args(tmp_path / "run", max_iters=4)[1:])
    assert r.exit_code == 0 and "iter 4: train loss" in r.output


@pytest.mark.parametrize("args, message", [
    (["--max-iters", "0"], "--max-iters"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--preset", "gpt5"], "--preset"),
    (["--dropout", "1.5"], "--dropout"),
    (["--data", "/no/such/file.txt"], "--data"),
    (["--no-such-option"], "no-such-option"),
])
def test_bad_options_exit_2_with_a_message(args, message):
    result = CliRunner().invoke(main, ["train", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("args, code, needle", [
    (["--lr", "inf"], 2, "--lr"),
    (["--lr", "nan"], 2, "--lr"),
    (["--weight-decay", "nan"], 2, "--weight-decay"),
    (["--grad-clip", "nan"], 2, "--grad-clip"),
    (["--dropout", "nan"], 2, "--dropout"),
    (["--seed", "-1"], 2, "--seed"),
    (["--block-size", "100000"], 1, "--block-size"),
    (["--batch-size", "100000"], 1, "--batch-size"),
    (["--n-embd", "30", "--n-head", "4"], 1, "--n-embd"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, code, needle):
    out = tmp_path / "run"
    r = CliRunner().invoke(train_cmd, ["--out", str(out), "--max-iters", "3", *args])
    assert r.exit_code == code, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_n_embd_not_divisible_by_heads(tmp_path):
    result = CliRunner().invoke(main, ["train", "--n-embd", "10", "--n-head", "3", "--quiet",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "divisible" in result.output


def test_unwritable_out_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(train_cmd, ["--out", "/dev/null/x", "--max-iters", "3"])
    assert r.exit_code == 1 and "/dev/null" in r.output and "Traceback" not in r.output


def test_empty_data_names_the_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("")
    r = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "run"), "--data", str(f)])
    assert r.exit_code == 1 and "empty.txt" in r.output and "empty" in r.output


# ----- sample and generate: a training run -------------------------------------------------------

def test_sample_from_the_trained_model(trained_run):
    out = trained_run
    result = CliRunner().invoke(main, ["sample", "--model", str(out), "--prompt", "ROMEO:",
                                       "--max-new-tokens", "30", "--num-samples", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("ROMEO:") == 2
    first = result.output.split("-" * 40)[0]
    assert len(first) >= len("ROMEO:") + 30


def test_sample_is_seeded(trained_run):
    out = trained_run
    args = ["sample", "--model", str(out), "--max-new-tokens", "20", "--seed", "3"]
    a, b = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
    assert a.exit_code == 0 and a.stdout == b.stdout        # stderr has the speed: not compared


def test_sample_prompt_with_unknown_character(trained_run):
    out = trained_run
    result = CliRunner().invoke(main, ["sample", "--model", str(out), "--prompt", "héllo €"])
    assert result.exit_code != 0
    assert "€" in result.output or "é" in result.output


def test_sample_without_checkpoint(tmp_path):
    result = CliRunner().invoke(main, ["sample", "--model", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "config.json" in result.output


@pytest.mark.parametrize("which", ["best", "latest"])
def test_sample_says_which_checkpoint_it_took(trained_run, which):
    want = load_run(trained_run, which=which)[2]["source"]
    args = ["--checkpoint", which] if which != "best" else []
    result = invoke("sample", "--model", trained_run, "--max-new-tokens", "2", *args)
    assert result.exit_code == 0, result.output
    assert want in result.stderr


def test_sample_and_generate_have_the_same_sampling_options():
    for cmd in ("sample", "generate"):
        text = invoke(cmd, "--help").output
        for option in SAMPLING:
            assert option in text, (cmd, option)


def test_sample_and_generate_print_the_same_text(trained_run):
    args = ["--model", trained_run, "--max-new-tokens", "12", "--num-samples", "2", "--seed", "7",
            "--top-k", "0", "--temperature", "0.9"]
    a = invoke("sample", *args, "ROMEO:")
    b = invoke("generate", *args, "--prompt", "ROMEO:")
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:")


def test_top_k_0_means_all_tokens_on_both(trained_run):
    for cmd in ("sample", "generate"):
        result = invoke(cmd, "--model", trained_run, "--top-k", "0", "--max-new-tokens", "3", "--seed", "1",
                        "ROMEO:")
        assert result.exit_code == 0, (cmd, result.output)


@pytest.mark.parametrize("cmd", ["sample", "generate"])
@pytest.mark.parametrize("option, value", [("--seed", "-5"), ("--seed", "-1"),
                                           ("--temperature", "nan"), ("--temperature", "inf"),
                                           ("--top-p", "nan"), ("--top-p", "inf"),
                                           ("--top-k", "-1"), ("--threads", "0"),
                                           ("--max-new-tokens", "0"), ("--num-samples", "0"),
                                           ("--checkpoint", "newest")])
def test_bad_numbers_are_usage_errors_naming_the_option(trained_run, cmd, option, value):
    result = invoke(cmd, "--model", trained_run, option, value, "hi")
    clean_error(result, 2, option)


def test_a_prompt_given_twice_differently_is_a_usage_error(trained_run):
    result = invoke("sample", "--model", trained_run, "--prompt", "a", "b")
    clean_error(result, 2, "--prompt")


def test_sample_with_an_empty_prompt_starts_from_a_newline(trained_run):
    result = invoke("sample", "--model", trained_run, "--prompt", "", "--max-new-tokens", "5", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("\n")


@pytest.mark.parametrize("args", [[""], []])
def test_generate_with_an_empty_or_no_prompt(trained_run, args):
    result = invoke("generate", "--model", trained_run, "--max-new-tokens", "5", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("\n")                   # a char model starts from a newline


def test_an_empty_prompt_without_a_newline_in_the_vocabulary(run_without_newline):
    for cmd in ("sample", "generate"):
        result = invoke(cmd, "--model", run_without_newline, "--prompt", "")
        clean_error(result, 1, "prompt")


@pytest.fixture(scope="module")
def ten_iteration_run(tiny_run):
    return str(tiny_run(max_iters=10))


def test_num_samples_prints_the_samples_one_at_a_time_would(ten_iteration_run):
    from tinygpt import loading
    from tinygpt.cli import main
    r = CliRunner().invoke(main, ["sample", "--model", ten_iteration_run, "--num-samples", "3", "--seed", "5",
                                  "--max-new-tokens", "20", "ROMEO:"])
    assert r.exit_code == 0, r.output
    model, tok, _ = loading.load_model(ten_iteration_run)
    ids = tok.encode("ROMEO:")
    want = ["ROMEO:" + tok.decode(list(generate(model, ids, 20, temperature=0.8, top_k=200,
                                                seed=5 + n, vocab_size=tok.vocab_size)))
            for n in range(3)]
    assert r.stdout == "\n".join(want[:1] + [s for w in want[1:] for s in ("-" * 40, w)]) + "\n"
    assert "3 samples decoded together" in r.stderr


def test_sample_a_run_whose_tokenizer_disagrees_with_the_weights(trained_run, copy_run, tmp_path):
    bad = copy_run(trained_run, "bad")

    def trim(d):
        d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    edit_configs(bad, trim)
    for args in (["sample", "--model", bad], ["generate", "--model", bad, "a"],
                 ["export", "--model", bad, "--to", tmp_path / "hf"]):
        clean_error(invoke(*args, "--max-new-tokens", "20") if args[0] != "export" else
                    invoke(*args), 1, "config.json")
    assert not (tmp_path / "hf").exists()


# ----- sample and generate: a Hugging Face directory ---------------------------------------------

def greedy(model, ids, n, stop):
    ids, out = list(ids), []
    for _ in range(n):
        nxt = int(np.argmax(logits(model, ids[-model.config.block_size:])[-1]))
        if nxt == stop:
            break
        ids.append(nxt)
        out.append(nxt)
    return out


def test_generate_command_streams_the_greedy_continuation(hf_dir, hf_source):
    tok = GPT2Tokenizer.from_tiktoken()
    prompt = "Hello, I'm a language model,"
    result = CliRunner().invoke(main, ["generate", "--model", str(hf_dir), "--temperature", "0",
                                       "--max-new-tokens", "40", prompt])
    assert result.exit_code == 0, result.output
    want = tok.decode(greedy(hf_source, tok.encode(prompt), 40, tok.eot_token))
    assert result.stdout == prompt + want + "\n"     # 40 tokens: past block_size 32 too
    assert "tokens/s" in result.stderr


def test_generate_command_with_a_seed_is_repeatable(hf_dir):
    args = ["generate", "--model", str(hf_dir), "--max-new-tokens", "10", "--seed", "3", "Hi"]
    a, b = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
    assert a.exit_code == 0 and a.stdout == b.stdout
    two = CliRunner().invoke(main, args + ["--num-samples", "2"])
    first, second = two.stdout.split("-" * 40 + "\n")
    assert first == a.stdout and second.startswith("Hi") and second != first   # seeds 3 and 4


def test_commands_accept_a_training_checkpoint(tmp_path, hf_source):
    out = write_checkpoint(tmp_path / "out", hf_source, {"type": "gpt2"})
    tok = GPT2Tokenizer.from_tiktoken()
    result = CliRunner().invoke(main, ["generate", "--model", str(out), "--temperature", "0",
                                       "--max-new-tokens", "6", "Hi"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hi" + tok.decode(greedy(hf_source, tok.encode("Hi"), 6, tok.eot_token)) + "\n"


def test_generate_command_reports_a_bad_model_cleanly(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--model", str(tmp_path), "Hi"])
    assert result.exit_code == 1 and "config.json" in result.output and "Traceback" not in result.output


def test_generate_an_empty_prompt_on_a_bpe_model_is_a_new_document(bpe_export):
    _, hf = bpe_export
    result = invoke("generate", "--model", hf, "--max-new-tokens", "3", "--no-stop-at-eot", "")
    assert result.exit_code == 0, result.output


def test_sample_streams_whole_characters_from_a_bpe_run(bpe_export, monkeypatch):
    """A run with GPT-2's tokenizer emits "é" and "世" as separate byte tokens; `sample` must
    print the characters, not U+FFFD for each half (oracle: decoding all bytes at once)."""
    bpe_run, _ = bpe_export
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


def test_generate_a_hugging_face_dir_whose_char_vocabulary_is_cut(trained_run, tmp_path):
    result = invoke("export", "--model", trained_run, "--to", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    path = tmp_path / "hf" / "tinygpt_char_vocab.json"
    d = json.loads(path.read_text(encoding="utf-8"))
    d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    path.write_text(json.dumps(d), encoding="utf-8")
    clean_error(invoke("generate", "--model", tmp_path / "hf", "--max-new-tokens", "20", "a"), 1,
                "tinygpt_char_vocab.json")


# ----- perplexity --------------------------------------------------------------------------------

def test_perplexity_command(tmp_path, hf_dir, hf_source):
    tok = GPT2Tokenizer.from_tiktoken()
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 4
    f = tmp_path / "text.txt"
    f.write_text(text, encoding="utf-8")
    ids = tok.encode(text)
    assert len(ids) > 40
    result = CliRunner().invoke(main, ["perplexity", "--model", str(hf_dir), str(f),
                                       "--stride", "8", "--max-tokens", "40"])
    assert result.exit_code == 0, result.output
    got = float(re.search(r"perplexity ([0-9.]+)", result.stdout).group(1))
    want, count = perplexity_oracle(hf_source, ids[:40], 8)        # two windows: 0-32, 8-40
    assert count == 39 and got == pytest.approx(want, rel=1e-4)
    assert "over 39 tokens" in result.stdout and "tokens/s" in result.stdout
    assert "scored [" in result.stderr and "39/39" in result.stderr   # the progress display


def test_perplexity_command_errors(tmp_path, hf_dir):
    f = tmp_path / "one.txt"
    f.write_text("a", encoding="utf-8")
    result = CliRunner().invoke(main, ["perplexity", "--model", str(hf_dir), str(f)])
    assert result.exit_code == 1 and "at least 2" in result.output
    result = CliRunner().invoke(main, ["perplexity", "--model", str(hf_dir), str(f),
                                       "--stride", "33"])
    assert result.exit_code == 1 and "--stride 33" in result.output


# ----- export ------------------------------------------------------------------------------------

def test_export_says_which_checkpoint_it_took(trained_run, tmp_path):
    want = load_run(trained_run, which="best")[2]["source"]
    result = invoke("export", "--model", trained_run, "--to", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert want in result.stderr


@pytest.mark.parametrize("to", ["/proc/tinygpt-export", "/dev/null/x", "FILE"])
def test_export_to_a_place_it_cannot_write(trained_run, tmp_path, to):
    if to == "FILE":
        to = tmp_path / "afile"
        to.write_text("mine")
    result = invoke("export", "--model", trained_run, "--to", to)
    clean_error(result, 1, "--to", str(to))
    if to == tmp_path / "afile":
        assert to.read_text() == "mine"


# ----- inspect -----------------------------------------------------------------------------------

def test_inspect_a_hugging_face_directory(inspect_hf_dir):
    result = CliRunner().invoke(main, ["inspect", "--model", str(inspect_hf_dir), "--layer", "1",
                                       "--head", "1", "--top-k", "3", "Hello world"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "id 15496" in out and "id 995" in out            # "Hello", " world" in GPT-2's BPE
    assert "wte.weight (50257, 16)" in out and "wpe.weight (24, 16)" in out
    assert "att (1, 2, 2, 2)" in out                        # (B, nh, T, T) for T = 2
    assert "attention of layer 1, head 1" in out
    top = [line for line in out.splitlines() if line.strip()[:3] in ("1. ", "2. ", "3. ")]
    assert len([line for line in top if "%" in line]) == 3


def test_inspect_a_training_checkpoint(two_layer_run):
    result = CliRunner().invoke(main, ["inspect", "--model", str(two_layer_run), "--layer", "-1",
                                       "ROMEO:"])
    assert result.exit_code == 0, result.output
    assert "the prompt is 6 tokens" in result.output
    assert "attention of layer 1, head 0" in result.output   # -1 is the last of 2 layers


def test_inspect_crops_a_long_prompt_to_the_context(two_layer_run):
    result = CliRunner().invoke(main, ["inspect", "--model", str(two_layer_run), "a" * 40])
    assert result.exit_code == 0, result.output
    assert "using the last 16" in result.output
    assert "the prompt is 16 tokens" in result.output


@pytest.mark.parametrize("args, message", [
    (["--layer", "2"], "--layer 2 is out of range: this model has 2 layers"),
    (["--head", "-3"], "--head -3 is out of range: this model has 2 heads"),
])
def test_inspect_names_the_valid_range(two_layer_run, args, message):
    result = CliRunner().invoke(main, ["inspect", "--model", str(two_layer_run), *args, "hi"])
    assert result.exit_code == 1
    assert message in result.output


def test_inspect_unknown_model_says_what_to_give(tmp_path):
    result = CliRunner().invoke(main, ["inspect", "--model", str(tmp_path / "nope"), "hi"])
    assert result.exit_code == 1
    assert "neither a directory nor a GPT-2 name" in result.output


def test_inspect_png(inspect_hf_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="PNG output needs the optional extra `plot`")
    png = tmp_path / "att.png"
    result = CliRunner().invoke(main, ["inspect", "--model", str(inspect_hf_dir), "--png", str(png),
                                       "The cat sat"])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"saved the 2 heads of layer 0 to {png}" in result.output


def without_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # `import matplotlib` now fails


def test_inspect_png_without_matplotlib_says_how_to_install(inspect_hf_dir, tmp_path, monkeypatch):
    without_matplotlib(monkeypatch)
    result = CliRunner().invoke(main, ["inspect", "--model", str(inspect_hf_dir), "--png",
                                       str(tmp_path / "a.png"), "Hi"])
    assert result.exit_code == 1
    assert 'pip install "tinygpt[plot]"' in result.output
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("cmd", ["plot", "inspect"])
@pytest.mark.parametrize("png, words", [("nodir/x.png", ["--png", "nodir"]),
                                        ("x.foo", ["--png", ".foo", "png", "svg"]),
                                        ("x", ["--png", "png"])])
def test_png_is_checked_before_any_work(trained_run, tmp_path, cmd, png, words):
    pytest.importorskip("matplotlib", reason='--png needs matplotlib: pip install "tinygpt[plot]"')
    args = ["--model", trained_run, "--png", tmp_path / png]
    if cmd == "inspect":
        args.append("ROMEO:")
    result = invoke(cmd, *args)
    clean_error(result, 2, *words)
    assert "loading" not in result.output and "evaluations" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----- plot --------------------------------------------------------------------------------------

def test_plot_writes_loss_png(two_layer_run, copy_run, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs the optional extra `plot`")
    run_dir = copy_run(two_layer_run)                         # loss.png is written into it
    result = CliRunner().invoke(main, ["plot", "--model", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3 evaluations" in result.output                  # iterations 0, 10, 20
    other = tmp_path / "curves.png"
    result = CliRunner().invoke(main, ["plot", "--model", str(run_dir), "--png", str(other)])
    assert result.exit_code == 0 and other.exists()


def test_plot_without_matplotlib_exits_1_with_the_install_line(two_layer_run, monkeypatch, tmp_path):
    without_matplotlib(monkeypatch)
    target = tmp_path / "loss.png"
    result = CliRunner().invoke(main, ["plot", "--model", str(two_layer_run), "--png", str(target)])
    assert result.exit_code == 1
    assert 'pip install "tinygpt[plot]"' in result.output
    assert not target.exists()


def test_plot_missing_metrics_names_the_file(tmp_path):
    result = CliRunner().invoke(main, ["plot", "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert str(tmp_path / "metrics.csv") in result.output
    assert "not found" in result.output


def test_plot_rejects_a_csv_of_another_kind(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n1,2.0\n")
    result = CliRunner().invoke(main, ["plot", "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert "val_loss" in result.output


def test_plot_a_metrics_file_that_is_not_utf8(tmp_path):
    (tmp_path / "metrics.csv").write_bytes(b"iter,train_loss,val_loss\n0,\xff\xfe,1\n")
    result = invoke("plot", "--model", tmp_path)
    clean_error(result, 1, "metrics.csv", "UTF-8")
    assert not (tmp_path / "loss.png").exists()


# ----- prepare -----------------------------------------------------------------------------------

def test_cli_prepare(tmp_path, shakespeare):
    (tmp_path / "in.txt").write_text(shakespeare[:30_000], encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(prepare_cmd, [str(tmp_path / "in.txt"), "--out", str(tmp_path / "d"), "--quiet",
                                         "--val-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    assert "24,000 train + 6,000 val tokens (uint16" in result.output
    assert f"tinygpt train --data {tmp_path / 'd'}" in result.output
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["val_fraction"] == 0.2

    result = runner.invoke(prepare_cmd, [str(tmp_path), "--out", str(tmp_path / "e"), "--tokenizer", "gpt2",
                                         "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output                  # a directory holding in.txt

    for args, code, message in [
        ([str(tmp_path / "in.txt"), "--out", str(tmp_path / "f"), "--val-fraction", "1"], 2, "--val-fraction"),
        ([str(tmp_path / "in.txt"), "--out", str(tmp_path / "f"), "--val-fraction", "nan"], 2, "--val-fraction"),
        ([str(tmp_path / "missing.txt"), "--out", str(tmp_path / "f")], 2, "does not exist"),
        ([str(tmp_path / "in.txt")], 2, "--out"),
        ([str(tmp_path / "d"), "--out", str(tmp_path / "f")], 1, "no *.txt files"),
    ]:
        result = runner.invoke(prepare_cmd, args)
        assert result.exit_code == code and message in result.output, (args, result.output)


# ----- sizes that multiply into memory, threads, Ctrl-C, unreadable files ------------------------

@pytest.mark.parametrize("cmd", [["generate"], ["sample"], ["inspect"], ["perplexity", "README.md"]])
def test_threads_above_the_usable_cores_is_a_usage_error(monkeypatch, hf_dir, cmd):
    from tensor.kernels import threads
    monkeypatch.setattr(threads, "_cpu_cores", lambda: [0, 1])      # a 2-core affinity mask
    for n in ("3", "100000000000000000000"):
        result = invoke(*cmd, "--model", hf_dir, "--threads", n, "hi")
        clean_error(result, 2, f"--threads {n}: this process may use 2 cores", "--threads 2 or fewer")


def test_usable_cores_is_the_affinity_mask(monkeypatch):
    import os

    from tensor.kernels import threads
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert threads.usable_cores() == 3


def test_an_absurd_num_samples_is_refused_before_the_model_is_loaded(hf_dir):
    result = invoke("generate", "--model", hf_dir, "--num-samples", "100000000000000000000", "hi")
    clean_error(result, 2, "--num-samples", "100000000000000000000")
    assert "loading" not in result.output


def test_a_sample_that_cannot_fit_in_memory_is_a_one_line_error(trained_run, monkeypatch):
    import tinygpt.train
    result = invoke("sample", "--model", trained_run, "--max-new-tokens", "100000000000000000000")
    clean_error(result, 1, "--max-new-tokens 100,000,000,000,000,000,000", "is available")
    calls = []                      # enough for the weights (the first look), not for a sample
    monkeypatch.setattr(tinygpt.train, "available_memory",
                        lambda: 10**9 if not calls.append(1) and len(calls) == 1 else 1000)
    result = invoke("sample", "--model", trained_run, "--max-new-tokens", "5")
    clean_error(result, 1, "one sample needs about", "1.0 kB is available")


def _row_bytes(run, prompt_tokens, new):
    from tinygpt.generate import generation_bytes
    model = load_run(run)[0]
    return sum(generation_bytes(model.config, prompt_tokens, new).values())


def test_num_samples_that_do_not_fit_together_are_decoded_in_batches(ten_iteration_run,
                                                                     monkeypatch):
    import tinygpt.generate as gen
    import tinygpt.train
    from tinygpt import loading
    rows, batch = [], gen.generate_batch
    monkeypatch.setattr(gen, "generate_batch", lambda m, prompts, *a, **k:
                        rows.append(len(prompts)) or batch(m, prompts, *a, **k))
    # memory for two rows at a time (generation takes half of what is available)
    two_rows = 2 * 2 * _row_bytes(ten_iteration_run, 6, 20) + 1
    monkeypatch.setattr(tinygpt.train, "available_memory", lambda: two_rows)
    r = invoke("sample", "--model", ten_iteration_run, "--num-samples", "5", "--seed", "5",
               "--max-new-tokens", "20", "ROMEO:")
    assert r.exit_code == 0, r.output
    model, tok, _ = loading.load_model(ten_iteration_run)
    ids = tok.encode("ROMEO:")
    want = ["ROMEO:" + tok.decode(list(generate(model, ids, 20, temperature=0.8, top_k=200,
                                                seed=5 + n, vocab_size=tok.vocab_size)))
            for n in range(5)]
    assert r.stdout == "\n".join(want[:1] + [s for w in want[1:] for s in ("-" * 40, w)]) + "\n"
    assert rows == [2, 2]                       # the fifth sample is streamed on its own
    assert "5 samples, decoded 2 at a time" in r.stderr


def test_ctrl_c_stops_every_batch_and_says_so(ten_iteration_run, monkeypatch):
    import tinygpt.generate as gen
    import tinygpt.train
    calls, batch = [], gen.generate_batch

    def interrupted(m, prompts, *a, **k):
        calls.append(len(prompts))
        for i, step in enumerate(batch(m, prompts, *a, **k)):
            if i == 3:
                raise KeyboardInterrupt
            yield step
    two_rows = 2 * 2 * _row_bytes(ten_iteration_run, 6, 20) + 1
    monkeypatch.setattr(gen, "generate_batch", interrupted)
    monkeypatch.setattr(tinygpt.train, "available_memory", lambda: two_rows)
    r = invoke("sample", "--model", ten_iteration_run, "--num-samples", "4", "--seed", "1",
               "--max-new-tokens", "20", "ROMEO:")
    clean_error(r, 0)
    assert calls == [2]                          # the second batch never started
    first, second = r.stdout.split("-" * 40 + "\n")
    assert len(first) == len("ROMEO:") + 3 + 1 and len(second) == len("ROMEO:") + 3 + 1
    assert "6 tokens" in r.stderr and "stopped by Ctrl-C" in r.stderr


@pytest.mark.parametrize("cmd", [["generate", "hi"], ["inspect", "hi"], ["perplexity", "README.md"]])
def test_an_unreadable_weights_file_is_a_one_line_error(tmp_path, hf_source, cmd):
    from helpers import write_hf_dir
    d = write_hf_dir(tmp_path / "m", hf_source)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()            # reading it is an OSError, as chmod 000 is
    result = invoke(cmd[0], "--model", d, *cmd[1:])
    clean_error(result, 1, f"cannot read {d / 'model.safetensors'}")


def test_a_one_token_file_says_token_not_tokens(trained_run, tmp_path):
    (tmp_path / "one.txt").write_text("a")
    result = invoke("perplexity", "--model", trained_run, tmp_path / "one.txt")
    clean_error(result, 1, "holds 1 token;")
