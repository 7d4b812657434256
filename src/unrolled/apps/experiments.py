"""The classic long-dependency experiments: the adding problem, the copy-memory task and parity.

Adding problem (Hochreiter & Schmidhuber 1997; the two-marker form of Le et al. 2015): x_t = (v_t, m_t)
with v_t ~ U(0, 1) and exactly two markers m_i = m_j = 1, i uniform in the first half of the sequence and
j in the second; the target, read after the last step, is v_i + v_j. Predicting the mean 1 gives
MSE Var(v_i + v_j) = 1/6, the trivial baseline; *solved* = test MSE < 0.1 × 1/6.

Copy memory (Arjovsky et al. 2016): 10 symbols from an alphabet of 8 (ids 1..8), then T − 1 blanks (0),
a delimiter (9), and 10 more blanks; the model must output blanks for the first T + 10 steps and then
the 10 symbols. The sequence has T + 20 steps, so the memory must bridge T + 10 of them. Predicting
blanks and then uniform symbols gives cross-entropy 10·ln 8 / (T + 20), the baseline; *solved* =
accuracy ≥ 99% on the 10 recalled symbols (the blanks are easy and not counted).

Parity (Hochreiter & Schmidhuber 1997; Bengio et al. 1994's latching problem in its hardest form):
x_t ∈ {0, 1} for t = 1..T, the target, read after the last step, is x_1 ⊕ … ⊕ x_T. Every input bit
matters to the end, so the gradient must reach back all T steps; no partial sum of the bits helps.
Guessing gives cross-entropy ln 2, the baseline; *solved* = test accuracy ≥ 99%.

Training: :class:`~unrolled.models.SequenceModel`, Adam (:mod:`unrolled.optim`), optional global-norm
clipping (:func:`unrolled.clip.clip_grad_norm`), fresh random batches every step, a fixed test set;
evaluation every ``eval_every`` steps, where γ is measured by
:class:`unrolled.diagnostics.callback.GammaMonitor` on 4 test sequences. A run stops when solved,
when its step or time budget is spent, or when the loss turns non-finite (recorded as diverged).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unrolled._checks import one_of, positive_float, positive_int
from unrolled.clip import clip_grad_norm, global_norm
from unrolled.diagnostics.callback import GammaMonitor
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import cross_entropy, mse
from unrolled.optim import Adam

TASKS = ("adding", "copy", "parity")
CELLS = ("rnn", "lstm", "gru")
SCAN_CELLS = (
    "mingru",
    "minlstm",
)  # unrolled.minlayers: not in the default grid; no γ (their J_t = diag(a_t))
COPY_SYMBOLS, COPY_LENGTH, BLANK, DELIMITER = 8, 10, 0, 9


# --------------------------------------------------------------------------- the tasks
def adding_batch(T: int, B: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (T, B, 2) float32 [value, marker], y (B, 1) float32 the sum of the two marked values."""
    if T < 2:
        raise ValueError(f"T: the adding problem needs T ≥ 2, got {T}")
    half = (T + 1) // 2
    v = rng.random((T, B))
    i = rng.integers(0, half, size=B)
    j = rng.integers(half, T, size=B)
    m = np.zeros((T, B))
    m[i, np.arange(B)] = 1.0
    m[j, np.arange(B)] = 1.0
    y = v[i, np.arange(B)] + v[j, np.arange(B)]
    return np.stack([v, m], axis=2).astype(np.float32), y[:, None].astype(np.float32)


def copy_batch(T: int, B: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (T+20, B) token ids, y (T+20, B) target ids (0 blank, 1..8 symbols); the delimiter is id 9."""
    if T < 1:
        raise ValueError(f"T: the copy task needs T ≥ 1, got {T}")
    n = COPY_LENGTH
    L = T + 2 * n
    s = rng.integers(1, COPY_SYMBOLS + 1, size=(n, B))
    x = np.full((L, B), BLANK, dtype=np.int64)
    x[:n] = s
    x[n + T - 1] = DELIMITER
    y = np.full((L, B), BLANK, dtype=np.int64)
    y[-n:] = s
    return x, y


def parity_batch(T: int, B: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (T, B, 1) float32 bits, y (B,) int64 their parity x_1 ⊕ … ⊕ x_T."""
    if T < 1:
        raise ValueError(f"T: the parity task needs T ≥ 1, got {T}")
    bits = rng.integers(0, 2, size=(T, B))
    return bits[:, :, None].astype(np.float32), (bits.sum(axis=0) % 2).astype(np.int64)


def baseline(task: str, T: int) -> float:
    """The loss of the trivial solution: 1/6 (adding, MSE of predicting 1); 10 ln 8/(T+20) (copy, CE);
    ln 2 (parity, CE of guessing)."""
    if task == "parity":
        return math.log(2.0)
    return 1.0 / 6.0 if task == "adding" else COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)


# --------------------------------------------------------------------------- one run
@dataclass
class RunConfig:
    """One training run. The defaults are the grid's (small, so that the grid fits two shared CPU cores)."""

    task: str = "adding"  # "adding" | "copy" | "parity"
    cell: str = "lstm"  # "rnn" | "lstm" | "gru" | "mingru" | "minlstm"
    T: int = 50  # sequence length (adding) or the blank delay (copy)
    clip: float | None = 1.0  # global-norm clipping threshold; None = no clipping
    seed: int = 0  # weights, training batches; the test set has its own fixed seed
    hidden_size: int = 32
    batch_size: int = 32
    lr: float = 1e-2  # Adam (1e-2: the adding problem at T = 50 is solved in 400 steps, 1e-3 needs > 600)
    max_steps: int = 2000  # the step budget
    time_budget_s: float | None = None  # the wall-clock budget (None: only the step budget)
    eval_every: int = 100
    test_size: int = 256

    def __post_init__(self) -> None:
        one_of("task", self.task, TASKS)
        one_of("cell", self.cell, CELLS + SCAN_CELLS)
        for name in ("T", "hidden_size", "batch_size", "max_steps", "eval_every", "test_size"):
            positive_int(name, getattr(self, name))
        if self.clip is not None:  # None = no clipping
            positive_float("clip", self.clip)
        positive_float("lr", self.lr)

    def key(self) -> tuple:
        """What identifies a run in a results file (for resuming a grid)."""
        return (self.task, self.cell, self.T, self.clip, self.seed, self.hidden_size, self.batch_size,
                self.lr, self.max_steps)  # fmt: skip


def _model(cfg: RunConfig) -> SequenceModel:
    common = dict(cell=cfg.cell, hidden_size=cfg.hidden_size, seed=cfg.seed)
    if cfg.task == "adding":
        return SequenceModel(ModelConfig(input="dense", input_size=2, output_size=1, output="last", **common))
    if cfg.task == "parity":
        return SequenceModel(ModelConfig(input="dense", input_size=1, output_size=2, output="last", **common))
    return SequenceModel(
        ModelConfig(input="tokens", vocab_size=COPY_SYMBOLS + 2, embed_dim=16, output_size=COPY_SYMBOLS + 1,
                    output="sequence", **common)
    )  # fmt: skip


def _batch(cfg: RunConfig, B: int, rng: np.random.Generator):
    return {"adding": adding_batch, "copy": copy_batch, "parity": parity_batch}[cfg.task](cfg.T, B, rng)


def _loss(cfg: RunConfig, y_hat: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(loss, ∂loss/∂y_hat, task metric): MSE for adding; CE over all steps and recall accuracy for copy;
    CE and accuracy of the final prediction for parity."""
    if cfg.task == "adding":
        loss, dy = mse(y_hat, y)
        return loss, dy, loss
    if cfg.task == "parity":
        loss, dy = cross_entropy(y_hat, y)  # y_hat (B, 2) logits, y (B,) ids
        return loss, dy, float((y_hat.argmax(axis=-1) == y).mean())
    loss, dy = cross_entropy(y_hat, y)
    acc = float((y_hat[-COPY_LENGTH:].argmax(axis=-1) == y[-COPY_LENGTH:]).mean())
    return loss, dy, acc


def solved(task: str, T: int, test_loss: float, metric: float) -> bool:
    """Adding: test MSE < 0.1 × baseline; copy: recall accuracy ≥ 0.99; parity: accuracy ≥ 0.99."""
    if task == "adding":
        return test_loss < 0.1 * baseline(task, T)
    return metric >= 0.99


def run_one(cfg: RunConfig, log=None, figure: str | Path | None = None) -> dict:
    """Train one model and return its record (JSON-able): the verdict, the numbers and the history.

    Record fields: the config; ``solved``; ``steps_to_solve`` (the first evaluation at which the test
    criterion held, or None); ``steps_run``; ``stop`` ("solved" | "steps" | "time" | "diverged");
    ``final_loss`` and ``final_metric`` on the test set; ``baseline``; ``gamma_init`` / ``gamma_final``
    (γ of ‖∂s_T/∂s_k‖ on 4 test sequences, first layer) and ``regime_final``; ``max_grad_norm`` (global
    norm before clipping); ``wall_s``; ``history`` [{step, train_loss, test_loss, metric, gamma, grad_norm}].
    With `figure`, the diagnostics figure of the final model on the probe batch is written there.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    x_test, y_test = _batch(cfg, cfg.test_size, np.random.default_rng(np.random.SeedSequence([12345, cfg.T])))
    model = _model(cfg)
    opt = Adam(model.params, lr=cfg.lr)
    probe = x_test[:, :4]
    monitor = GammaMonitor(probe, every=cfg.eval_every) if cfg.cell in CELLS else None
    t0 = time.perf_counter()

    def evaluate(step: int, train_loss: float, gnorm: float) -> dict:
        model.eval()
        y_hat, _ = model.forward(x_test)
        loss, _, metric = _loss(cfg, y_hat, y_test)
        model.train()
        g = monitor.measure(model, step)["gamma"] if monitor is not None else math.nan
        rec = dict(step=step, train_loss=train_loss, test_loss=loss, metric=metric, gamma=g, grad_norm=gnorm)
        if log:
            log(f"{cfg.task} {cfg.cell} T={cfg.T} clip={cfg.clip} seed={cfg.seed} step {step}: "
                f"test loss {loss:.4g} metric {metric:.4g} γ {g:.4f} |g| {gnorm:.3g}")  # fmt: skip
        return rec

    history = [evaluate(0, math.nan, math.nan)]
    stop, steps_to_solve, step, max_gnorm = "steps", None, 0, 0.0
    losses, gnorms = [], []
    for step in range(1, cfg.max_steps + 1):
        x, y = _batch(cfg, cfg.batch_size, rng)
        y_hat, _ = model.forward(x)
        loss, dy, _ = _loss(cfg, y_hat, y)
        model.backward(dy)
        gn = clip_grad_norm(model.grads, cfg.clip) if cfg.clip is not None else global_norm(model.grads)
        if not (math.isfinite(loss) and math.isfinite(gn)):
            stop = "diverged"
            break
        opt.step(model.grads)
        losses.append(loss)
        gnorms.append(gn)
        max_gnorm = max(max_gnorm, gn)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            h = evaluate(step, float(np.mean(losses)), float(np.max(gnorms)))
            losses, gnorms = [], []
            history.append(h)
            if not math.isfinite(h["test_loss"]):
                stop = "diverged"
                break
            if solved(cfg.task, cfg.T, h["test_loss"], h["metric"]):
                stop, steps_to_solve = "solved", step
                break
            if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
                stop = "time"
                break
    last = history[-1]
    if figure is not None:
        from unrolled.diagnostics import diagnose_model
        from unrolled.diagnostics.plot import plot_diagnosis

        title = (
            f"{cfg.task} T={cfg.T}, {cfg.cell}, clip {cfg.clip}, seed {cfg.seed}: after {step} steps ({stop})"
        )
        try:
            plot_diagnosis(diagnose_model(model, probe), figure, title=title)
        except (ValueError, OverflowError, FloatingPointError) as e:  # a figure never costs a run its record
            if log:
                log(f"warning: no figure {figure}: {type(e).__name__}: {e}")
    return {
        **dataclasses.asdict(cfg),
        "solved": steps_to_solve is not None,
        "steps_to_solve": steps_to_solve,
        "steps_run": step if stop != "diverged" else step - 1,
        "stop": stop,
        "final_loss": last["test_loss"],
        "final_metric": last["metric"],
        "baseline": baseline(cfg.task, cfg.T),
        "gamma_init": history[0]["gamma"],
        "gamma_final": last["gamma"],
        "regime_final": monitor.history[-1]["regime"] if monitor is not None else None,
        "max_grad_norm": max_gnorm,
        "wall_s": time.perf_counter() - t0,
        "history": history,
    }


# --------------------------------------------------------------------------- grids and results
def grid(task: str, Ts, cells, clips, seeds, **common) -> list[RunConfig]:
    """Every combination, seed by seed and shortest sequences first: a grid stopped part-way leaves
    whole rows of the table (every cell and clipping setting at each T) for the seeds it reached."""
    return [
        RunConfig(task=task, cell=c, T=int(T), clip=clip, seed=int(s), **common)
        for s in seeds
        for T in sorted(Ts)
        for clip in clips
        for c in cells
    ]


def read_results(paths) -> list[dict]:
    """The records of one or more JSON-lines results files: a cut line is skipped, and a run found twice
    (the same :meth:`RunConfig.key`, e.g. from two processes given overlapping grids) counts once."""
    out, seen = [], set()
    for p in paths:
        for line in Path(p).read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(r, dict) or not all(k in r for k in _CONFIG_FIELDS):
                continue
            key = RunConfig(**{k: r[k] for k in _CONFIG_FIELDS}).key()
            if key not in seen:
                seen.add(key)
                out.append(r)
    return out


def run_grid(
    configs: list[RunConfig], results: str | Path, log=None, figure_dir: str | Path | None = None
) -> list[dict]:
    """Run every config not already in `results` (JSON lines, appended one record per finished run).

    With `figure_dir`, each seed-0 run also writes the diagnostics figure of its final model there.
    """
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if results.exists():
        done = {RunConfig(**{k: r[k] for k in _CONFIG_FIELDS}).key() for r in read_results([results])}
    todo = [cfg for cfg in configs if cfg.key() not in done]
    if log and len(todo) < len(configs):
        log(f"== {len(configs) - len(todo)} of {len(configs)} runs already in {results}; {len(todo)} to go")
    out = []
    t0 = time.perf_counter()
    for i, cfg in enumerate(todo):
        fig = None
        if figure_dir is not None and cfg.seed == 0:
            clip = "off" if cfg.clip is None else f"{cfg.clip:g}"
            fig = Path(figure_dir) / f"{cfg.task}_T{cfg.T}_{cfg.cell}_clip{clip}.png"
            fig.parent.mkdir(parents=True, exist_ok=True)
        rec = run_one(cfg, log=log, figure=fig)
        with results.open("a+b") as f:
            f.seek(0, 2)
            if f.tell() > 0:
                f.seek(-1, 2)
                if f.read(1) != b"\n":  # a line cut by a killed run: start a fresh line
                    f.write(b"\n")
            f.write((json.dumps(rec, allow_nan=True) + "\n").encode())
        out.append(rec)
        if log:
            log(f"{_summary_line(rec)}  [{_grid_progress(i + 1, len(todo), time.perf_counter() - t0)}]")
    return out


def _grid_progress(finished: int, total: int, elapsed_s: float) -> str:
    """ "run 3/90, 2 min so far, about 58 min left": the time left is the mean time of a finished run times
    the runs left (runs grow with T, so the estimate is low early in a grid sorted by T)."""
    left = elapsed_s / finished * (total - finished)
    tail = f", about {_duration(left)} left" if finished < total else ""
    return f"run {finished}/{total}, {_duration(elapsed_s)} so far{tail}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_CONFIG_FIELDS = [f.name for f in dataclasses.fields(RunConfig)]


def _summary_line(r: dict) -> str:
    verdict = f"SOLVED in {r['steps_to_solve']} steps" if r["solved"] else f"not solved ({r['stop']})"
    return (
        f"== {r['task']} {r['cell']} T={r['T']} clip={r['clip']} seed={r['seed']}: {verdict}; "
        f"final loss {r['final_loss']:.4g} (baseline {r['baseline']:.4g}), metric {r['final_metric']:.4g}, "
        f"γ {r['gamma_init']:.3f} → {r['gamma_final']:.3f}, {r['wall_s']:.0f} s"
    )


def results_table(records: list[dict]) -> str:
    """A markdown table, one row per setting (task, T, cell, clip, budget, H, batch, lr), over its seeds.

    Lists within a cell are per seed, in the order of the seeds column.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["task"], r["T"], (CELLS + SCAN_CELLS).index(r["cell"]), r["clip"] is None, r["clip"] or 0.0,
               r["max_steps"], r["hidden_size"], r["batch_size"], r["lr"])  # fmt: skip
        groups.setdefault(key, []).append(r)
    lines = [
        "| task | T | cell | clip | budget | lr | seeds | solved | steps to solve (median) | steps run "
        "| final loss / baseline | final metric | γ at init | γ at end | max ‖g‖ | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        rs = sorted(groups[key], key=lambda r: r["seed"])
        task, T, cell, clip = rs[0]["task"], rs[0]["T"], rs[0]["cell"], rs[0]["clip"]
        sol = [r["steps_to_solve"] for r in rs if r["solved"]]
        metric = "MSE" if task == "adding" else "acc"
        ratio = _join(_fmt(r["final_loss"] / r["baseline"], ".3g") for r in rs)
        metrics = _join(_fmt(r["final_metric"], ".3g") for r in rs)
        g0 = _join(_fmt(r["gamma_init"], ".3f") for r in rs)
        g1 = _join(_fmt(r["gamma_final"], ".3f") for r in rs)
        gmax = _join(_fmt(r["max_grad_norm"], ".3g") for r in rs)
        lines.append(
            f"| {task} | {T} | {cell} | {clip if clip is not None else 'off'} | {rs[0]['max_steps']} "
            f"| {rs[0]['lr']:g} "
            f"| {_join(r['seed'] for r in rs)} | {len(sol)}/{len(rs)} | "
            f"{int(np.median(sol)) if sol else '—'} | {_join(r['steps_run'] for r in rs)} | {ratio} | "
            f"{metric} {metrics} | {g0} | {g1} | {gmax} | {sum(r['wall_s'] for r in rs):.0f} |"
        )
    return "\n".join(lines)


def _fmt(v, spec: str) -> str:
    return format(v, spec) if v is not None and math.isfinite(v) else "nan"


def _join(items) -> str:
    return ", ".join(str(i) for i in items)


# --------------------------------------------------------------------------- figure
def plot_results(records: list[dict], path) -> None:
    """Per task a row: test loss / baseline against steps for each T (colour = cell, dashed = no
    clipping, one line per seed), and a last panel of γ at the end against T."""
    from unrolled.diagnostics.plot import pyplot

    plt = pyplot()
    tasks = [t for t in ("adding", "copy", "parity") if any(r["task"] == t for r in records)]
    Ts = sorted({r["T"] for r in records})
    fig, axes = plt.subplots(len(tasks), len(Ts) + 1, figsize=(3.6 * (len(Ts) + 1), 3.3 * len(tasks)),
                             squeeze=False)  # fmt: skip
    colors = {"rnn": "C3", "lstm": "C0", "gru": "C2", "mingru": "C1", "minlstm": "C4"}
    for row, task in zip(axes, tasks, strict=True):
        rs = [r for r in records if r["task"] == task]
        for ax, T in zip(row[:-1], Ts, strict=True):
            for r in (r for r in rs if r["T"] == T):
                h = r["history"]
                steps = [e["step"] for e in h]
                y = [e["test_loss"] / r["baseline"] for e in h]
                ax.semilogy(
                    steps, y, color=colors[r["cell"]], ls="-" if r["clip"] is not None else "--", lw=1
                )
            ax.axhline(0.1 if task == "adding" else 1.0, color="grey", lw=0.6, ls=":")
            ax.set_title(f"{task}, T = {T}")
            ax.set_xlabel("step")
            ax.set_ylabel("test loss / baseline")
            ax.grid(True, which="both", alpha=0.3)
        ax = row[-1]
        for cell in CELLS + SCAN_CELLS:
            for clip_on in (True, False):
                pts = [
                    (r["T"], r["gamma_final"])
                    for r in rs
                    if r["cell"] == cell and (r["clip"] is not None) == clip_on
                ]
                if pts:
                    T_, g_ = np.array(pts).T
                    ax.plot(T_, g_, "o" if clip_on else "x", color=colors[cell],
                            label=f"{cell} {'clip' if clip_on else 'no clip'}")  # fmt: skip
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel("γ at the end (layer 0)")
        ax.set_title(f"{task}: fitted γ after training")
        ax.legend(fontsize=6)
    for cell, c in colors.items():
        axes[0][0].plot([], [], color=c, label=cell)
    axes[0][0].plot([], [], color="k", ls="--", label="no clipping")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
