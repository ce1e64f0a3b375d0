"""tensor/graph.py: the DOT text of a computation graph, and rendering it with Graphviz.

The DOT is checked with a small parser of the subset we write (below), and, when Graphviz is
installed, by `dot` itself. The expected node and edge counts come from the expressions.
"""
import re
import shutil
import subprocess

import numpy as np
import pytest

import tensor
from tensor import graph
from tensor.graph import draw_graph, to_dot
from tinygpt.model import GPT, GPTConfig

HAS_DOT = shutil.which("dot") is not None

NODE = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)", (.*)\];$')
EDGE = re.compile(r"^\s*(n\d+) -> (n\d+);$")


def parse(dot: str):
    """{node id: (label, attributes)} and [(from, to)], from DOT in the form to_dot writes;
    fails on any line it does not understand, on unbalanced braces or on an undeclared node."""
    lines = dot.strip().splitlines()
    assert re.fullmatch(r'digraph "(?:[^"\\]|\\.)*" \{', lines[0]), lines[0]
    assert lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} declared twice"
            label = re.sub(r"\\(.)", lambda e: "\n" if e[1] == "n" else e[1], m[2])
            nodes[m[1]] = (label, m[3])
        elif m := EDGE.match(line):
            edges.append((m[1], m[2]))
        else:
            assert re.fullmatch(r"\s*(rankdir=\w+|node \[.*\]);", line), f"unexpected line {line!r}"
    for a, b in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} names an undeclared node"
    return nodes, edges


def ops(nodes):
    return {k: label for k, (label, attrs) in nodes.items() if "shape=box" in attrs}


def leaves(nodes):
    return {k: label for k, (label, attrs) in nodes.items() if "shape=ellipse" in attrs}


@pytest.fixture
def expression():
    rng = np.random.default_rng(0)
    x = tensor.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    w = tensor.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = tensor.Tensor(rng.standard_normal(4), requires_grad=True)
    out = ((x @ w).tanh() * 2.0 + b).sum()    # 5 ops: matmul, tanh, mul, add, sum
    return out, {"x": x, "w": w, "b": b}


def test_one_node_per_op_with_its_shape(expression):
    out, names = expression
    nodes, edges = parse(to_dot(out, names))
    op_labels = sorted(ops(nodes).values())
    assert [l.split("\n")[0] for l in op_labels] == sorted(["matmul", "tanh", "mul", "add", "sum"])
    shapes = {l.split("\n")[0]: l.split("\n")[-1] for l in op_labels}
    assert shapes == {"matmul": "(2, 4)", "tanh": "(2, 4)", "mul": "(2, 4)", "add": "(2, 4)",
                      "sum": "()"}
    # leaves: x, w, b by name with their shapes, and the constant 2.0
    leaf_labels = sorted(leaves(nodes).values())
    assert leaf_labels == sorted(["x\n(2, 3) float64", "w\n(3, 4) float64", "b\n(4,) float64",
                                  "constant 2"])
    # edges: one per input of each op: matmul 2, tanh 1, mul 2, add 2, sum 1
    assert len(edges) == 8
    into = {k: sum(1 for _, t in edges if t == k) for k in nodes}
    for k, label in ops(nodes).items():
        assert into[k] == {"matmul": 2, "tanh": 1, "mul": 2, "add": 2, "sum": 1}[label.split("\n")[0]]
    for k in leaves(nodes):
        assert into[k] == 0


def test_edges_follow_the_data(expression):
    out, names = expression
    nodes, edges = parse(to_dot(out, names))
    name_of = {k: label.split("\n")[0] for k, (label, _) in nodes.items()}
    pairs = sorted((name_of[a], name_of[b]) for a, b in edges)
    assert pairs == sorted([("x", "matmul"), ("w", "matmul"), ("matmul", "tanh"),
                            ("tanh", "mul"), ("constant 2", "mul"), ("mul", "add"),
                            ("b", "add"), ("add", "sum")])


def test_a_tensor_used_twice_gets_two_edges():
    x = tensor.randn(3, requires_grad=True)
    nodes, edges = parse(to_dot(x * x))
    assert len(ops(nodes)) == 1 and len(leaves(nodes)) == 1
    assert len(edges) == 2 and edges[0] == edges[1]


def test_a_leaf_alone_is_one_node():
    nodes, edges = parse(to_dot(tensor.randn(2, 2, requires_grad=True)))
    assert len(nodes) == 1 and not edges


def test_parameters_are_labelled_as_such():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), seed=0)
    ids = np.array([[1, 2, 3, 4]])
    _, loss = model(ids, np.array([[2, 3, 4, 5]]))
    named = dict(model.named_parameters())
    nodes, _ = parse(to_dot(loss, names=named))
    labels = [label for label, _ in nodes.values()]
    for name, p in named.items():
        shape = "(" + ", ".join(map(str, p.shape)) + ("," if p.ndim == 1 else "") + ")"
        assert f"{name}\n{shape} float32" in labels, name
    op_names = {l.split("\n")[0] for l in ops(nodes).values()}
    assert {"embedding", "layer_norm", "matmul", "gelu", "cross_entropy"} <= op_names
    unnamed = parse(to_dot(loss))[0]
    assert sum(1 for l, _ in unnamed.values() if l.startswith("parameter\n")) == len(named)


def test_deep_graphs_need_no_recursion():
    x = tensor.randn(2, requires_grad=True)
    y = x
    for _ in range(5000):                     # far past Python's recursion limit
        y = y + 1.0
    nodes, edges = parse(to_dot(y))
    assert len(ops(nodes)) == 5000 and len(edges) == 10000


def test_labels_are_escaped():
    x = tensor.randn(2, requires_grad=True)
    nodes, _ = parse(to_dot(x.exp(), names={'say "hi" \\ bye': x}))
    assert 'say "hi" \\ bye\n(2,) float32' in [l for l, _ in nodes.values()]


def test_after_backward_the_graph_is_gone_and_the_error_says_so():
    x = tensor.randn(3, requires_grad=True)
    kept = (x * 2.0).sum()
    kept.backward(retain_graph=True)
    parse(to_dot(kept))                       # retain_graph=True keeps it drawable
    loss = (x * 2.0).sum()
    loss.backward()
    with pytest.raises(ValueError, match="draw it before calling backward"):
        to_dot(loss)


def test_no_graph_under_no_grad():
    x = tensor.randn(3, requires_grad=True)
    with tensor.no_grad():
        y = x * 2.0
    with pytest.raises(ValueError, match="no_grad"):
        to_dot(y)


# ----- draw_graph -----------------------------------------------------------------------------

def test_draw_graph_dot_only(expression, tmp_path):
    out, names = expression
    path = draw_graph(out, tmp_path / "g.dot", names)
    assert path == tmp_path / "g.dot"
    assert path.read_text() == to_dot(out, names)


def test_without_graphviz_the_dot_is_written_and_the_warning_says_how(expression, tmp_path,
                                                                       monkeypatch):
    out, names = expression
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match=r"dot -Tsvg .*g\.dot -o .*g\.svg"):
        path = draw_graph(out, tmp_path / "g.svg", names)
    assert path == tmp_path / "g.dot" and path.exists()
    assert not (tmp_path / "g.svg").exists()


def test_unknown_suffix_is_refused(expression, tmp_path):
    with pytest.raises(ValueError, match=r"\.svg"):
        draw_graph(expression[0], tmp_path / "g.jpeg")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` is not installed")
def test_graphviz_accepts_the_dot(expression):
    out, names = expression
    done = subprocess.run(["dot", "-Tcanon"], input=to_dot(out, names), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` is not installed")
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".png", b"\x89PNG")])
def test_draw_graph_renders(expression, tmp_path, suffix, magic):
    out, names = expression
    path = draw_graph(out, tmp_path / f"g{suffix}", names)
    assert path == tmp_path / f"g{suffix}"
    data = path.read_bytes()
    assert (data.startswith(magic) if magic == b"\x89PNG" else magic in data[:500])
    assert (tmp_path / "g.dot").exists()
