"""Which layers of a Keras 3 model form its recurrent stack, from the model's configuration (a live
model's ``get_config()`` or a ``.keras`` file's config.json) — refusing a model whose recurrent layers do
not form one.

The recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional) must be one chain: each takes exactly the
previous one's output, through nothing but :data:`PASS_THROUGH` layers (identities at inference, Masking
being unrolled's ``lengths``), with no other reader of the data inside the chain, no second call of a
layer and no extra tensor (``initial_state``, an explicit mask). Layers before the first and after the
last recurrent layer (an embedding, a Dense head) are outside the stack that is loaded.
"""

from __future__ import annotations

PASS_THROUGH = ("Dropout", "Masking")
RECURRENT = ("SimpleRNN", "LSTM", "GRU", "Bidirectional")


def _name(lc: dict) -> str:
    name = lc.get("name") or lc["config"].get("name")
    if not isinstance(name, str):
        raise TypeError(f"a layer has no name (got {name!r})")
    return name


def _tensors(obj) -> list[str]:
    """The producing layer names of every Keras tensor inside a serialized call argument."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return [obj["config"]["keras_history"][0]]
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []


def _inputs(layer_cfgs: list[dict], functional: bool, where: str) -> dict[str, list[list[str]]]:
    """Per layer name, per call: [producing layer of the first argument, then any other tensor's]."""
    calls: dict[str, list[list[str]]] = {}
    for k, lc in enumerate(layer_cfgs):
        if not functional:  # Sequential: each layer reads the one before
            calls[_name(lc)] = [[_name(layer_cfgs[k - 1])]] if k else []
            continue
        nodes = lc.get("inbound_nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise ValueError(f"{where}: layer {_name(lc)!r}: inbound_nodes are not in Keras 3's format")
        calls[_name(lc)] = [_tensors(n.get("args", [])) + _tensors(n.get("kwargs", {})) for n in nodes]
    return calls


def _label(lc: dict) -> str:
    return f"layer {_name(lc)!r} ({lc['class_name']})"


def recurrent_chain(model_cfg: dict, functional: bool, names: list[str] | None, where: str) -> list[dict]:
    """The layer configs of the recurrent stack, in order (those named in ``names``, if given).

    Raises ValueError naming the layer that breaks the chain; KeyError/TypeError/AttributeError on a
    malformed configuration (the caller words those for its file).
    """
    layer_cfgs = model_cfg["layers"]
    if not isinstance(layer_cfgs, list) or not all(isinstance(lc, dict) for lc in layer_cfgs):
        raise ValueError(f"{where}: the model configuration holds no layer list")
    by_name = {_name(lc): lc for lc in layer_cfgs}
    calls = _inputs(layer_cfgs, functional, where)
    rec = [lc for lc in layer_cfgs if lc.get("class_name") in RECURRENT]
    if names is not None:
        rec_by_name = {_name(lc): lc for lc in rec}
        missing = [n for n in names if n not in rec_by_name]
        if missing:
            raise ValueError(f"{where}: no recurrent layer named {missing}; it has {sorted(rec_by_name)}")
        rec = [rec_by_name[n] for n in names]
    readers: dict[str, list[str]] = {}
    for name, cs in calls.items():
        for c in cs:
            for t in c:
                readers.setdefault(t, []).append(name)
    for k, lc in enumerate(rec):
        name, cs = _name(lc), calls.get(_name(lc), [])
        if len(cs) > 1:
            raise ValueError(f"{where}: {_label(lc)} is called {len(cs)} times; expected one stack")
        if cs and len(cs[0]) > 1:
            raise ValueError(
                f"{where}: {_label(lc)}: takes tensors besides its input (an initial_state or a mask); "
                "unrolled's layer starts from the state passed to it, zero by default"
            )
        if k == 0:
            continue
        prev, src, between = _name(rec[k - 1]), name, []
        while True:  # walk back through the pass-through layers
            cs = calls.get(src, [])
            parent = cs[0][0] if len(cs) == 1 and len(cs[0]) == 1 else None
            if parent is None or parent == prev or by_name[parent]["class_name"] not in PASS_THROUGH:
                break
            between.append(parent)
            src = parent
        if parent != prev:
            culprit = by_name.get(parent) if parent is not None else None
            if culprit is not None and culprit["class_name"] not in (*RECURRENT, "InputLayer"):
                raise ValueError(
                    f"{where}: {_label(culprit)} stands between recurrent layers {prev!r} and {name!r}; "
                    f"only {', '.join(PASS_THROUGH)} may stand between recurrent layers"
                )
            raise ValueError(
                f"{where}: {_label(lc)}: its input is not the output of layer {prev!r}; "
                "expected one stack of recurrent layers"
            )
        chain = [prev, *between[::-1], name]
        for t, reader in zip(chain, chain[1:], strict=False):
            others = [r for r in readers.get(t, []) if r != reader]
            if others:
                raise ValueError(
                    f"{where}: {_label(by_name[others[0]])} also reads the output of {t!r}, inside the "
                    "recurrent stack; expected one stack without branches"
                )
    return rec
