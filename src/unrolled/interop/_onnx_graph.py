"""What :func:`unrolled.interop.onnx.from_onnx` checks before it trusts a graph: that its tensors are
self-contained and of the size they claim, and that the graph *is* a recurrent stack, so that the layer
it returns computes what the graph computes.

A foreign graph must be one chain: graph input -> recurrent node -> ... -> recurrent node -> outputs, with
only layout operations (:data:`LAYOUT_OPS`) on the way. Between two recurrent nodes those operations must
turn ONNX's Y (T, D, B, H) into the next X (T, B, D·H) exactly; this is checked by running them on index
arrays of two different (T, B) sizes. Shape computations (``Shape`` and what is computed from it and from
constants) may feed those operations' shape inputs. The final states may be concatenated for the outputs.
Initial states are empty, all-zero constants or graph inputs (optionally sliced).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unrolled.interop._limits import element_count

LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout")
RECURRENT_OPS = ("RNN", "LSTM", "GRU")
_STATE_SLOTS = {5: "initial_h", 6: "initial_c"}
_SIZES = ((3, 5), (7, 2))  # (T, B) pairs for the layout check: a size baked into a Reshape fails one


def node_name(n) -> str:
    return f"node {n.name or n.output[0]!r} ({n.op_type})"


# --------------------------------------------------------------------------- tensors
def check_tensor(onnx, t, where: str) -> None:
    """Refuse a TensorProto that lives outside the file, is not numeric, or declares more than it stores."""
    tp = onnx.TensorProto
    at = f"{where}: tensor {t.name!r}"
    if t.data_location == tp.EXTERNAL or len(t.external_data):
        raise ValueError(f"{at} keeps its data in an external file; expected a self-contained graph")
    itemsize = {
        tp.FLOAT: 4, tp.DOUBLE: 8, tp.FLOAT16: 2, tp.BFLOAT16: 2, tp.BOOL: 1, tp.INT8: 1, tp.UINT8: 1,
        tp.INT16: 2, tp.UINT16: 2, tp.INT32: 4, tp.UINT32: 4, tp.INT64: 8, tp.UINT64: 8,
    }.get(t.data_type)  # fmt: skip
    if itemsize is None:
        raise ValueError(f"{at}: data type {t.data_type} is not a numeric type unrolled reads")
    n = element_count(t.dims, at)
    if t.HasField("raw_data"):
        stored = len(t.raw_data) / itemsize
    else:
        stored = max(len(t.float_data), len(t.double_data), len(t.int32_data))
        stored = max(stored, len(t.int64_data), len(t.uint64_data))
    if stored != n:
        raise ValueError(f"{at}: declares dims {list(t.dims)} ({n} elements) but stores {stored:g}")


# --------------------------------------------------------------------------- graph view
@dataclass
class _View:
    """Producers, consumers and which tensors carry data (depend on a graph input other than via Shape)."""

    graph_inputs: set[str]
    consts: dict[str, np.ndarray]
    producer: dict = field(default_factory=dict)
    consumers: dict = field(default_factory=dict)
    data: set[str] = field(default_factory=set)


def _view(graph, consts: dict, where: str) -> _View:
    inits = {t.name for t in graph.initializer}
    v = _View({i.name for i in graph.input if i.name not in inits}, consts)
    v.data |= v.graph_inputs
    known = set(inits) | v.graph_inputs
    for n in graph.node:
        for k, i in enumerate(n.input):
            if not i:
                continue
            if i not in known:
                raise ValueError(
                    f"{where}: {node_name(n)} reads {i!r}, which no earlier node, initializer or input "
                    "defines (the graph is not topologically sorted)"
                )
            v.consumers.setdefault(i, []).append((n, k))
        for o in n.output:
            if o in known:
                raise ValueError(f"{where}: tensor {o!r} is defined twice ({node_name(n)})")
            known.add(o)
            v.producer[o] = n
        if n.op_type != "Shape" and any(i in v.data for i in n.input if i):
            v.data.update(o for o in n.output if o)
    return v


def _attr(onnx, n, name: str, default=None):
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


# --------------------------------------------------------------------------- layout paths
def _trace_back(v: _View, t: str) -> tuple[str, list]:
    """Follow ``t`` back through layout operations; returns where they start and the path, in order."""
    path = []
    while t in v.producer and v.producer[t].op_type in LAYOUT_OPS and v.producer[t] not in path:
        path.append(v.producer[t])
        t = v.producer[t].input[0]
    return t, path[::-1]


def _check_layout_node(onnx, v: _View, n, where: str) -> None:
    """A layout node's shape/axes inputs are shape computations, and Dropout runs in inference mode."""
    aux = [i for i in n.input[1:] if i]
    bad = [i for i in aux if i in v.data]
    if bad:
        raise ValueError(f"{where}: {node_name(n)} takes its shape from data {bad[0]!r}, not a shape")
    if n.op_type == "Dropout":
        mode = n.input[2] if len(n.input) > 2 else ""
        if mode and (mode not in v.consts or np.any(v.consts[mode])):
            raise ValueError(f"{where}: {node_name(n)} may run in training mode; expected inference")
        if len(n.output) > 1 and n.output[1] in v.consumers:
            raise ValueError(f"{where}: {node_name(n)}'s mask is used; expected inference dropout")


def _apply_layout(onnx, v: _View, path: list, a: np.ndarray, where: str) -> np.ndarray | None:
    """Run the layout path on array ``a`` as ONNX would; None when the path cannot act on it."""
    for n in path:
        op, arg = n.op_type, None
        if op == "Transpose":
            arg = _attr(onnx, n, "perm")
        elif op == "Reshape":
            arg = [int(s) for s in _const(v, n, 1, where)]
            if not _attr(onnx, n, "allowzero", 0):
                arg = [a.shape[k] if s == 0 and k < a.ndim else s for k, s in enumerate(arg)]
        elif op in ("Squeeze", "Unsqueeze"):
            arg = _const(v, n, 1, where) if len(n.input) > 1 and n.input[1] else _attr(onnx, n, "axes")
            arg = None if arg is None else tuple(int(x) for x in np.ravel(arg))
        try:
            if op == "Transpose":
                a = a.transpose(None if arg is None else list(arg))
            elif op == "Reshape":
                a = a.reshape(arg)
            elif op == "Squeeze":
                a = np.squeeze(a, axis=arg)
            elif op == "Unsqueeze":
                a = np.expand_dims(a, arg)  # type: ignore[arg-type]  # None: refused just below
        except (ValueError, IndexError, TypeError):  # numpy refuses: the op cannot act on this shape
            return None
    return a


def _const(v: _View, n, k: int, where: str) -> np.ndarray:
    name = n.input[k] if len(n.input) > k else ""
    if name not in v.consts:
        raise ValueError(f"{where}: {node_name(n)} takes its shape from {name!r}, not a constant")
    return v.consts[name]


# --------------------------------------------------------------------------- the chain
def verify_chain(
    onnx, graph, nodes: list, sizes: list[tuple[int, int, int]], consts: dict, where: str
) -> bool:
    """Refuse a foreign graph that is anything but one recurrent stack; returns whether x is batch-major.

    ``nodes`` are the recurrent nodes in graph order, ``sizes`` their (I, D, H).
    """
    v = _view(graph, consts, where)
    accounted = set()  # ids of the nodes that the stack explains
    batch_first = False
    chain: list[tuple] = []  # (tensor, its one reader) along the chain
    for k, n in enumerate(nodes):
        at = f"{where}: {node_name(n)}"
        src, path = _trace_back(v, n.input[0])
        for p in path:
            _check_layout_node(onnx, v, p, where)
        accounted.update(id(p) for p in path)
        steps = [*path, n]
        chain += zip([src] + [p.output[0] for p in path], steps, strict=True)
        I, D, H = sizes[k]
        if k == 0:
            if src not in v.graph_inputs:
                culprit = v.producer.get(src)
                what = node_name(culprit) if culprit is not None else f"constant {src!r}"
                raise ValueError(
                    f"{where}: {what} stands before the first recurrent node; only layout operations "
                    f"({', '.join(LAYOUT_OPS)}) may stand between the graph input and the stack"
                )
            batch_first = _input_layout(onnx, v, path, I, at)
        else:
            prev = nodes[k - 1]
            if src != prev.output[0]:
                culprit = v.producer.get(src)
                if culprit is not None and culprit.op_type not in RECURRENT_OPS:
                    raise ValueError(
                        f"{where}: {node_name(culprit)} stands between recurrent nodes "
                        f"{prev.name or prev.op_type!r} and {n.name or n.op_type!r}; only layout "
                        f"operations ({', '.join(LAYOUT_OPS)}) may stand between recurrent nodes"
                    )
                raise ValueError(
                    f"{at}: its input does not come from the previous recurrent node's output Y; "
                    "expected one chain of stacked layers"
                )
            _between_layout(onnx, v, path, sizes[k - 1], at)
        _check_side_inputs(onnx, v, n, src if k == 0 else None, accounted, where)
    accounted.update(id(n) for n in nodes)
    for t, reader in chain:  # a second reader of the chain's data is a branch
        others = [m for m, _ in v.consumers.get(t, []) if m is not reader and m.op_type != "Shape"]
        if others:
            raise ValueError(
                f"{where}: {node_name(others[0])} also reads {t!r}, inside the recurrent chain; "
                "expected one chain of stacked layers, without branches"
            )
    last = nodes[-1]
    _forward_layout(v, [last.output[0]], ("Shape",), accounted, where, "the last recurrent node's output")
    states = [o for n in nodes for o in n.output[1:] if o]
    _forward_layout(v, states, ("Shape", "Concat"), accounted, where, "the recurrent nodes' final states")
    for n in graph.node:  # anything else that computes on data changes the model
        if id(n) not in accounted and n.op_type != "Shape" and any(i in v.data for i in n.input if i):
            raise ValueError(
                f"{where}: {node_name(n)} computes on the data outside the recurrent stack; only layout "
                f"operations ({', '.join(LAYOUT_OPS)}) may surround the recurrent nodes"
            )
    return batch_first


def _input_layout(onnx, v: _View, path: list, I: int, at: str) -> bool:
    """The layout path from the graph input gives X (T, B, I) from (T, B, I) (False) or (B, T, I) (True)."""
    if not path:
        return False
    for batch_first in (False, True):
        ok = True
        for T, B in _SIZES:
            want = np.arange(T * B * I).reshape(T, B, I)
            x = want.transpose(1, 0, 2).copy() if batch_first else want
            ok = ok and _same(_apply_layout(onnx, v, path, x, at), want)
        if ok:
            return batch_first
    raise ValueError(
        f"{at}: the layout operations before it ({', '.join(p.op_type for p in path)}) do not give its "
        "input X (T, B, I) from a (T, B, I) or (B, T, I) graph input"
    )


def _between_layout(onnx, v: _View, path: list, prev: tuple[int, int, int], at: str) -> None:
    """The layout path from the previous Y (T, D, B, H) gives exactly X (T, B, D·H)."""
    _, D, H = prev
    for T, B in _SIZES:
        y = np.arange(T * D * B * H).reshape(T, D, B, H)
        if not _same(_apply_layout(onnx, v, path, y, at), y.transpose(0, 2, 1, 3).reshape(T, B, D * H)):
            raise ValueError(
                f"{at}: the layout operations before it ({', '.join(p.op_type for p in path) or 'none'}) "
                "do not turn the previous node's Y (T, D, B, H) into X (T, B, D·H)"
            )


def _same(a, b) -> bool:
    return a is not None and a.shape == b.shape and np.array_equal(a, b)


def _forward_layout(v: _View, starts: list, extra: tuple, accounted: set, where: str, what: str) -> None:
    """Everything computed from ``starts`` is layout (or ``extra`` ops): the values reach the outputs."""
    todo = list(starts)
    while todo:
        t = todo.pop()
        for m, k in v.consumers.get(t, []):
            if id(m) in accounted:
                continue
            if m.op_type in extra or (m.op_type in LAYOUT_OPS and k == 0):
                accounted.add(id(m))
                todo += [o for o in m.output if o and m.op_type != "Shape"]
            else:
                raise ValueError(
                    f"{where}: {node_name(m)} computes on {what}; only layout operations "
                    f"({', '.join(LAYOUT_OPS)}) may follow the recurrent stack"
                )


def check_side_inputs(onnx, graph, nodes: list, consts: dict, where: str) -> None:
    """The side inputs of every recurrent node (see :func:`_check_side_inputs`), for unrolled's own graphs."""
    v = _view(graph, consts, where)
    for n in nodes:
        _check_side_inputs(onnx, v, n, None, set(), where)


def _check_side_inputs(onnx, v: _View, n, x_input: str | None, accounted: set, where: str) -> None:
    """sequence_lens comes from a graph input; initial states are zero constants or graph inputs."""
    at = f"{where}: {node_name(n)}"
    ins = list(n.input) + [""] * 8
    lens = ins[4]
    if lens:
        src, path = _trace_back(v, lens)
        cast = v.producer.get(src)
        if cast is not None and cast.op_type == "Cast":
            path = [cast, *path]
            src = cast.input[0]
        if src not in v.graph_inputs or src == x_input:
            raise ValueError(f"{at}: sequence_lens {lens!r} is not a graph input; expected the lengths input")
        accounted.update(id(p) for p in path)
    for slot, label in _STATE_SLOTS.items():
        s = ins[slot]
        if not s:
            continue
        if s not in v.data:
            zero = _is_zero(onnx, v, s)
            if zero is None:
                culprit = v.producer.get(s)
                raise ValueError(
                    f"{at}: {label} {s!r} is computed by {node_name(culprit)}; expected an all-zero "
                    "constant or a graph input"
                )
            if not zero:
                raise ValueError(
                    f"{at}: {label} {s!r} is a nonzero constant; unrolled starts from the state passed to "
                    "the layer (zero by default), so pass it as an input instead"
                )
            continue
        src, path = s, []
        while src in v.producer and v.producer[src].op_type in (*LAYOUT_OPS, "Slice"):
            path.append(v.producer[src])
            src = v.producer[src].input[0]
        if src not in v.graph_inputs or src == x_input:
            culprit = v.producer.get(src)
            what = node_name(culprit) if culprit is not None else f"input {src!r}"
            raise ValueError(f"{at}: {label} {s!r} is computed from {what}; expected a graph input")
        for p in path:
            if any(i in v.data for i in p.input[1:] if i):
                raise ValueError(f"{at}: {node_name(p)} slices {label} with data, not constants")
        accounted.update(id(p) for p in path)


def _is_zero(onnx, v: _View, t: str) -> bool | None:
    """Whether a data-independent tensor is all zeros; None when it cannot be told without running it."""
    if t in v.consts:
        return not np.any(v.consts[t])
    n = v.producer.get(t)
    if n is None:
        return None
    if n.op_type in ("Expand", *LAYOUT_OPS) and n.input[0] in v.consts:
        return not np.any(v.consts[n.input[0]])
    if n.op_type == "ConstantOfShape":
        value = _attr(onnx, n, "value")
        return value is None or not np.any(onnx.numpy_helper.to_array(value))
    return None


# --------------------------------------------------------------------------- unrolled's own graphs
def same_structure(got, want, where: str) -> None:
    """A graph that says it is unrolled's export must be exactly the graph export writes for the loaded
    object: the same nodes, wiring, attributes, inputs, outputs and integer constants (weights may differ)."""
    gn, wn = list(got.graph.node), list(want.graph.node)
    for k in range(max(len(gn), len(wn))):
        a, b = (gn[k] if k < len(gn) else None), (wn[k] if k < len(wn) else None)
        if a is None:
            raise ValueError(f"{where}: the graph ends where unrolled's export writes a {b.op_type} node")
        if b is None or _signature(a) != _signature(b):
            expected = f"a {b.op_type} node" if b is not None else "nothing"
            raise ValueError(
                f"{where}: {node_name(a)} is not what unrolled's export writes there (expected "
                f"{expected}); a graph with unrolled's metadata must keep unrolled's layout"
            )
    for part in ("input", "output"):
        g = [(i.name, i.type.tensor_type.elem_type) for i in getattr(got.graph, part)]
        w = [(i.name, i.type.tensor_type.elem_type) for i in getattr(want.graph, part)]
        if g != w:
            raise ValueError(f"{where}: graph {part}s {g} differ from unrolled's export {w}")
    g_inits = {t.name: t for t in got.graph.initializer}
    for t in want.graph.initializer:
        mine = g_inits.get(t.name)
        same = mine is not None and list(mine.dims) == list(t.dims) and mine.data_type == t.data_type
        if same and t.data_type == t.INT64:  # the structural constants: shapes, slices, axes
            same = mine.SerializeToString() == t.SerializeToString()
        if not same:
            raise ValueError(f"{where}: constant {t.name!r} differs from what unrolled's export writes")
    if len(g_inits) != len(want.graph.initializer):
        extra = sorted(set(g_inits) - {t.name for t in want.graph.initializer})
        raise ValueError(f"{where}: constants {extra} are not part of unrolled's export")


def _signature(n) -> tuple:
    return (n.op_type, n.domain, list(n.input), list(n.output), [a.SerializeToString() for a in n.attribute])
