"""The README runs as written: every command of its ```bash blocks and of its table of commands, in the
order they appear, in an empty folder — a fresh clone's point of view, nothing prepared.

What the test changes, and only that:
- the fresh-machine steps are left out (creating the venv, ``pip install``, running pytest, activating):
  they are what this suite already runs under; ``.venv/bin/unrolled`` is the installed ``unrolled``, found
  on PATH (the bin folder of the Python running the tests) and importing this checkout (PYTHONPATH);
- ``UNROLLED_QUICK=1`` caps every ``--steps``/``--time``/``--epochs`` (:mod:`unrolled.commands._quick`), so
  the two-minute demo and the fifteen-minute ``train charlm`` take seconds;
- datasets come from ``../shared/data`` through ``UNROLLED_DATA_MIRROR`` into a fresh cache, and every
  http(s) URL goes to a proxy that does not exist: no outside network, ever.

The slow commands (:data:`SLOW`) run only with ``UNROLLED_README_SLOW=1``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA

README = REPO / "README.md"

# Parts of a command line that set up the machine rather than use unrolled (see the module docstring).
SETUP = (
    re.compile(r"^python3? -m venv "),
    re.compile(r"\bpip install\b"),
    re.compile(r"\s-m pytest\b"),
    re.compile(r"^\. \.venv/bin/activate$"),
)
# Minutes even when capped: a benchmark times a grid, whatever the step caps.
SLOW = ("unrolled bench",)
TIMEOUT_S = 240  # one command; the whole README took about 2 minutes on a loaded 2-core machine


def readme_commands(text: str) -> list[str]:
    """The README's commands in document order: each line of a ```bash block (comments, blank lines and
    setup steps dropped; ``\\`` continuations joined) and the example column of the table of commands."""
    commands: list[str] = []
    in_bash, pending = False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if in_bash:
            line = pending + (line.lstrip() if pending else line)
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1].rstrip() + " "
                continue
            pending = ""
            command = _strip_comment(line).strip()
            if command:
                parts = [p.strip() for p in command.split(" && ")]
                kept = [p.removeprefix(".venv/bin/") for p in parts if not any(s.search(p) for s in SETUP)]
                if kept:
                    commands.append(" && ".join(kept))
        elif line.startswith("| `unrolled "):
            example = line.split("|")[3].strip()
            commands.append(re.fullmatch(r"`([^`]+)`", example).group(1))
    return commands


def _strip_comment(line: str) -> str:
    """The line without its ``# comment``: from a '#' that starts a shell word outside quotes."""
    if line.lstrip().startswith("#"):
        return ""
    i = line.find(" #")
    while i != -1:
        head = line[:i]
        if head.count("'") % 2 == 0 and head.count('"') % 2 == 0:
            return head
        i = line.find(" #", i + 1)
    return line


def written_files(command: str) -> list[str]:
    """The files a command says it writes: ``> FILE`` and ``--output/--onnx/--plot FILE``."""
    return re.findall(r"(?:>|--output|--onnx|--plot)\s+([\w./-]+)", command)


def test_the_extraction_finds_every_table_example_and_leaves_out_only_the_setup_steps():
    text = README.read_text(encoding="utf-8")
    commands = readme_commands(text)
    examples = re.findall(r"^\| `unrolled [^|]*\| [^|]* \| `([^`]+)` \|$", text, flags=re.M)
    assert len(examples) >= 15 and all(e in commands for e in examples)
    assert commands[0] == "unrolled demo"  # from the first fresh-machine line, its setup dropped
    assert not any("pip" in c or "venv" in c or "pytest" in c for c in commands)
    fake = "```bash\npython3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/unrolled demo\n"
    fake += "unrolled sample x \\\n    --seed 1   # a comment\necho '# kept' # dropped\n```\n"
    assert readme_commands(fake) == ["unrolled demo", "unrolled sample x --seed 1", "echo '# kept'"]


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=str(REPO / "src"),
        UNROLLED_QUICK="1",
        UNROLLED_DATA=str(tmp / "cache"),
        UNROLLED_DATA_MIRROR=str(SHARED_DATA),
        MPLBACKEND="Agg",
        # No outside network: urllib sends every http(s) URL to this proxy, where nothing listens.
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
    )
    return env


def test_every_readme_command_runs_as_written_in_order_from_an_empty_folder(tmp_path):
    if not (SHARED_DATA / "MANIFEST.sha256").is_file():
        pytest.skip(f"{SHARED_DATA} not present: the README's datasets cannot be served without network")
    if not (Path(sys.executable).parent / "unrolled").exists():
        pytest.skip(f"no `unrolled` command beside {sys.executable}: install with pip install -e .")
    for module, extra in (("statsmodels", "data"), ("onnxruntime", "onnx"), ("matplotlib", "plot")):
        pytest.importorskip(module, reason=f"{module} not installed (unrolled[{extra}]): the README uses it")
    work = tmp_path / "clone"
    work.mkdir()
    env = _environment(tmp_path)
    run_slow = os.environ.get("UNROLLED_README_SLOW") == "1"
    took = []
    for command in readme_commands(README.read_text(encoding="utf-8")):
        if command.startswith(SLOW) and not run_slow:
            took.append(f"skipped (slow; UNROLLED_README_SLOW=1 runs it): {command}")
            continue
        t0 = time.perf_counter()
        try:
            r = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", command],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"README command ran past {TIMEOUT_S} s: {command}")
        took.append(f"{time.perf_counter() - t0:5.1f} s  {command}")
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-15:])
        so_far = "\n".join(took)
        assert r.returncode == 0, (
            f"README command failed with exit {r.returncode}: {command}\n{tail}\n{so_far}"
        )
        for name in written_files(command):
            f = work / name
            assert f.is_file() and f.stat().st_size > 0, f"{command}: expected it to write {name}"
    print("\n".join(took))
