"""Lookups and clean-up over one ONNX graph, for the graph edits (`dfl`, `split_convs`, `pixel_input`).

`copy_for_edit` makes the copy an edit works on. `GraphIndex` says which node makes each
tensor, which nodes read it (a graph output counts as a reader, so nothing the caller of the
model sees is ever edited away), and the value of a constant tensor (an initializer or a
Constant node). `splice` puts an edit's new nodes in place of old ones and removes the weights
and shapes left without readers. No I/O; `onnx` is imported inside.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edge.errors import ModelError


def copy_for_edit(model: Any, prefix: str, where: str, reserved: Iterable[str] = ()) -> Any:
    """A copy of `model` (an `onnx.ModelProto`) to edit; ModelError if it already uses names
    starting with `prefix`, or any of the `reserved` names, for a tensor or a graph input (the
    edit's own names would collide)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {n for node in out.graph.node for n in (*node.input, *node.output)} | {i.name for i in out.graph.input}
    taken = sorted(set(reserved) & names)
    if taken or any(n.startswith(prefix) for n in names):
        what = ", ".join(repr(n) for n in taken) + " or " if taken else ""
        raise ModelError(f"{where}: the model already uses the name {what}{prefix}*")
    return out


def attribute(node: Any, name: str, default: Any) -> Any:
    """The value of a node's attribute, or `default` when it has none of that name."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class GraphIndex:
    """Producer, readers and constants of every tensor of one graph (as it was when indexed)."""

    def __init__(self, graph: Any) -> None:
        self.producer: dict[str, Any] = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        for out in graph.output:
            self.readers.setdefault(out.name, []).append(None)  # read outside the graph
        self.initializers: dict[str, Any] = {t.name: t for t in graph.initializer}

    def read_by(self, name: str) -> list[Any]:
        """The nodes reading tensor `name` (None for the graph's own output)."""
        return self.readers.get(name, [])

    def only_reader(self, name: str, op_type: str) -> Any | None:
        """The one node reading `name` if there is exactly one and it is an `op_type`."""
        users = self.read_by(name)
        if len(users) == 1 and users[0] is not None and users[0].op_type == op_type:
            return users[0]
        return None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output; None for a computed tensor."""
        from onnx import numpy_helper

        if name in self.initializers:
            return np.asarray(numpy_helper.to_array(self.initializers[name]))
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            value = attribute(node, "value", None)
            return None if value is None else np.asarray(numpy_helper.to_array(value))
        return None


def splice(graph: Any, replaced: dict[int, list[Any]], removed: list[Any], params: set[str]) -> None:
    """Rebuild `graph`'s node list: each node whose id is a key of `replaced` gives way to those
    new nodes, in its place (which keeps the order topological, the new nodes reading only what
    came before it), and the `removed` nodes go. Then drop the `params` (weights, shapes) nothing
    reads any more and the shape records of the removed nodes' outputs."""
    dropped = {id(n) for n in removed}
    nodes: list[Any] = []
    for node in graph.node:
        if id(node) in replaced:
            nodes.extend(replaced[id(node)])
        elif id(node) not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph, params, {o for n in removed for o in n.output})


def _drop_unused(graph: Any, candidates: set[str], gone: set[str]) -> None:
    """Remove the `candidates` (initializers, Constant nodes) nothing reads any more, and the
    shape records (`value_info`) of tensors in `gone` or removed. Old IR versions list
    initializers as graph inputs too: those entries go with them."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = candidates - used
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in unused]:
        graph.node.remove(node)
    for field in (graph.initializer, graph.input):
        kept = [t for t in field if t.name not in unused]
        del field[:]
        field.extend(kept)
    records = [v for v in graph.value_info if v.name not in gone and v.name not in unused]
    del graph.value_info[:]
    graph.value_info.extend(records)
