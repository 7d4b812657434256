"""Classifying whole sequences (many-to-one) with a recurrent network.

On the command line (:mod:`unrolled.commands.train_classify`, :mod:`unrolled.commands.classify`):

    unrolled train classify (--dataset NAME | --npz FILE | --csv FILE ... | --text-dir DIR) --out DIR
    unrolled classify DIR FILE [--output predictions.csv]

Sequences of different lengths are padded into batches and their lengths passed to the layers
(packed-sequence semantics), so padding never reaches a result: the head reads each sequence's last
valid step (``--pooling last``; for a bidirectional stack, each direction's final state) or the mean over
its valid steps (``--pooling mean``). Text is read character by character through an embedding.

The split is stratified and seeded (train | validation | test); early stopping keeps the weights with
the lowest validation loss; the test report gives accuracy, macro-F1 and the confusion matrix beside
the majority-class baseline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unrolled._checks import positive_float, positive_int
from unrolled.apps._training import fit_best, model_dir, training_loss_bound
from unrolled.apps.classify.sequences import (
    BUILTIN_DATASETS,
    CharVocab,
    Records,
    SequenceDataset,
    load_builtin,
    load_long_csv,
    load_npz,
    load_text_csv,
    load_text_folder,
    read_long_csv,
    read_npz,
    read_text_csv,
    read_text_lines,
    stratified_split,
)
from unrolled.apps.fields import (
    cell_variants,
    check_cell_variants,
    layer_norm_option,
    option,
    peephole_option,
    proj_size_option,
    zoneout_option,
)
from unrolled.data.batching import SequenceBatches, pad_sequences
from unrolled.metrics import accuracy, confusion_matrix, macro_f1, majority_baseline
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import cross_entropy, softmax

APP = "classify"  # the "app" of a saved classifier's meta


@dataclass
class ClassifyConfig:
    """Everything ``unrolled train classify`` needs; each field is also its command-line option."""

    # the data: one source
    dataset: str | None = option(None, "a built-in dataset: " + ", ".join(BUILTIN_DATASETS), metavar="NAME")
    data_dir: str | None = option(
        None, "folder of the names data (default: the registry's, see 'unrolled data info names')"
    )
    npz: str | None = option(None, "NPZ with x (N, T, F), y (N,), optional lengths (N,)", metavar="FILE")
    csv: str | None = option(
        None, "CSV: one row per step (--id-column) or per text (--text-column)", metavar="FILE"
    )
    id_column: str | None = option(None, "long CSV: the column naming each row's sequence", metavar="NAME")
    text_column: str | None = option(
        None, "text CSV: the column holding each sequence's text", metavar="NAME"
    )
    label_column: str = option("label", "CSV: the label column", metavar="NAME")
    features: tuple = option((), "long CSV: feature columns (default: all others)", metavar="A,B")
    text_dir: str | None = option(None, "folder of <label>.txt files, one text per line", metavar="DIR")
    # the network
    cell: str = option("lstm", "recurrent cell", choices=("lstm", "gru", "rnn"))
    layers: int = option(1, "stacked recurrent layers")
    hidden: int = option(64, "hidden units per layer and direction")
    bidirectional: bool = option(False, "read each sequence both ways")
    pooling: str = option(
        "last", "the head reads the last valid step or the mean of valid steps", choices=("last", "mean")
    )
    embed: int = option(32, "embedding width (text input)")
    dropout: float = option(0.0, "dropout between stacked layers and on the head's input")
    layer_norm: bool = layer_norm_option()
    peephole: bool = peephole_option()
    proj_size: int = proj_size_option()
    zoneout: float = zoneout_option()
    # training
    dedupe: bool = option(False, "drop exact repeats of a (sequence, label) pair before splitting")
    class_weights: str = option(
        "none", "loss weights: none, or balanced (n / (K · n_k))", choices=("none", "balanced")
    )
    test_frac: float = option(0.2, "fraction of each class held out for the test")
    val_frac: float = option(0.1, "fraction of each class for validation / early stopping")
    epochs: int = option(30, "most passes over the training set")
    batch: int = option(64, "sequences per update")
    lr: float = option(3e-3, "Adam learning rate")
    schedule: str = option(
        "constant", "learning rate: constant, or cosine decay over --epochs", choices=("constant", "cosine")
    )
    clip: float = option(1.0, "clip the global gradient norm to this")
    patience: int = option(5, "stop after this many epochs without a lower validation loss")
    time_limit: float | None = option(None, "stop training after this many minutes", type=float)
    bucket: bool = option(True, "batch sequences of similar length together (less padding)")
    seed: int = option(0, "seed of the split, the weights and the batch order")

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        sources = [s for s in ("dataset", "npz", "csv", "text_dir") if getattr(self, s) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one source: --dataset, --npz, --csv or --text-dir")
        if self.csv is not None and (self.id_column is None) == (self.text_column is None):
            raise ValueError("--csv needs --id-column (one row per step) or --text-column (one row per text)")
        for name in ("layers", "hidden", "embed", "epochs", "batch", "patience"):
            positive_int(name, getattr(self, name))
        positive_float("lr", self.lr)
        positive_float("clip", self.clip)
        check_cell_variants(self)

    def load(self) -> SequenceDataset:
        """The labelled data set this configuration names."""
        if self.dataset is not None:
            return load_builtin(self.dataset, self.data_dir)
        if self.npz is not None:
            return load_npz(self.npz)
        if self.text_dir is not None:
            return load_text_folder(self.text_dir)
        if self.text_column is not None:
            return load_text_csv(self.csv, self.text_column, self.label_column)
        return load_long_csv(self.csv, self.id_column, self.label_column, list(self.features) or None)


# --------------------------------------------------------------------------- the classifier
class Classifier:
    """A trained model with its classes and, for text, its vocabulary."""

    def __init__(self, model: SequenceModel, classes: list[str], vocab: CharVocab | None):
        self.model, self.classes, self.vocab = model, classes, vocab

    def inputs(self, items: list) -> list[np.ndarray]:
        """Items as model inputs: token ids (T,) for text, float arrays (T, F) otherwise."""
        if self.vocab is not None:
            return [self.vocab.encode(t) for t in items]
        F = self.model.config.input_size
        for i, a in enumerate(items):
            if a.ndim != 2 or a.shape[1] != F:
                raise ValueError(
                    f"sequence {i}: expected (T, {F}) features like the training data, got {a.shape}"
                )
        return [a.astype(self.model.dtype, copy=False) for a in items]

    def predict_proba(self, items: list, batch_size: int = 256) -> np.ndarray:
        """(N, K) class probabilities in the order of ``items`` (batched by length, lengths passed)."""
        xs = self.inputs(items)
        order = np.argsort([len(x) for x in xs], kind="stable")  # similar lengths together: less padding
        out = np.empty((len(xs), len(self.classes)))
        self.model.eval()
        for i in range(0, len(xs), batch_size):
            idx = order[i : i + batch_size]
            x, lengths = pad_sequences([xs[j] for j in idx])
            logits, _ = self.model(x, lengths=lengths)
            out[idx] = softmax(logits.astype(np.float64))
        return out


def build(cfg: ClassifyConfig, ds: SequenceDataset, vocab: CharVocab | None) -> SequenceModel:
    common = dict(
        cell=cfg.cell,
        hidden_size=cfg.hidden,
        num_layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        output_dropout=cfg.dropout,
        output_size=len(ds.classes),
        output=cfg.pooling,
        seed=cfg.seed,
        **cell_variants(cfg),
    )
    if vocab is not None:
        return SequenceModel(
            ModelConfig(input="tokens", vocab_size=len(vocab), embed_dim=cfg.embed, **common)
        )
    return SequenceModel(ModelConfig(input="dense", input_size=ds.input_size, **common))


def class_weights(y: np.ndarray, K: int, how: str) -> np.ndarray:
    """(K,) loss weight per class: ones, or "balanced" n / (K · n_k) (scikit-learn's), so that every class
    carries the same total weight."""
    if how == "none":
        return np.ones(K)
    counts = np.bincount(y, minlength=K).astype(np.float64)
    return np.where(counts > 0, len(y) / (K * np.maximum(counts, 1)), 0.0)


def _loss(clf: Classifier, items: list, y: np.ndarray) -> float:
    p = clf.predict_proba(items)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def fit(
    cfg: ClassifyConfig,
    train: SequenceDataset,
    val: SequenceDataset,
    log=print,
    workdir=None,
    resume: bool = False,
) -> tuple[Classifier, dict]:
    """Train with :class:`unrolled.train.Trainer`: mini-batches bucketed by length in a seeded order,
    cross-entropy weighted per class, Adam, global-norm clipping; keep the weights of the epoch with the
    lowest validation loss (the training set stands in when there is no validation split).

    workdir : the Trainer's folder (a path), or a :class:`~unrolled.rundir.RunDir` whose ``training/`` it
        uses; a temporary folder when None.

    Raises :class:`~unrolled.train.DivergenceError` when the training loss stays above ln K + 1 nats (a
    uniform guess over the K classes, plus a margin) for a whole epoch, or a weight becomes non-finite.
    """
    vocab = CharVocab.build(train.items) if train.kind == "text" else None
    model = build(cfg, train, vocab)
    clf = Classifier(model, train.classes, vocab)
    K = len(train.classes)
    w = class_weights(train.labels, K, cfg.class_weights).astype(model.dtype)
    batches = SequenceBatches(
        clf.inputs(train.items), train.labels, batch_size=cfg.batch, bucket=cfg.bucket, seed=cfg.seed
    )
    val_items, val_y = (val.items, val.labels) if len(val.items) else (train.items, train.labels)

    def loss_fn(m, b):
        logits, _ = m(b.x, lengths=b.lengths)
        loss, d = cross_entropy(logits, b.y, mask=w[b.y])  # Σ w_y · nll / Σ w_y
        m.backward(d)
        return loss, int(b.lengths.sum())

    summary = fit_best(
        model,
        batches,
        loss_fn,
        lambda m: _loss(clf, val_items, val_y),
        steps_per_epoch=len(batches),
        lr=cfg.lr,
        clip=cfg.clip,
        epochs=cfg.epochs,
        patience=cfg.patience,
        max_minutes=cfg.time_limit,
        workdir=workdir,
        resume=resume,
        log=log,
        schedule=cfg.schedule,
        max_loss=training_loss_bound(np.log(K), len(batches)),
    )
    summary["val_accuracy"] = accuracy(val_y, clf.predict_proba(val_items).argmax(1))
    return clf, summary


def evaluate(clf: Classifier, test: SequenceDataset, y_train: np.ndarray) -> dict:
    """Accuracy, macro-F1 and confusion matrix on ``test``, beside the majority-class baseline."""
    pred = clf.predict_proba(test.items).argmax(1)
    K = len(clf.classes)
    return {
        "n": len(test.items),
        "accuracy": accuracy(test.labels, pred),
        "macro_f1": macro_f1(test.labels, pred, K),
        "majority_baseline_accuracy": majority_baseline(y_train, test.labels),
        "confusion_matrix": confusion_matrix(test.labels, pred, K).tolist(),
    }


def format_confusion(cm: list[list[int]], classes: list[str], width: int = 120) -> str:
    """Rows = true class, columns = predicted, every class name in full and every column aligned.

    When the columns headed by the names would make a line wider than `width` characters (18 languages of
    the names data set), the columns are headed by the class numbers instead and each row names its class
    in full beside its number, so a terminal never wraps the table.
    """
    K = len(classes)
    digits = len(str(max((max(r) for r in cm), default=0)))
    rw = max(len(c) for c in classes)
    cw = max(digits, *(len(c) for c in classes))
    if rw + 2 + K * (cw + 1) <= width:
        head = " " * (rw + 2) + " ".join(f"{c:>{cw}}" for c in classes)
        rows = [f"{c:>{rw}}  " + " ".join(f"{v:>{cw}}" for v in r) for c, r in zip(classes, cm, strict=True)]
        return "\n".join(["confusion matrix (rows: true class, columns: predicted)", head, *rows])
    nw = len(str(K))
    cw = max(digits, nw)
    rw += nw + 1
    names = [f"{k + 1:>{nw}} {c}" for k, c in enumerate(classes)]
    head = " " * (rw + 2) + " ".join(f"{k + 1:>{cw}}" for k in range(K))
    rows = [f"{n:<{rw}}  " + " ".join(f"{v:>{cw}}" for v in r) for n, r in zip(names, cm, strict=True)]
    title = "confusion matrix (rows: true class, columns: predicted, numbered as the rows)"
    return "\n".join([title, head, *rows])


# --------------------------------------------------------------------------- save / load
def save(directory, clf: Classifier, cfg: ClassifyConfig, ds: SequenceDataset, results: dict) -> None:
    """Save the classifier as a model checkpoint in `directory` (a folder, or the top of a RunDir)."""
    from unrolled.checkpoint import save_model

    meta = {
        "app": APP,
        "classify": dataclasses.asdict(cfg),
        "classes": clf.classes,
        "kind": ds.kind,
        "vocab": clf.vocab.to_list() if clf.vocab is not None else None,
        "results": results,
    }
    save_model(model_dir(directory), clf.model, meta)


def load(directory: str | Path) -> tuple[Classifier, ClassifyConfig, dict]:
    from unrolled.checkpoint import load_model

    model, meta = load_model(directory)
    if meta.get("app") != APP:
        raise ValueError(
            f"{directory}: not a sequence classifier (saved by {meta.get('app', 'another tool')!r})"
        )
    vocab = CharVocab(meta["vocab"]) if meta["vocab"] is not None else None
    return Classifier(model, meta["classes"], vocab), ClassifyConfig(**meta["classify"]), meta


def read_for_prediction(path: str | Path, cfg: ClassifyConfig, kind: str) -> Records:
    """The sequences of FILE in the layout the model was trained on (labels optional)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if kind == "text":
        if suffix == ".csv":
            col = cfg.text_column or "text"
            return read_text_csv(path, col, cfg.label_column if _has_column(path, cfg.label_column) else None)
        return read_text_lines(path)
    if suffix == ".npz":
        return read_npz(path, need_labels=False)
    if suffix == ".csv":
        if cfg.id_column is None:
            raise ValueError(f"{path}: a long CSV needs the id column; this model was not trained on one")
        label = cfg.label_column if _has_column(path, cfg.label_column) else None
        return read_long_csv(path, cfg.id_column, label, list(cfg.features) or None)
    raise ValueError(f"{path}: expected an .npz or a long .csv for this model (dense features)")


def _has_column(path: Path, column: str) -> bool:
    from unrolled._files import open_regular_file

    with open_regular_file(path, "FILE", encoding="utf-8-sig", errors="replace") as fh:
        return column in [c.strip() for c in fh.readline().split(",")]


# --------------------------------------------------------------------------- the whole run
def train_and_evaluate(
    cfg: ClassifyConfig, workdir=None, resume: bool = False, log=print
) -> tuple[Classifier, SequenceDataset, dict, dict | None]:
    """Load, (de-duplicate,) split, train and test: returns (classifier, data set, training summary,
    test results or None when there is no test split)."""
    ds = cfg.load()
    n_rep = len(ds.repeats())
    if n_rep and cfg.dedupe:
        ds = ds.deduplicated()
        log(f"dropped {n_rep} exact repeats of a (sequence, label) pair")
    elif n_rep:
        log(f"note: {n_rep} sequences repeat an earlier (sequence, label) pair; repeats split into both "
            "train and test inflate the test score (--dedupe drops them)")  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    i_tr, i_va, i_te = stratified_split(ds.labels, cfg.test_frac, cfg.val_frac, rng)
    train, val, test = ds.subset(i_tr), ds.subset(i_va), ds.subset(i_te)
    lengths = [len(x) for x in ds.items]
    log(
        f"{ds.name}: {len(ds.items)} sequences, {len(ds.classes)} classes, "
        f"lengths {min(lengths)}..{max(lengths)}; "
        f"train {len(i_tr)}, validation {len(i_va)}, test {len(i_te)}"
    )
    clf, summary = fit(cfg, train, val, log, workdir=workdir, resume=resume)
    res = evaluate(clf, test, train.labels) if len(i_te) else None
    return clf, ds, summary, res
