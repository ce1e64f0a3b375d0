"""The docs point into the code, and the code they point to exists.

Convention for docs/*.md, README.md and benchmarks/README.md (checked here):
  - every relative link [text](path) resolves to a file or directory of the repository, and a
    link with an #anchor into a .md file names one of its headings;
  - a link whose text is a name in backticks, [`name`](../path.py), says "`name` is defined in
    path.py": the file must define it (def, class, or a module-level assignment). A dotted
    [`Class.method`](../path.py) must be a method of that class.
  - every ```python block of docs/*.md runs.
README.md's layout table ("What is inside") names every file of tensor/, tensor/kernels/,
tinygpt/ and tinygpt/cli/, and only files that exist; its set-up block shows the test command
that CI runs.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
MARKDOWN = DOCS + [md for md in (README, ROOT / "benchmarks" / "README.md") if md.exists()]
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
CODE_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)`")
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def links(md: Path):
    """(text, target) of every link outside code blocks and inline code."""
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    return [(m[1], m[2]) for m in LINK.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(md: Path) -> set:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def definitions(py: Path) -> set:
    """Names defined in a Python file: functions and classes at any depth (methods as
    Class.method too), and module-level assignments."""
    tree = ast.parse(py.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{item.name}" for item in node.body
                         if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def shown(md: Path) -> str:
    """A markdown file's path as the messages show it: relative to the repository."""
    return str(md.relative_to(ROOT)) if ROOT in md.parents else md.name


def problems(md: Path) -> list:
    """Every broken link or missing name in one markdown file, as messages."""
    found = []
    name_of_md = shown(md)
    for text, target in links(md):
        if re.match(r"[a-z]+:", target):          # http:, https:, mailto:: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        path = (md.parent / path_part).resolve() if path_part else md
        if ROOT not in path.parents and path != ROOT:
            found.append(f"{name_of_md}: link {target} leaves the repository")
            continue
        if not path.exists():
            found.append(f"{name_of_md}: link {target} -> {path.relative_to(ROOT)} does not exist")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            found.append(f"{name_of_md}: link {target}: no heading #{anchor} in {path.name}")
        name = CODE_NAME.fullmatch(text)
        if name and path.suffix == ".py" and name[1] not in definitions(path):
            found.append(f"{name_of_md}: [`{name[1]}`]({target}): {path.relative_to(ROOT)} defines "
                         f"no {name[1]}")
    return found


def test_there_are_docs():
    assert {p.name for p in DOCS} >= {"backprop.md", "gpt2.md"}


@pytest.mark.parametrize("md", MARKDOWN, ids=shown)
def test_links_resolve_and_named_code_exists(md):
    assert problems(md) == []


@pytest.mark.parametrize("md", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(md):
    for i, block in enumerate(PYTHON_BLOCK.findall(md.read_text(encoding="utf-8"))):
        exec(compile(block, f"{md.name}, python block {i}", "exec"), {})


def linked_names(md: Path) -> set:
    return {f"{Path(target).name}:{m[1]}" for text, target in links(md)
            if (m := CODE_NAME.fullmatch(text))}


def test_backprop_doc_covers_the_ops_the_issue_lists():
    names = linked_names(ROOT / "docs" / "backprop.md")
    wanted = ["functional.py:" + op for op in ("unbroadcast", "add", "matmul", "softmax",
              "log_softmax", "cross_entropy", "layer_norm", "gelu", "embedding", "getitem")]
    wanted += ["model.py:CausalSelfAttention.forward", "gradcheck.py:gradcheck",
               "tensor.py:Tensor.backward", "graph.py:to_dot"]
    assert [w for w in wanted if w not in names] == []


def test_gpt2_doc_points_at_each_step_of_the_model():
    names = linked_names(ROOT / "docs" / "gpt2.md")
    wanted = ["model.py:GPT.forward", "model.py:Block.forward",
              "model.py:CausalSelfAttention.forward", "model.py:MLP", "model.py:KVCache",
              "functional.py:embedding", "functional.py:softmax", "functional.py:gelu",
              "functional.py:layer_norm", "softmax.py:causal_mask", "generate.py:sample_next",
              "params.py:count_parameters", "inspect.py:attention_maps"]
    assert [w for w in wanted if w not in names] == []


def test_the_checker_catches_broken_links(tmp_path, monkeypatch):
    """The checks above can fail: a missing file, a missing name, a missing heading."""
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg.py").write_text("class A:\n    def f(self): pass\n\nX = 1\n\ndef g(): pass\n")
    md = tmp_path / "docs" / "t.md"
    md.write_text("# Top\n[`A.f`](../pkg.py) [`X`](../pkg.py) [`g`](../pkg.py) [t](#top)\n"
                  "[`A.h`](../pkg.py) [`nope`](../pkg.py) [x](../missing.py) [t](t.md#nowhere)\n"
                  "[web](https://example.org)\n```\n[`in_code`](../nothing.py)\n```\n")
    found = problems(md)
    assert len(found) == 4, found
    for needle in ("no A.h", "no nope", "missing.py does not exist", "no heading #nowhere"):
        assert any(needle in f for f in found), needle


# ---------------------------------------------------------------------------------------------
# README.md: the layout table against the files on disk; the test command against CI's
# ---------------------------------------------------------------------------------------------
LAYOUT_HEADING = "## What is inside"
LAYOUT_DIRS = ("tensor", "tensor/kernels", "tinygpt", "tinygpt/cli")   # every file named
LAYOUT_FOLDERS = ("examples/", "benchmarks/", "docs/")                 # named as folders
TABLE_PATH = re.compile(r"`([^`]+)`")


def layout_paths(text: str) -> set:
    """The paths in backticks in the first cell of each row of the layout section's table."""
    start = text.index(LAYOUT_HEADING)
    end = text.find("\n## ", start + len(LAYOUT_HEADING))
    section = text[start:end if end != -1 else len(text)]
    return {path for line in section.splitlines() if line.startswith("| `")
            for path in TABLE_PATH.findall(line.split("|")[1])}


def unlisted(paths: set, root: Path, dirs=LAYOUT_DIRS, folders=LAYOUT_FOLDERS) -> list:
    """Files of `dirs` (and `folders`) on disk that the layout table does not name. A
    subdirectory counts as named when the table names it (`tinygpt/data/`) or files in it."""
    found = [f for f in folders if f not in paths]
    for d in dirs:
        if not (root / d).is_dir():
            continue                  # not there (yet): `missing` reports the rows naming it
        for entry in sorted((root / d).iterdir()):
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            rel = f"{d}/{entry.name}"
            if entry.is_dir():
                if not any(p == rel + "/" or p.startswith(rel + "/") for p in paths):
                    found.append(rel + "/")
            elif rel not in paths:
                found.append(rel)
    return found


def missing(paths: set, root: Path) -> list:
    """Paths the layout table names that do not exist."""
    return sorted(p for p in paths if not (root / p).exists())


def test_readme_layout_table_names_every_file():
    """Add a file to tensor/ or tinygpt/ and this fails until the README's table says what it is."""
    assert unlisted(layout_paths(README.read_text(encoding="utf-8")), ROOT) == []


def test_readme_layout_table_names_only_files_that_exist():
    assert missing(layout_paths(README.read_text(encoding="utf-8")), ROOT) == []


def test_the_layout_checks_can_fail(tmp_path):
    for rel in ("pkg/a.py", "pkg/b.py", "pkg/sub/c.py", "pkg/data/x.txt", "pkg/__pycache__/a.pyc",
                "pkg/.hidden", "ex/e.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    text = (f"# t\n{LAYOUT_HEADING}\n| path | what |\n| --- | --- |\n| `pkg/a.py` | a |\n"
            "| `pkg/sub/c.py` | c |\n| `pkg/gone.py` | gone |\n| `ex/` | examples |\n"
            "## Next\n| `pkg/b.py` | outside the section |\n")
    paths = layout_paths(text)
    assert paths == {"pkg/a.py", "pkg/sub/c.py", "pkg/gone.py", "ex/"}
    assert unlisted(paths, tmp_path, dirs=("pkg", "pkg/sub", "nowhere"),
                    folders=("ex/", "docs/")) == ["docs/", "pkg/b.py", "pkg/data/"]
    assert missing(paths, tmp_path) == ["pkg/gone.py"]


def test_readme_shows_the_test_command_ci_runs():
    """.ci/run runs "exactly the test command that README.md shows": `pytest`, in the set-up block."""
    setup = re.search(r"## Set up\n+```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    commands = [line.split("#")[0].strip() for line in setup[1].splitlines()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert "pytest" in commands and ci[-1] == "pytest"


# ---------------------------------------------------------------------------------------------
# The op table of docs/backprop.md (section 6) against tensor.OPS and the @covers registry
# ---------------------------------------------------------------------------------------------
OP_TABLE_HEADING = "## 6. Every op: its code and its test"
ROW = re.compile(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|(.*)$", re.M)


def op_table(text: str) -> dict:
    """{op: ["module::test", ...]} from the rows of the op table section: the op in backticks in
    the first cell, the tests as links into tests/ anywhere in the row."""
    start = text.index(OP_TABLE_HEADING)
    end = text.find("\n## ", start + len(OP_TABLE_HEADING))
    section = text[start:end if end != -1 else len(text)]
    table = {}
    for op, rest in ROW.findall(section):
        table[op] = [f"{Path(target).stem}::{m[1]}" for name, target in LINK.findall(rest)
                     if "tests/" in target and (m := CODE_NAME.fullmatch(name))]
    return table


def op_table_problems(table: dict, ops, other_names, covered: dict) -> list:
    """Ops missing from the table, rows without a test, and tests not registered for their op."""
    found = [f"`{op}` has no row in the op table" for op in (*ops, *other_names)
             if op not in table]
    found += [f"`{op}`'s row names no test" for op in table if not table[op]]
    found += [f"`{op}`'s row names {t}, which is not a @covers({op!r}) test"
              for op in ops if op in table for t in table[op] if t not in covered.get(op, ())]
    return found


def test_backprop_doc_has_a_row_for_every_op_with_its_registered_test():
    import tensor
    import ops_helpers                                    # the @covers registry
    table = op_table((ROOT / "docs" / "backprop.md").read_text(encoding="utf-8"))
    assert op_table_problems(table, tensor.OPS, tensor.NON_DIFFERENTIABLE + tensor.CREATION,
                             ops_helpers.registry()) == []
    assert [op for op in table if not hasattr(tensor, op)] == []


def test_the_op_table_check_can_fail():
    text = (f"# t\n{OP_TABLE_HEADING}\n| op | code | test |\n| --- | --- | --- |\n"
            "| `add` | x | [`test_grad_binary`](../tests/test_ops_grad.py) |\n"
            "| `mul` | x | [`test_grad_unary`](../tests/test_ops_grad.py) |\n"
            "| `eq` | x | – |\n## 7. Next\n| `sub` | x | [`test_a`](../tests/test_a.py) |\n")
    table = op_table(text)
    assert table == {"add": ["test_ops_grad::test_grad_binary"],
                     "mul": ["test_ops_grad::test_grad_unary"], "eq": []}
    covered = {"add": ["test_ops_grad::test_grad_binary"],
               "mul": ["test_ops_grad::test_grad_binary"], "sub": ["test_a::test_a"]}
    found = op_table_problems(table, ("add", "mul", "sub"), ("eq", "zeros"), covered)
    assert sorted(found) == sorted([
        "`sub` has no row in the op table", "`zeros` has no row in the op table",
        "`eq`'s row names no test",
        "`mul`'s row names test_ops_grad::test_grad_unary, which is not a @covers('mul') test"])
