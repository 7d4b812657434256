"""The Keras bridge: keras.layers.SimpleRNN / LSTM / GRU (both reset_after settings) and Bidirectional
wrappers -> the equal unrolled layer, from live Keras objects, from a saved ``.keras`` file, or from the
raw arrays of ``get_weights()``; and back to ``set_weights()`` arrays.

Neither keras nor a backend is needed to convert arrays; reading a ``.keras`` file needs only ``h5py``.
The conversions (Keras 3 layouts, its documented equations):

- Kernels are transposed: Keras computes ``x @ kernel`` with kernel (I, G·u) and ``h @ recurrent_kernel``
  (u, G·u); unrolled's W_xh is (G·u, I) and W_hh (G·u, u): ``W_xh = kernel.T``, ``W_hh = recurrent_kernel.T``.
- LSTM gate order i, f, c, o is unrolled's i, f, g, o: no reordering.
- GRU gate order is z, r, h, and Keras's update gate weights h_{t−1}: h_t = z'⊙h_{t−1} + (1 − z')⊙h̃_t.
  unrolled's z weights the candidate, z = 1 − z' = sigmoid(−a_z'): the z columns are negated.
- GRU ``reset_after=True`` keeps a (2, 3u) bias: row 0 the input bias, row 1 the recurrent bias. The z and r
  parts add; the recurrent h part sits inside the reset product, h̃ = tanh(x W_h + b_h + r⊙(h U_h + b_hn)),
  and becomes unrolled's ``b_hn``. ``reset_after=False`` (one (3u,) bias) is unrolled's classic GRU,
  h̃ = tanh(x W_h + (r⊙h) U_h + b_h).
- Bidirectional (merge_mode "concat") is a forward layer and a ``go_backwards`` layer whose outputs are
  re-reversed and concatenated: unrolled's bidirectional layer, forward weights first.
- Keras is batch-major: the layers built here are ``batch_first=True`` unless asked otherwise.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unrolled._optional import install_hint
from unrolled.interop import _keras_graph, _limits
from unrolled.layers import GRU, LSTM, RNN, RecurrentLayer

_CELLS = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _negate_z(a: np.ndarray, u: int) -> np.ndarray:
    """Negate the z block (the first u rows): Keras's z' = 1 − z in pre-activation space."""
    a = a.copy()
    a[:u] *= -1
    return a


# --------------------------------------------------------------------------- one direction
def _direction_from_keras(cell: str, arrays: Sequence[np.ndarray], where: str) -> dict[str, np.ndarray]:
    """``[kernel, recurrent_kernel(, bias)]`` of one Keras direction -> unrolled W_xh, W_hh, b_h(, b_hn)."""
    if len(arrays) not in (2, 3):
        raise ValueError(
            f"{where}: expected [kernel, recurrent_kernel, bias] or without bias, got {len(arrays)}"
        )
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]  # exact sums; cast once into the layer
    kernel, rec = arrays[0], arrays[1]
    G = _GATES[cell]
    if rec.ndim != 2 or rec.shape[1] != G * rec.shape[0]:
        raise ValueError(
            f"{where}: recurrent_kernel shape {rec.shape}, expected (units, {G}·units) for {cell}"
        )
    u = rec.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != G * u:
        raise ValueError(f"{where}: kernel shape {kernel.shape}, expected (input_size, {G * u})")
    p = {"W_xh": kernel.T, "W_hh": rec.T}
    if len(arrays) == 3:
        bias = arrays[2]
        if cell == "gru" and bias.shape == (2, 3 * u):  # reset_after=True: input and recurrent biases
            b = bias[0].copy()
            b[: 2 * u] += bias[1, : 2 * u]
            p["b_h"], p["b_hn"] = b, bias[1, 2 * u :]
        elif bias.shape == (G * u,):
            p["b_h"] = bias
        else:
            raise ValueError(
                f"{where}: bias shape {bias.shape}, expected ({G * u},)"
                + (f" or (2, {3 * u})" if cell == "gru" else "")
            )
    if cell == "gru":
        p = {k: _negate_z(v, u) if k != "b_hn" else v for k, v in p.items()}
    return {k: np.ascontiguousarray(v) for k, v in p.items()}


def _direction_to_keras(layer: RecurrentLayer, l: int, d: int) -> list[np.ndarray]:
    cell, u, p = _kind(layer), layer.hidden_size, layer.direction_params(l, d)
    neg = (lambda a: _negate_z(a, u)) if cell == "gru" else (lambda a: a.copy())
    out = [np.ascontiguousarray(neg(p["W_xh"]).T), np.ascontiguousarray(neg(p["W_hh"]).T)]
    if layer.bias:
        b = neg(p["b_h"])
        if cell == "gru" and layer.reset_after:
            rec = np.zeros_like(b)
            rec[2 * u :] = p["b_hn"]
            b[2 * u :] = p["b_h"][2 * u :]
            b = np.stack([b, rec])
        out.append(b)
    return out


def _kind(layer: RecurrentLayer) -> str:
    return "lstm" if isinstance(layer, LSTM) else "gru" if isinstance(layer, GRU) else "rnn"


# --------------------------------------------------------------------------- public: arrays
def from_keras_weights(
    cell: str,
    weights: Sequence[Sequence[np.ndarray]],
    *,
    bidirectional: bool = False,
    nonlinearity: str = "tanh",
    reset_after: bool | None = None,
    batch_first: bool = True,
    dtype=np.float32,
) -> RecurrentLayer:
    """Build the unrolled layer from the ``get_weights()`` lists of a stack of Keras recurrent layers.

    Parameters
    ----------
    cell : "rnn" (SimpleRNN), "lstm" or "gru".
    weights : one list per stacked Keras layer, as its ``get_weights()`` returns it:
        ``[kernel (I, G·u), recurrent_kernel (u, G·u), bias]`` (bias absent when ``use_bias=False``);
        for a Bidirectional layer the forward direction's arrays then the backward's.
    bidirectional : whether the layers are Bidirectional (merge_mode "concat").
    nonlinearity : SimpleRNN's activation, "tanh" or "relu".
    reset_after : the GRU's variant. None: read from the bias, a (2, 3u) bias is ``reset_after=True``,
        a (3u,) bias ``False``; without a bias the arrays cannot tell, and None means Keras's default True.
    batch_first : the built layer takes (B, T, I) like Keras (True) or (T, B, I).
    dtype : float32 or float64.

    Returns
    -------
    RNN, LSTM or GRU (eval mode) whose outputs equal the Keras stack's.
    """
    if cell not in _GATES:
        raise ValueError(f"cell: expected 'rnn', 'lstm' or 'gru', got {cell!r}")
    if not weights:
        raise ValueError("weights: expected at least one layer's arrays")
    D = 2 if bidirectional else 1
    dirs: list[list[dict]] = []
    for l, arrays in enumerate(weights):
        arrays = list(arrays)
        if len(arrays) % D or len(arrays) // D not in (2, 3):
            raise ValueError(f"weights[{l}]: expected {2 * D} or {3 * D} arrays, got {len(arrays)}")
        n = len(arrays) // D
        dirs.append(
            [_direction_from_keras(cell, arrays[d * n : (d + 1) * n], f"weights[{l}]") for d in range(D)]
        )
    first = dirs[0][0]
    H, I = first["W_hh"].shape[1], first["W_xh"].shape[1]
    bias = "b_h" in first
    if cell == "gru" and bias:
        from_bias = "b_hn" in first
        if reset_after is not None and bool(reset_after) != from_bias:
            raise ValueError(
                f"weights[0]: a GRU bias of shape {'(2, 3u)' if from_bias else '(3u,)'} means "
                f"reset_after={from_bias}, but reset_after={reset_after} was given"
            )
        reset_after = from_bias
    reset_after = True if reset_after is None else bool(reset_after)
    for l, layer_dirs in enumerate(dirs):
        for d, p in enumerate(layer_dirs):
            where = f"weights[{l}]" + (" (backward)" if d else "")
            if p["W_hh"].shape[1] != H:
                raise ValueError(f"{where}: {p['W_hh'].shape[1]} units, expected {H} like the first layer")
            want_in = I if l == 0 else D * H
            if p["W_xh"].shape[1] != want_in:
                raise ValueError(f"{where}: input size {p['W_xh'].shape[1]}, expected {want_in}")
            if ("b_h" in p) != bias or (cell == "gru" and bias and ("b_hn" in p) != reset_after):
                raise ValueError(f"{where}: bias layout differs from the first layer's")
    kw = dict(
        input_size=I,
        hidden_size=H,
        num_layers=len(dirs),
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=dtype,
    )
    if cell == "rnn":
        layer = RNN(nonlinearity=nonlinearity, **kw)
    elif cell == "lstm":
        layer = LSTM(**kw)
    else:
        layer = GRU(reset_after=reset_after, **kw)
    for l, layer_dirs in enumerate(dirs):
        for d, p in enumerate(layer_dirs):
            live = layer.direction_params(l, d)
            for k, v in p.items():
                live[k][...] = v
    return layer.eval()


def to_keras_weights(layer: RecurrentLayer) -> list[list[np.ndarray]]:
    """The arrays for ``set_weights()`` of each equal Keras layer (Bidirectional when the layer is).

    A GRU with ``reset_after=True`` maps to ``keras.layers.GRU(reset_after=True)``; ``False`` likewise.
    """
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(f"layer: expected an unrolled RNN, LSTM or GRU, got {type(layer).__name__}")
    for option in ("layer_norm", "peephole", "proj_size", "zoneout"):
        if getattr(layer, option, 0):
            raise ValueError(f"layer: {option} has no keras.layers equivalent (Keras ships none)")
    return [
        [a for d in range(layer.num_directions) for a in _direction_to_keras(layer, l, d)]
        for l in range(layer.num_layers)
    ]


# --------------------------------------------------------------------------- configs (live or saved)
def _check_config(class_name: str, cfg: dict, where: str, backward: bool = False) -> None:
    """Refuse Keras options that have no unrolled equivalent, naming the option."""
    act, rec_act = cfg.get("activation", "tanh"), cfg.get("recurrent_activation", "sigmoid")
    if class_name == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise ValueError(f"{where}: activation {act!r} is not supported (expected 'tanh' or 'relu')")
    else:
        if act != "tanh":
            raise ValueError(f"{where}: activation {act!r} is not supported (expected 'tanh')")
        if rec_act != "sigmoid":
            raise ValueError(
                f"{where}: recurrent_activation {rec_act!r} is not supported (expected 'sigmoid')"
            )
    if bool(cfg.get("go_backwards", False)) != backward:
        raise ValueError(
            f"{where}: go_backwards={cfg.get('go_backwards')} alone is not supported "
            "(a reverse-only layer; wrap it in Bidirectional)"
        )
    if cfg.get("stateful"):
        raise ValueError(f"{where}: stateful=True is not supported (pass the state explicitly instead)")


def _act_name(a) -> str:
    if isinstance(a, str):
        return a
    name = getattr(a, "__name__", None) or (a.get("config") if isinstance(a, dict) else None)
    return name if isinstance(name, str) else str(a)


def _spec_from_configs(entries: list[tuple[str, dict, list[np.ndarray]]], where: str) -> dict:
    """entries: (class name, config, weights) per Keras layer -> from_keras_weights arguments."""
    cells, bidis, acts, resets, weights = set(), set(), set(), set(), []
    for class_name, cfg, arrays in entries:
        name = f"{where}: layer {cfg.get('name', class_name)!r}"
        if class_name == "Bidirectional":
            merge = cfg.get("merge_mode", "concat")
            if merge != "concat":
                raise ValueError(f"{name}: merge_mode {merge!r} is not supported (unrolled concatenates)")
            inner = cfg["layer"]
            inner_cls, inner_cfg = inner["class_name"], inner["config"]
            back = cfg.get("backward_layer")
            if back is not None:
                if back["class_name"] != inner_cls:
                    raise ValueError(
                        f"{name}: forward and backward layers differ ({inner_cls}, {back['class_name']})"
                    )
                _check_config(inner_cls, dict(back["config"], go_backwards=True), name, backward=True)
            _check_config(inner_cls, dict(inner_cfg, go_backwards=False), name)
            bidis.add(True)
        elif class_name in _CELLS:
            inner_cls, inner_cfg = class_name, cfg
            _check_config(class_name, cfg, name)
            bidis.add(False)
        else:
            raise ValueError(
                f"{name}: {class_name} is not a recurrent layer (SimpleRNN, LSTM, GRU, Bidirectional)"
            )
        if inner_cls not in _CELLS:
            raise ValueError(f"{name}: wraps {inner_cls}, expected SimpleRNN, LSTM or GRU")
        cells.add(_CELLS[inner_cls])
        acts.add(inner_cfg.get("activation", "tanh"))
        resets.add(bool(inner_cfg.get("reset_after", True)))
        weights.append(arrays)
    if len(cells) > 1 or len(bidis) > 1 or len(acts) > 1 or len(resets) > 1:
        raise ValueError(
            f"{where}: the recurrent layers differ in type, direction or activation; "
            "one unrolled stack holds layers of one kind"
        )
    cell = cells.pop()
    return dict(
        cell=cell,
        weights=weights,
        bidirectional=bidis.pop(),
        nonlinearity=acts.pop(),
        reset_after=resets.pop() if cell == "gru" else None,
    )


def from_keras(obj, *, batch_first: bool = True, dtype=np.float32) -> RecurrentLayer:
    """The unrolled layer equal to Keras recurrent layer(s).

    Parameters
    ----------
    obj : a built ``keras.layers.SimpleRNN`` / ``LSTM`` / ``GRU`` / ``Bidirectional``, a list of them
        (a stack: each takes the previous one's full output sequence), or a Sequential or functional Keras
        model, whose recurrent layers must form one such stack: each takes exactly the previous one's
        output, with only Dropout or Masking between them and no branch; layers before the first and
        after the last (an embedding, a head) are not part of the returned stack.
    batch_first, dtype : as in :func:`from_keras_weights`.

    Options without an unrolled equivalent (other activations, ``go_backwards`` alone, ``stateful``,
    merge modes other than concat) are refused with a ValueError naming the layer and the option.
    Dropout settings are training-time only and are not carried over.
    """
    layers = list(obj) if isinstance(obj, list | tuple) else [obj]
    if len(layers) == 1 and hasattr(layers[0], "layers") and type(layers[0]).__name__ != "Bidirectional":
        layers = _model_stack(layers[0])
    entries = []
    for la in layers:
        cls = type(la).__name__
        if not hasattr(la, "get_config") or not hasattr(la, "get_weights"):
            raise TypeError(f"obj: expected Keras recurrent layers or a Keras model, got {cls}")
        cfg = la.get_config()
        if cls == "Bidirectional":
            cfg = dict(
                cfg,
                layer={
                    "class_name": type(la.forward_layer).__name__,
                    "config": la.forward_layer.get_config(),
                },
                backward_layer={
                    "class_name": type(la.backward_layer).__name__,
                    "config": la.backward_layer.get_config(),
                },
            )
        for key in ("activation", "recurrent_activation"):
            if key in cfg:
                cfg[key] = _act_name(cfg[key])
        arrays = la.get_weights()
        if not arrays:
            raise ValueError(f"obj: Keras layer {la.name!r} is not built (call it on an input first)")
        entries.append((cls, cfg, arrays))
    spec = _spec_from_configs(entries, "obj")
    return from_keras_weights(**spec, batch_first=batch_first, dtype=dtype)


def _model_stack(model) -> list:
    """The recurrent layers of a live Sequential / functional model, checked to form one stack."""
    kinds = {c.__name__ for c in type(model).__mro__}
    if not kinds & {"Sequential", "Functional"}:
        raise ValueError(
            f"obj: the topology of a {type(model).__name__} (a subclassed model) cannot be read; "
            "pass its recurrent layers as a list"
        )
    try:
        cfg = model.get_config()
        chain = _keras_graph.recurrent_chain(cfg, "Sequential" not in kinds, None, "obj")
        layers = [model.get_layer(lc.get("name") or lc["config"]["name"]) for lc in chain]
    except (KeyError, TypeError, AttributeError, IndexError, NotImplementedError) as e:
        raise ValueError(
            f"obj: the Keras model's configuration is malformed ({type(e).__name__}: {e})"
        ) from None
    if not layers:
        raise ValueError("obj: the Keras model has no SimpleRNN, LSTM, GRU or Bidirectional layer")
    return layers


def load_keras(
    path: str | Path, *, names: Sequence[str] | None = None, batch_first: bool = True, dtype=np.float32
) -> RecurrentLayer:
    """Load the recurrent stack of a Keras 3 ``.keras`` file (config.json + model.weights.h5) without keras.

    Parameters
    ----------
    path : the ``.keras`` archive written by ``model.save``.
    names : the Keras layer names to take, in order; default: every recurrent layer of the model.
        They must form one stack, as in :func:`from_keras`.
    batch_first, dtype : as in :func:`from_keras_weights`.

    Sizes are checked before anything is allocated: config.json may inflate to at most
    ``_limits.MAX_CONFIG_BYTES``, model.weights.h5 to ``_limits.MAX_WEIGHTS_BYTES`` (declared sizes in the
    zip, then a bounded read), and each weight array to ``_limits.MAX_ELEMENTS`` elements and to no more
    bytes than the weights file holds.

    Raises
    ------
    ValueError : the file is not a readable ``.keras`` archive, is malformed, too large, lacks a layer's
        weights, or holds layers that are not one recurrent stack or have no unrolled equivalent (one
        line naming the file, the layer and why).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Keras file")
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(_read_member(z, "config.json", _limits.MAX_CONFIG_BYTES, path))
            weights_bytes = _read_member(z, "model.weights.h5", _limits.MAX_WEIGHTS_BYTES, path)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(
            f"{path}: not a Keras 3 .keras file (a zip with config.json and model.weights.h5): "
            f"{type(e).__name__}: {e}"
        ) from None
    except (OSError, EOFError, NotImplementedError, zlib.error) as e:  # a damaged or exotic member
        raise ValueError(f"{path}: a member of the zip cannot be read ({type(e).__name__}: {e})") from None
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - exercised only without h5py
        raise ImportError(f"reading .keras files needs h5py: {install_hint('keras', 'h5py')}") from e
    try:
        chosen = _chosen_layers(config, names, str(path))
        _spec_from_configs([(lc["class_name"], lc.get("config", {}), []) for lc, _ in chosen], str(path))
    except (KeyError, TypeError, AttributeError, IndexError) as e:  # a malformed config.json
        raise ValueError(f"{path}: config.json is malformed ({type(e).__name__}: {e})") from None
    try:
        h5 = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as e:
        raise ValueError(f"{path}: model.weights.h5 is not a readable HDF5 file ({e})") from None
    entries = []
    budget = [len(weights_bytes)]  # bytes the datasets may still take: no more than the file holds
    try:
        with h5:
            for lc, g in chosen:
                cls, cfg = lc["class_name"], lc.get("config", {})
                subs = [f"{g}/forward_layer", f"{g}/backward_layer"] if cls == "Bidirectional" else [g]
                arrays = []
                for sub in subs:
                    arrays += _read_vars(h5py, h5, f"{sub}/cell/vars", cfg.get("name"), path, budget)
                entries.append((cls, cfg, arrays))
    except (OSError, KeyError, TypeError, RuntimeError) as e:  # h5py's own errors on a damaged file
        raise ValueError(f"{path}: model.weights.h5 cannot be read ({type(e).__name__}: {e})") from None
    spec = _spec_from_configs(entries, str(path))
    return from_keras_weights(**spec, batch_first=batch_first, dtype=dtype)


def _read_member(z: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """A zip member, refused when its declared size is above ``cap``, read with a bounded read (a member
    that inflates beyond what it declares is cut at ``cap + 1`` bytes and refused)."""
    info = z.getinfo(name)
    if info.file_size > cap:
        raise ValueError(
            f"{path}: {name} declares {info.file_size} bytes uncompressed, above the cap of {cap}"
        )
    with z.open(info) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"{path}: {name} inflates beyond the cap of {cap} bytes")
    return data


def _chosen_layers(config, names: Sequence[str] | None, where: str) -> list[tuple[dict, str]]:
    """(layer config, weight group) of the recurrent stack named by config.json (see :func:`from_keras`)."""
    model_cfg = config.get("config") if isinstance(config, dict) else None
    layer_cfgs = model_cfg.get("layers") if isinstance(model_cfg, dict) else None
    if not isinstance(layer_cfgs, list):
        raise ValueError(
            f"{where}: config.json holds no layer list (expected a Sequential or functional model)"
        )
    # Keras names each layer's weight group by its class: "lstm", "lstm_1", ... in the order of the layers.
    counts: dict[str, int] = {}
    groups = {}
    for lc in layer_cfgs:
        snake = _snake(lc.get("class_name", ""))
        k = counts.get(snake, 0)
        counts[snake] = k + 1
        groups[id(lc)] = f"layers/{snake}" + (f"_{k}" if k else "")
    functional = any("inbound_nodes" in lc for lc in layer_cfgs)
    names = list(names) if names is not None else None
    chain = _keras_graph.recurrent_chain(model_cfg, functional, names, where)
    if not chain:
        raise ValueError(f"{where}: the model has no SimpleRNN, LSTM, GRU or Bidirectional layer")
    return [(lc, groups[id(lc)]) for lc in chain]


def _read_vars(h5py, h5, group: str, layer: str, path: Path, budget: list[int]) -> list[np.ndarray]:
    """The arrays "0", "1", ... of one weight group, each checked before it is read: a plain dataset in
    this file (no external, virtual or linked storage), numeric, at most ``_limits.MAX_ELEMENTS`` elements
    and, all together, no more bytes than the weights file holds."""
    vars_ = h5.get(group)
    if not isinstance(vars_, h5py.Group) or not len(vars_):
        raise ValueError(f"{path}: no weights for layer {layer!r} (expected group {group})")
    arrays = []
    for i in range(len(vars_)):
        at = f"{path}: {group}/{i}"
        link = vars_.get(str(i), getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ValueError(f"{at}: a {type(link).__name__}; expected a dataset stored in the file")
        ds = vars_[str(i)]
        if not isinstance(ds, h5py.Dataset) or ds.is_virtual or ds.external:
            raise ValueError(f"{at}: expected a dataset stored in the file")
        if ds.dtype.kind not in "fiu":
            raise ValueError(f"{at}: dtype {ds.dtype}, expected a numeric array")
        n = _limits.element_count(ds.shape, at)
        budget[0] -= n * ds.dtype.itemsize
        if budget[0] < 0:
            raise ValueError(
                f"{at}: declares shape {ds.shape} ({n * ds.dtype.itemsize} bytes), more than the "
                "weights file stores"
            )
        arrays.append(ds[()])
    return arrays


def _snake(name: str) -> str:
    """Keras's own ``naming.to_snake_case``, which names a layer's weight group: SimpleRNN -> simple_rnn."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
