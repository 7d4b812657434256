"""The command line as a user meets it when things go wrong: a run directory is never clobbered (not by a
new run, a run of another kind, a second writer or a symbolic link), an input that is not a regular file
is refused at once, every bad input is one line ``unrolled: error: <what>: <why>`` with exit status 2, a
diverged run exits 3 keeping its last good checkpoint, and a signal exits 130 without a traceback.

Everything runs as real subprocesses (`python -m unrolled.cli`), with tiny models."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import unrolled
from unrolled.checkpoint import load_checkpoint, save_checkpoint
from unrolled.commands.main import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_USER_ERROR, error_line
from unrolled.rundir import open_run

SRC = str(Path(unrolled.__file__).resolve().parents[1])
TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat.\n") * 20
CHARLM = "--layers 1 --hidden 8 --embed 4 --seq-len 8 --batch 2 --val-every 1 --quiet".split()
CLASSIFY = "--hidden 8 --embed 4 --batch 8 --epochs 2".split()
FORECAST = "--column y --hidden 8 --lookback 8 --horizon 2 --epochs 2 --no-arima".split()
TRANSLATE = "--hidden 8 --embed-dim 4 --batch 8 --eval-every 2 --quiet".split()


def unrolled_cli(*args, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONIOENCODING": "utf-8"}
    env.pop("UNROLLED_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "unrolled.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, encoding="utf-8",
    )  # fmt: skip


def assert_refused(r: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 and one stderr line `unrolled: error: ...` holding `fragments`; no traceback, no errno."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == EXIT_USER_ERROR, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("unrolled: error: "), r.stderr
    assert "Traceback" not in r.stderr and "[Errno" not in r.stderr and "codec" not in r.stderr, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Small input files of every kind, a FIFO and a few hostile files."""
    d = tmp_path_factory.mktemp("data")
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    rng = np.random.default_rng(0)
    rows = ["text,label"] + [("ab" * int(k) if k % 2 else "xy" * int(k)) + f",{'AB'[k % 2]}" for k in
                             rng.integers(1, 6, 60)]  # fmt: skip
    (d / "cls.csv").write_text("\n".join(rows) + "\n")
    (d / "ser.csv").write_text("t,y\n" + "".join(f"{i},{math.sin(i / 3):.4f}\n" for i in range(120)))
    (d / "pairs.tsv").write_text("".join(f"a{i % 7} b{i % 5}\tc{i % 7} d{i % 5}\n" for i in range(80)))
    (d / "latin.txt").write_bytes("déjà vu, ça va\n".encode("latin-1") * 4)
    (d / "latin.csv").write_bytes("text,label,y\nd\xe9j\xe0,A,1\n".encode("latin-1"))
    (d / "blank_header.csv").write_text("\n\ntext,label,y\n")
    (d / "empty.txt").write_text("")
    (d / "bad.json").write_text("{not json")
    (d / "bad.npy").write_bytes(b"\x93NUMPY and then garbage")
    (d / "adir").mkdir()
    os.mkfifo(d / "fifo")
    return d


def _train(kind: str, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = {
        "charlm": ["--text", data / "text.txt", "--steps", "3", *CHARLM],
        "classify": ["--csv", data / "cls.csv", "--text-column", "text", *CLASSIFY],
        "forecast": ["--csv", data / "ser.csv", *FORECAST],
        "translate": ["--pairs", data / "pairs.tsv", "--steps", "4", *TRANSLATE],
    }[kind]
    return unrolled_cli("train", kind, *args, "--out", out, *extra)


@pytest.fixture(scope="module")
def models(data, tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run of each kind."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("charlm", "classify", "forecast", "translate"):
        r = _train(kind, data, root / kind)
        assert r.returncode == 0, r.stderr
        out[kind] = root / kind
    return out


def _fake_run(path: Path, kind: str) -> None:
    """A finished run of `kind` as a trainer leaves it (marker, checkpoints, metrics)."""
    with open_run(path, kind, resume=False, overwrite=False) as run:
        for name in ("last", "best"):
            save_checkpoint(run.path(name), {"w": np.arange(3.0)}, {"app": kind})
        run.append_line("metrics.jsonl", json.dumps({"step": 1, "loss": 2.5}))


def _tree(path: Path) -> dict[str, bytes]:
    """Every regular file under `path` (links not followed) with its bytes; the lock file left out."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != "run.lock"
    }


KINDS = ["charlm", "classify", "forecast", "translate"]


# --------------------------------------------------------------------------- the run-directory policy
@pytest.mark.parametrize("kind", KINDS)
def test_a_new_run_refuses_a_run_of_another_kind_and_leaves_it_whole(kind, data, tmp_path):
    other = "translate" if kind != "translate" else "charlm"
    _fake_run(tmp_path / "run", other)
    before = _tree(tmp_path / "run")
    r = _train(kind, data, tmp_path / "run")
    assert_refused(r, "--out", f"holds a {other} run", "--overwrite")
    r = _train(kind, data, tmp_path / "run", "--resume")
    assert_refused(r, "--out", f"holds a {other} run, not a {kind} run")
    assert _tree(tmp_path / "run") == before


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_that_is_not_a_run_is_refused_and_the_users_file_is_untouched(kind, data, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("my own metrics\n")  # a name the library also writes
    (folder / "notes.txt").write_text("my notes\n")
    for extra in ((), ("--overwrite",)):
        assert_refused(_train(kind, data, folder, *extra), "--out", "holds no unrolled run")
    assert _tree(folder) == {"metrics.jsonl": b"my own metrics\n", "notes.txt": b"my notes\n"}
    assert not (folder / "run.lock").exists()  # refused before the lock: nothing left behind


@pytest.mark.parametrize("kind", KINDS)
def test_overwrite_replaces_a_run_of_any_kind_with_no_stale_file_and_resume_continues_it(
    kind, data, tmp_path
):
    out = tmp_path / "run"
    other = "classify" if kind != "classify" else "forecast"
    _fake_run(out, other)
    (out / "heldout.tsv").write_text("stale\tstale\n")
    (out / "summary.json").write_text('{"stale": true}\n')
    r = _train(kind, data, out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "run.json").read_text())["kind"] == kind
    files = _tree(out)
    assert all(b"stale" not in v for v in files.values()), [k for k, v in files.items() if b"stale" in v]
    assert all(np.all(np.isfinite(a)) for a in load_checkpoint(_model_checkpoint(out))[0].values())
    more = {"charlm": ["--steps", "5"], "translate": ["--steps", "6"]}.get(kind, ["--epochs", "3"])
    r = _train(kind, data, out, "--resume", *more)
    assert r.returncode == 0, r.stderr


def _model_checkpoint(out: Path) -> Path:
    return out / "last" if (out / "last" / "meta.json").exists() else out


def test_a_failed_new_run_leaves_the_folder_as_it_was(data, tmp_path):
    """A bad input found while reading it (after --out was opened) leaves no run behind, so the corrected
    command needs no --overwrite."""
    out = tmp_path / "run"
    r = unrolled_cli("train", "classify", "--csv", data / "latin.csv", "--text-column", "text",
                     "--out", out, *CLASSIFY)  # fmt: skip
    assert_refused(r, "latin.csv", "not UTF-8", "byte offset 14")
    assert not out.exists() or _tree(out) == {}
    assert _train("classify", data, out).returncode == 0


def test_a_symlinked_metrics_file_in_a_run_is_refused_and_its_target_untouched(data, tmp_path):
    out = tmp_path / "run"
    _fake_run(out, "charlm")
    target = tmp_path / "precious.txt"
    target.write_text("precious\n")
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(target)
    for extra in (("--resume", "--steps", "9"), ("--overwrite",)):
        r = unrolled_cli("train", "charlm", "--text", data / "text.txt", "--out", out, *CHARLM, *extra)
        assert_refused(r, "metrics.jsonl", "symbolic link")
    assert target.read_text() == "precious\n"
    assert (out / "metrics.jsonl").is_symlink()


def test_demo_refuses_a_model_that_is_not_a_demo_and_a_users_folder(models, data, tmp_path):
    for out in (models["charlm"], models["classify"]):
        before = _tree(out)
        assert_refused(unrolled_cli("demo", "--out", out, "--time", "0.01"), "--out", "not a demo")
        assert _tree(out) == before
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert_refused(unrolled_cli("demo", "--out", folder, "--time", "0.01"), "holds no unrolled run")
    assert (folder / "notes.txt").read_text() == "mine"


def test_the_library_fit_opens_a_plain_folder_as_a_run(data, tmp_path):
    from unrolled.apps.charlm import CharLMConfig, fit
    from unrolled.rundir import RunDirError

    cfg = CharLMConfig(layers=1, hidden=8, embed=4, seq_len=8, batch=2, steps=2, val_every=1)
    summary = fit(cfg, [data / "text.txt"], tmp_path / "lib", progress=False, log=lambda s: None)
    assert summary.step == 2 and json.loads((tmp_path / "lib" / "run.json").read_text())["kind"] == "charlm"
    with pytest.raises(RunDirError, match="already holds a charlm run"):
        fit(cfg, [data / "text.txt"], tmp_path / "lib", progress=False, log=lambda s: None)


# --------------------------------------------------------------------------- the lock and signals
def _start(out: Path, text: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("UNROLLED_DEBUG", None)
    args = ["train", "charlm", "--text", str(text), "--out", str(out), "--steps", "1000000", *CHARLM]
    return subprocess.Popen(
        [sys.executable, "-m", "unrolled.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"the trainer ended before {what}: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_pid_and_sigterm_checkpoints_a_resumable_run(data, tmp_path):
    out = tmp_path / "run"
    first = _start(out, data / "text.txt")
    try:
        lock = out / "run.lock"
        _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first, "the lock")
        r = unrolled_cli("train", "charlm", "--text", data / "text.txt", "--out", out, "--resume", *CHARLM)
        assert_refused(r, "--out", f"in use by another unrolled process (pid {first.pid})")
        metrics = out / "metrics.jsonl"
        _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, first, "two steps")
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "SIGTERM" in err, err
    arrays, meta = load_checkpoint(out / "last")
    assert all(np.all(np.isfinite(a)) for a in arrays.values())
    done = meta["trainer"]["step"]
    r = unrolled_cli("train", "charlm", "--out", out, "--resume", "--steps", done + 2, *CHARLM)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out / "last")[1]["trainer"]["step"] == done + 2


def _startup_seconds() -> float:
    """How long this machine takes to start Python and import ``unrolled.commands.main``, whose import
    installs the handler (before that a signal meets Python's own start-up and the default action, which
    no line of unrolled can change), the slowest of three. Timing only ``import runpy`` made the test flaky
    under load: the package's own imports then sometimes outlasted the delay."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import unrolled.commands.main"], check=True,
                       env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
        times.append(time.perf_counter() - t0)
    return max(times)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_is_one_line_and_exit_130(data, tmp_path, sig):
    base = _startup_seconds()
    for i, delay in enumerate((0.03, 0.05, 0.08, 0.12, 0.2)):  # imports, parsing, data, the first steps
        p = _start(tmp_path / f"run{i}", data / "text.txt")
        time.sleep(base + delay)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert "Traceback" not in err, (delay, err)
        assert p.returncode == EXIT_INTERRUPTED, (delay, p.returncode, err)
        assert err.strip().splitlines()[-1].startswith("unrolled: "), err


# --------------------------------------------------------------------------- divergence
def test_lr_100_on_charlm_stops_with_exit_3_keeping_a_finite_last_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    r = unrolled_cli("train", "charlm", "--text", data / "text.txt", "--out", out, "--steps", "12",
                     *CHARLM, "--lr", "100")  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == EXIT_DIVERGED, r.stderr
    assert len(lines) == 1 and lines[0].startswith("unrolled: error: training diverged at step "), r.stderr
    assert f"the last good checkpoint is {out.resolve() / 'last'}" in lines[0]
    arrays, meta = load_checkpoint(out / "last")
    assert all(np.all(np.isfinite(a)) for a in arrays.values())
    assert meta["trainer"]["step"] < 12


def test_lr_100_on_translate_stops_with_exit_3_and_no_nonfinite_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    r = unrolled_cli("train", "translate", "--pairs", data / "pairs.tsv", "--out", out, "--steps", "40",
                     *TRANSLATE, "--lr", "100")  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == EXIT_DIVERGED, r.stderr
    assert lines[-1].startswith("unrolled: error: training diverged at step "), r.stderr
    assert sum(line.startswith("unrolled: error") for line in lines) == 1
    for meta in out.rglob("meta.json"):
        assert all(np.all(np.isfinite(a)) for a in load_checkpoint(meta.parent)[0].values()), meta


# --------------------------------------------------------------------------- inputs that never hang
ENDLESS = {
    "train charlm --text": lambda d, f: ["train", "charlm", "--text", f, "--out", d / "o", *CHARLM],
    "train forecast --csv": lambda d, f: ["train", "forecast", "--csv", f, "--column", "y", "--out", d / "o"],
    "train classify --csv": lambda d, f: [
        "train",
        "classify",
        "--csv",
        f,
        "--text-column",
        "t",
        "--out",
        d / "o",
    ],
    "train classify --npz": lambda d, f: ["train", "classify", "--npz", f, "--out", d / "o"],
    "train translate --pairs": lambda d, f: ["train", "translate", "--pairs", f, "--out", d / "o"],
}


@pytest.mark.parametrize("command", ENDLESS)
@pytest.mark.parametrize("what", ["/dev/zero", "fifo"])
def test_an_endless_or_blocking_input_is_refused_at_once(command, what, data, tmp_path):
    f = Path("/dev/zero") if what == "/dev/zero" else data / "fifo"
    r = unrolled_cli(*ENDLESS[command](tmp_path, f), timeout=30)  # a hang fails here
    assert_refused(r, "is not a regular file", "character device" if what == "/dev/zero" else "FIFO")
    assert not (tmp_path / "o").exists() or _tree(tmp_path / "o") == {}


# --------------------------------------------------------------------------- one error voice
def bad_inputs(d: Path, m: dict[str, Path]) -> dict[str, tuple[list, tuple[str, ...]]]:
    """command line -> what its one error line must say."""
    return {
        "train charlm, missing text": (
            ["train", "charlm", "--text", d / "nope.txt", "--out", d / "o"],
            ("nope.txt", "no such file"),
        ),
        "train charlm, a directory": (
            ["train", "charlm", "--text", d / "adir", "--out", d / "o"],
            ("adir", "directory"),
        ),
        "train charlm, latin-1": (
            ["train", "charlm", "--text", d / "latin.txt", "--out", d / "o"],
            ("latin.txt", "not UTF-8"),
        ),
        "train charlm, empty": (
            ["train", "charlm", "--text", d / "empty.txt", "--out", d / "o"],
            ("empty.txt", "empty"),
        ),
        "train charlm, --out a file": (
            ["train", "charlm", "--text", d / "text.txt", "--out", d / "text.txt"],
            ("--out", "not a directory"),
        ),
        "train charlm, bad option": (
            ["train", "charlm", "--text", d / "text.txt", "--out", d / "o", "--hidden", "0"],
            ("--hidden",),
        ),
        "train classify, missing": (
            ["train", "classify", "--csv", d / "nope.csv", "--text-column", "text", "--out", d / "o"],
            ("nope.csv", "no such file"),
        ),
        "train classify, latin-1": (
            ["train", "classify", "--csv", d / "latin.csv", "--text-column", "text", "--out", d / "o"],
            ("latin.csv", "byte offset"),
        ),
        "train classify, blank header": (
            ["train", "classify", "--csv", d / "blank_header.csv", "--text-column", "text", "--out", d / "o"],
            ("blank_header.csv", "header"),
        ),
        "train classify, unknown column": (
            ["train", "classify", "--csv", d / "cls.csv", "--text-column", "x", "--out", d / "o"],
            ("no column 'x'", "columns: text, label"),
        ),
        "train classify, bad npz": (
            ["train", "classify", "--npz", d / "bad.npy", "--out", d / "o"],
            ("bad.npy", "NPZ"),
        ),
        "train forecast, missing": (
            ["train", "forecast", "--csv", d / "nope.csv", "--column", "y", "--out", d / "o"],
            ("nope.csv", "no such file"),
        ),
        "train forecast, a directory": (
            ["train", "forecast", "--csv", d / "adir", "--column", "y", "--out", d / "o"],
            ("adir", "directory"),
        ),
        "train forecast, latin-1": (
            ["train", "forecast", "--csv", d / "latin.csv", "--column", "y", "--out", d / "o"],
            ("latin.csv", "byte offset"),
        ),
        "train forecast, blank header": (
            ["train", "forecast", "--csv", d / "blank_header.csv", "--column", "y", "--out", d / "o"],
            ("blank_header.csv", "header"),
        ),
        "train forecast, unknown column": (
            ["train", "forecast", "--csv", d / "ser.csv", "--column", "x", "--out", d / "o"],
            ("no column 'x'", "columns: t, y"),
        ),
        "train forecast, bad option": (
            [
                "train",
                "forecast",
                "--csv",
                d / "ser.csv",
                "--column",
                "y",
                "--lookback",
                "0",
                "--out",
                d / "o",
            ],
            ("lookback",),
        ),
        "train translate, missing": (
            ["train", "translate", "--pairs", d / "nope.tsv", "--out", d / "o"],
            ("nope.tsv", "no such file"),
        ),
        "train translate, latin-1": (
            ["train", "translate", "--pairs", d / "latin.txt", "--out", d / "o"],
            ("latin.txt", "not UTF-8"),
        ),
        "train translate, empty": (
            ["train", "translate", "--pairs", d / "empty.txt", "--out", d / "o"],
            ("empty.txt", "no sentence pairs"),
        ),
        "train translate, resume nothing": (
            ["train", "translate", "--pairs", d / "pairs.tsv", "--out", d / "o", "--resume"],
            ("--out", "no run to continue"),
        ),
        "sample, wrong kind": (["sample", m["classify"]], ("not a character-level language model",)),
        "sample, missing dir": (["sample", d / "nope"], ("nope",)),
        "eval, missing text": (
            ["eval", m["charlm"], "--text", d / "nope.txt"],
            ("--text", "nope.txt", "no such file"),
        ),
        "eval, /dev/zero": (["eval", m["charlm"], "--text", "/dev/zero"], ("--text", "not a regular file")),
        "eval, latin-1": (["eval", m["charlm"], "--text", d / "latin.txt"], ("latin.txt", "not UTF-8")),
        "eval, pairs FIFO": (["eval", m["translate"], "--pairs", d / "fifo"], ("fifo", "FIFO")),
        "forecast, wrong kind": (["forecast", m["classify"]], ("not a forecasting model",)),
        "forecast, --csv FIFO": (["forecast", m["forecast"], "--csv", d / "fifo"], ("fifo", "FIFO")),
        "forecast, --csv missing": (
            ["forecast", m["forecast"], "--csv", d / "nope.csv"],
            ("nope.csv", "no such file"),
        ),
        "forecast, bad horizon": (["forecast", m["forecast"], "--horizon", "0"], ("--horizon",)),
        "classify, /dev/zero": (["classify", m["classify"], "/dev/zero"], ("not a regular file",)),
        "classify, a directory": (["classify", m["classify"], d / "adir"], ("adir", "directory")),
        "classify, latin-1": (["classify", m["classify"], d / "latin.txt"], ("latin.txt", "not UTF-8")),
        "classify, wrong kind": (["classify", m["forecast"], d / "cls.csv"], ("not a sequence classifier",)),
        "translate, wrong kind": (["translate", m["charlm"], "hello"], ("charlm", "not a translation model")),
        "translate, bad beam": (["translate", m["translate"], "--beam", "0", "a1"], ("--beam",)),
        "diagnose, missing": (["diagnose", d / "nope"], ("nope", "no such")),
        "diagnose, FIFO config": (["diagnose", d / "fifo"], ("fifo", "FIFO")),
        "diagnose, latin-1 config": (["diagnose", d / "latin.txt"], ("latin.txt", "not UTF-8")),
        "diagnose, bad JSON": (["diagnose", d / "bad.json"], ("bad.json", "not a JSON config")),
        "diagnose, --input FIFO": (["diagnose", m["charlm"], "--input", d / "fifo"], ("--input", "FIFO")),
        "diagnose, --input garbage": (
            ["diagnose", m["charlm"], "--input", d / "bad.npy"],
            ("--input", "not a plain .npy"),
        ),
        "export, not a checkpoint": (["export", d / "adir", "--onnx", d / "x.onnx"], ("adir",)),
        "export, missing dir": (["export", d / "nope", "--onnx", d / "x.onnx"], ("nope",)),
    }


def test_every_bad_input_of_every_command_is_one_line_and_exit_2(data, models, tmp_path):
    table = bad_inputs(data, models)
    failures = []
    for name, (argv, fragments) in table.items():
        r = unrolled_cli(*argv, timeout=60)
        try:
            assert_refused(r, *fragments)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


def test_error_line_names_the_file_of_an_os_error_and_the_offset_of_a_bad_byte():
    assert error_line(FileNotFoundError(2, "No such file or directory", "data.csv")) == (
        "data.csv: no such file or directory"
    )
    e = UnicodeDecodeError("utf-8", b"ab\xe9", 2, 3, "invalid continuation byte")
    assert error_line(e) == "not UTF-8 text (byte 0xe9 at byte offset 2 cannot be decoded)"
    assert error_line(RuntimeError("first line\nsecond")) == "first line"


def test_train_charlm_resumes_a_demo_run_old_or_new(data, tmp_path):
    from unrolled.apps.charlm import CharLMConfig, fit

    cfg = CharLMConfig(layers=1, hidden=8, embed=4, seq_len=8, batch=2, steps=2, val_every=1)
    for marked in (True, False):
        out = tmp_path / f"demo{marked}"
        fit(cfg, [data / "text.txt"], out, progress=False, log=lambda s: None, extra_meta={"demo": True})
        if not marked:
            (out / "run.json").unlink()  # a demo written before run.json existed
        r = unrolled_cli("train", "charlm", "--out", out, "--resume", "--steps", "4", "--quiet")
        assert r.returncode == 0, r.stderr
        assert load_checkpoint(out / "last")[1]["demo"] is True  # still a demo, for `unrolled demo`


def test_a_text_that_is_a_device_is_refused_before_any_read():
    from unrolled.apps.charlm.text import TextError, scan_texts

    with pytest.raises(TextError, match=r"^text: /dev/zero is not a regular file \(a character device\)$"):
        scan_texts(["/dev/zero"])  # as named in a crafted meta.json that --resume reads
