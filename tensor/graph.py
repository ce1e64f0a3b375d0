"""Draw the computation graph behind a tensor, as Graphviz DOT.

    x = tensor.randn(4, 3, requires_grad=True)
    w = tensor.randn(3, 2, requires_grad=True)
    loss = (x @ w).relu().sum()
    draw_graph(loss, "graph.svg", names={"x": x, "w": w})   # graph.dot, and graph.svg if `dot` is installed

Every op is one box, labelled with its name and its output's shape; the leaves it started from
are ovals: parameters (requires_grad=True) in green, inputs and constants in grey. Arrows go
from inputs to outputs, the way the forward pass ran; backward walks them in reverse.

Draw BEFORE calling .backward(): to save memory, backward() frees the graph as it goes (each
node forgets its parents and its backward closure), unless you call backward(retain_graph=True).
A tensor computed under no_grad(), or only from tensors that need no gradient, has no graph.
"""
from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

from .tensor import Tensor, topological_order

RENDER_FORMATS = ("svg", "png", "pdf")


def _walk(root: Tensor) -> list:
    """Every tensor in root's graph, each after all of its parents, including the parents that
    need no gradient (constants), which backward's walk skips."""
    return topological_order(root)


def _quote(text: str) -> str:
    """A DOT string literal: double quotes and backslashes escaped, newlines as \\n."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(n) for n in t.shape) + ("," if t.ndim == 1 else "") + ")"


def _check_has_graph(t: Tensor) -> None:
    if t._op and not t._parents:
        if t.requires_grad and t._backward is not None:    # backward() replaced it, cut parents
            raise ValueError(f"to_dot: the graph behind this {t._op} output {_shape(t)} was freed "
                             f"by .backward(); draw it before calling backward(), or call "
                             f"backward(retain_graph=True)")
        raise ValueError(f"to_dot: this {t._op} output {_shape(t)} has no graph: it was computed "
                         f"under no_grad(), or from tensors that do not require gradients. Give "
                         f"a leaf requires_grad=True (nn.Parameter does) to record one")


def to_dot(t: Tensor, names: dict | None = None, title: str = "graph") -> str:
    """The graph that computed `t`, as Graphviz DOT text: one box per op (op name, output shape),
    one oval per leaf. names: {label: tensor}, e.g. dict(model.named_parameters()), to label
    leaves (or op outputs) by name."""
    if not isinstance(t, Tensor):
        raise TypeError(f"to_dot: expected a Tensor, got {type(t).__name__}")
    _check_has_graph(t)
    label_of = {id(v): k for k, v in (names or {}).items() if isinstance(v, Tensor)}
    nodes = _walk(t)
    node_id = {id(n): f"n{i}" for i, n in enumerate(nodes)}

    lines = [f"digraph {_quote(title)} {{",
             "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10];']
    for n in nodes:
        name = label_of.get(id(n))
        if n._op:                                  # an op: its name and its output's shape
            text = n._op + (f"\n{name}" if name else "") + f"\n{_shape(n)}"
            style = 'shape=box, style="rounded,filled", fillcolor="#dbe9f6"'
        else:                                      # a leaf: what it is and its shape
            if n.size == 1 and not n.requires_grad and not name:   # e.g. the 2 in `x * 2`
                text = f"constant {n.data.item():.4g}"
            else:
                kind = ("parameter" if type(n).__name__ == "Parameter"
                        else "input (requires grad)" if n.requires_grad else "input / constant")
                text = (name or kind) + f"\n{_shape(n)} {n.dtype}"
            fill = "#d5f0d5" if n.requires_grad else "#eeeeee"
            style = f'shape=ellipse, style=filled, fillcolor="{fill}"'
        lines.append(f"  {node_id[id(n)]} [label={_quote(text)}, {style}];")
    for n in nodes:
        for p in n._parents:                       # one arrow per use: x * x gets two
            lines.append(f"  {node_id[id(p)]} -> {node_id[id(n)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_graph(t: Tensor, path, names: dict | None = None) -> Path:
    """Write the graph of `t` to `path`: a .dot file always; for path ending in .svg, .png or
    .pdf also the picture, rendered by Graphviz's `dot` program when it is on PATH.

    Returns the path of the picture, or of the .dot file when only that was written (a
    RuntimeWarning then says how to render it)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in RENDER_FORMATS + ("dot", "gv"):
        raise ValueError(f"draw_graph: {path} should end in .dot, .svg, .png or .pdf")
    dot_path = path if fmt in ("dot", "gv") else path.with_suffix(".dot")
    dot_path.write_text(to_dot(t, names), encoding="utf-8")
    if dot_path == path:
        return dot_path
    exe = shutil.which("dot")
    if exe is None:
        warnings.warn(f"Graphviz's `dot` program is not on PATH, so only {dot_path} was written. "
                      f"Install Graphviz (apt install graphviz, brew install graphviz, or "
                      f"https://graphviz.org/download) and run: dot -T{fmt} {dot_path} -o {path}",
                      RuntimeWarning, stacklevel=2)
        return dot_path
    done = subprocess.run([exe, f"-T{fmt}", str(dot_path), "-o", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"draw_graph: `dot -T{fmt} {dot_path} -o {path}` failed "
                           f"(exit {done.returncode}): {done.stderr.strip()}")
    return path
