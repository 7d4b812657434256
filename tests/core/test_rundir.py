"""Run directories: a run is never clobbered (not by a new run, a run of another kind, a second writer,
or a symbolic link), --overwrite removes only what unrolled wrote, and inputs that are not regular
files (devices, FIFOs, sockets, directories) are refused at once instead of spinning or blocking."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import unrolled
from unrolled import _files
from unrolled._files import check_regular_file, open_append, open_regular_file
from unrolled.checkpoint import save_checkpoint
from unrolled.rundir import RunDirError, open_run

SRC = str(Path(unrolled.__file__).resolve().parents[1])


def _run(path, kind="charlm", **kw):
    kw.setdefault("resume", False)
    kw.setdefault("overwrite", False)
    return open_run(path, kind, **kw)


def _finished_run(path, kind="charlm"):
    """A run as a trainer leaves it: marker, checkpoints in last/ and best/, metrics, summary."""
    with _run(path, kind) as run:
        for name in ("last", "best"):
            save_checkpoint(run.path(name), {"w": np.arange(3.0)}, {"app": kind})
        run.append_line("metrics.jsonl", json.dumps({"step": 1, "loss": 2.5}))
        run.write_json("summary.json", {"step": 1})
    return Path(path)


def _tree(path):
    """Every file below `path` with its bytes (links as their target), to prove nothing changed."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@contextmanager
def _deadline(seconds):
    """Fail (TimeoutError) instead of hanging when the body blocks, e.g. opening a FIFO."""

    def expire(*_):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- new, resume, overwrite
def test_a_new_run_creates_missing_parents_writes_its_kind_and_holds_the_lock(tmp_path):
    d = tmp_path / "a" / "b" / "run"
    with _run(d, "forecast") as run:
        assert run.root == d.resolve() and run.kind == "forecast" and not run.resumed
        assert json.loads((d / "run.json").read_text()) == {
            "format": "unrolled-run",
            "version": 1,
            "kind": "forecast",
        }
        assert (d / "run.lock").read_text().strip() == str(os.getpid())
    assert not run.locked
    assert (d / "run.lock").read_text() == ""  # no stale pid names a holder


def test_a_run_of_another_kind_is_refused_naming_both(tmp_path):
    d = _finished_run(tmp_path / "run", "classify")
    before = _tree(d)
    with pytest.raises(RunDirError, match="holds a classify run"):
        _run(d, "charlm")
    with pytest.raises(RunDirError, match="holds a classify run, not a charlm run"):
        _run(d, "charlm", resume=True)
    assert _tree(d) == before


def test_a_new_run_over_a_run_of_the_same_kind_is_refused(tmp_path):
    d = _finished_run(tmp_path / "run")
    with pytest.raises(RunDirError, match="already holds a charlm run; continue it with --resume"):
        _run(d)


def test_resume_of_the_same_kind_continues_and_leaves_a_users_file(tmp_path):
    d = _finished_run(tmp_path / "run")
    (d / "notes.txt").write_text("mine")
    with _run(d, resume=True) as run:
        assert run.resumed
        run.append_line("metrics.jsonl", json.dumps({"step": 2}))
    assert [json.loads(s)["step"] for s in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (d / "notes.txt").read_text() == "mine"
    assert (d / "last" / "meta.json").exists()


def test_resume_of_nothing_is_refused_and_creates_nothing(tmp_path):
    with pytest.raises(RunDirError, match="holds no run to continue"):
        _run(tmp_path / "missing", resume=True)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="holds no run to continue"):
        _run(tmp_path / "empty", resume=True)


def test_overwrite_removes_only_what_unrolled_wrote_and_starts_the_new_kind(tmp_path):
    d = _finished_run(tmp_path / "run", "classify")
    (d / "training").mkdir()
    save_checkpoint(d / "training" / "last", {"w": np.ones(2)}, {"app": "classify"})
    with _run(d, "charlm", overwrite=True) as run:
        assert sorted(p.name for p in d.iterdir()) == ["run.json", "run.lock"]
        assert json.loads((d / "run.json").read_text())["kind"] == "charlm" and not run.resumed


def test_overwrite_of_a_run_holding_a_users_file_is_refused_and_removes_nothing(tmp_path):
    d = _finished_run(tmp_path / "run")
    (d / "best" / "my-plot.png").write_bytes(b"png")
    before = _tree(d)
    with pytest.raises(RunDirError, match=r"also holds best/my-plot\.png"):
        _run(d, overwrite=True)
    assert _tree(d) == before


@pytest.mark.parametrize("mode", [{}, {"resume": True}, {"overwrite": True}])
def test_a_non_empty_folder_that_is_not_a_run_is_refused_in_every_mode(tmp_path, mode):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"my": "metrics"}\n')  # our names alone do not make a run
    (d / "summary.json").write_text("{}")
    (d / "data.csv").write_text("a,b\n")
    before = _tree(d)
    with pytest.raises(RunDirError, match="not empty and holds no unrolled run|holds no run"):
        _run(d, **mode)
    assert _tree(d) == before  # not even a run.lock left behind


def test_a_run_json_of_another_tool_is_the_users_file(tmp_path):
    d = tmp_path / "other"
    d.mkdir()
    (d / "run.json").write_text('{"experiment": 3}')
    with pytest.raises(RunDirError, match=r"holds no unrolled run \(run\.json\)"):
        _run(d, overwrite=True)
    assert (d / "run.json").read_text() == '{"experiment": 3}'


def test_a_run_from_before_the_marker_is_recognised_by_its_checkpoint_and_its_app(tmp_path):
    d = tmp_path / "old"
    save_checkpoint(d / "last", {"w": np.zeros(2)}, {"app": "charlm", "demo": True})
    (d / "metrics.jsonl").write_text("")
    with pytest.raises(RunDirError, match="holds a demo run, not a charlm run"):
        _run(d, "charlm", resume=True)
    with _run(d, "demo", resume=True):
        pass
    assert json.loads((d / "run.json").read_text())["kind"] == "demo"  # marked from now on
    classify = tmp_path / "classify"  # classify and forecast keep the model at the top
    save_checkpoint(classify, {"w": np.zeros(2)}, {"app": "classify"})
    with pytest.raises(RunDirError, match="already holds a classify run"):
        _run(classify, "classify")


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="resume / overwrite: expected at most one"):
        _run(tmp_path / "r", resume=True, overwrite=True)
    with pytest.raises(ValueError, match="kind: expected a lower-case name"):
        _run(tmp_path / "r", "Char LM")
    with pytest.raises(TypeError, match="resume: expected True or False, got 1"):
        _run(tmp_path / "r", resume=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        _run(tmp_path / "file")


# --------------------------------------------------------------------------- symbolic links
@pytest.mark.parametrize("mode", [{"resume": True}, {"overwrite": True}])
def test_a_symlinked_metrics_file_is_refused_and_its_target_untouched(tmp_path, mode):
    d = _finished_run(tmp_path / "run")
    target = tmp_path / "precious.jsonl"
    target.write_text("precious\n")
    (d / "metrics.jsonl").unlink()
    (d / "metrics.jsonl").symlink_to(target)
    with pytest.raises(RunDirError, match="metrics.jsonl is a symbolic link"):
        _run(d, **mode)
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("mode", [{"resume": True}, {"overwrite": True}])
def test_a_symlinked_best_directory_is_refused_and_its_target_untouched(tmp_path, mode):
    d = _finished_run(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "arrays-0123456789abcdef.safetensors").write_bytes(b"x")
    (elsewhere / ".unrolled-1-0123456789abcdef.tmp").write_bytes(b"y")
    before = _tree(elsewhere)
    for p in (d / "best").iterdir():
        p.unlink()
    (d / "best").rmdir()
    (d / "best").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunDirError, match="best is a symbolic link"):
        _run(d, **mode)
    assert _tree(elsewhere) == before


def test_run_paths_refuse_links_and_names_outside_the_run(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("{}")
    with _run(tmp_path / "run") as run:
        (run.root / "summary.json").symlink_to(target)
        with pytest.raises(RunDirError, match="summary.json: is a symbolic link"):
            run.write_json("summary.json", {"step": 9})
        (run.root / "best").symlink_to(tmp_path, target_is_directory=True)
        with pytest.raises(RunDirError, match="best: is a symbolic link"):
            run.path("best", "meta.json")
        for bad in ("../escape", "/etc/passwd", "a/../../b"):
            with pytest.raises(RunDirError, match="expected a name inside"):
                run.path(bad)
    assert target.read_text() == "{}"


def test_append_never_writes_through_a_link_swapped_in_after_the_check(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep\n")
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        open_append(link)  # O_NOFOLLOW: what run.open_append does after run.path's check
    assert target.read_text() == "keep\n"


def test_append_to_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    with _deadline(5), pytest.raises(ValueError, match="is not a regular file \\(a FIFO\\)"):
        open_append(fifo)


# --------------------------------------------------------------------------- atomic writes, cleanup
def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    with _run(tmp_path / "run") as run:
        run.write_json("summary.json", {"step": 1})

        def crash(src, dst):
            raise OSError("simulated crash")

        monkeypatch.setattr(_files.os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            run.write_json("summary.json", {"step": 2})
        monkeypatch.undo()
        assert json.loads((run.root / "summary.json").read_text()) == {"step": 1}
        assert sorted(p.name for p in run.root.iterdir()) == ["run.json", "run.lock", "summary.json"]


def test_cleanup_removes_only_dead_writers_temporaries_of_our_own_shape(tmp_path):
    d = _finished_run(tmp_path / "run")
    dead = f".unrolled-{_dead_pid()}-{'c' * 16}.tmp"
    live = f".unrolled-{os.getpid()}-{'d' * 16}.tmp"
    for sub in (d, d / "last"):
        for name in ("notes.tmp", ".meta.json.abc.tmp", "arrays-old.safetensors", dead, live):
            (sub / name).write_bytes(b"x")
    with _run(d, resume=True) as run:  # opening a run cleans up after crashed writers
        assert not (d / dead).exists() and not (d / "last" / dead).exists()
        for sub in (d, d / "last"):
            for name in ("notes.tmp", ".meta.json.abc.tmp", "arrays-old.safetensors", live):
                assert (sub / name).read_bytes() == b"x"
        assert run.remove_temporaries() == []


# --------------------------------------------------------------------------- the lock
_HOLDER = """
import sys
from unrolled.rundir import open_run
run = open_run(sys.argv[1], "charlm", resume=False, overwrite=False)
print("ready", flush=True)
sys.stdin.read()
run.close()
"""


def _holder(path):
    env = {**os.environ, "PYTHONPATH": SRC}
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    line = p.stdout.readline()
    assert line == "ready\n", f"the holder did not start: {line!r}"
    return p


@pytest.mark.parametrize("ending", ["exit", "SIGKILL"])
def test_a_second_writer_is_refused_naming_the_first_and_may_start_once_it_ends(tmp_path, ending):
    d = tmp_path / "run"
    first = _holder(d)
    try:
        for mode in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(RunDirError, match=rf"in use by another unrolled process \(pid {first.pid}\)"):
                _run(d, **mode)
        assert (d / "run.json").exists()  # the refused overwrite removed nothing
    finally:
        if ending == "SIGKILL":
            first.kill()  # no close(), no finally: the kernel releases the flock
        else:
            first.stdin.close()
        first.wait(timeout=30)
    with _run(d, resume=True) as run:
        assert run.resumed


# --------------------------------------------------------------------------- input files
def test_a_character_device_is_refused_at_once():
    with _deadline(5):
        with pytest.raises(
            ValueError, match=r"^--text: /dev/zero is not a regular file \(a character device\)$"
        ):
            open_regular_file("/dev/zero", "--text")
        with pytest.raises(ValueError, match="a character device"):
            check_regular_file("/dev/zero", "--csv")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with _deadline(5):
        for check in (open_regular_file, check_regular_file):
            with pytest.raises(ValueError, match=r"--csv: .*pipe is not a regular file \(a FIFO\)"):
                check(fifo, "--csv")


def test_a_fifo_swapped_in_after_the_check_cannot_block_the_open(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    monkeypatch.setattr(_files, "check_regular_file", lambda path, what: Path(path))  # lost the race
    with _deadline(5), pytest.raises(ValueError, match=r"is not a regular file \(a FIFO\)"):
        open_regular_file(fifo, "--text")


def test_directories_sockets_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--pairs: .* is not a regular file \(a directory\)"):
        open_regular_file(tmp_path, "--pairs")
    with pytest.raises(ValueError, match=r"^--text: .*nope\.txt: no such file$"):
        open_regular_file(tmp_path / "nope.txt", "--text")
    short = tempfile.mkdtemp(prefix="ur-")  # AF_UNIX paths must be short
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.path.join(short, "s"))
            with pytest.raises(ValueError, match=r"is not a regular file \(a socket\)"):
                check_regular_file(os.path.join(short, "s"), "--text")
    finally:
        os.unlink(os.path.join(short, "s"))
        os.rmdir(short)


def test_a_regular_file_or_a_link_to_one_opens_for_reading(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("héllo\n", encoding="utf-8")
    (tmp_path / "link").symlink_to(f)
    with open_regular_file(tmp_path / "link", "--text", encoding="utf-8") as fh:
        assert fh.read() == "héllo\n"
    with open_regular_file(f, "--text") as fh:
        assert fh.read() == "héllo\n".encode()
    assert check_regular_file(f, "--text") == f
