"""The README is a front page, and the docs hold together: its length, the two fresh-machine commands the CI
relies on, links that lead somewhere, no issue-tracker references, and a row for every command."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# The two fresh-machine commands, exactly as a new user copies them. The CI (.ci/run) runs the second one's
# steps; changing either is a change to what a user types, so it has to be made here on purpose.
DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/unrolled demo"
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test,plot]" && .venv/bin/python -m pytest'
)

MAX_README_LINES = 260


def doc_files() -> list[Path]:
    """The hand-written pages: README.md and docs/*.md."""
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets and '#' are not markdown."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(md: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces to hyphens,
    a repeated anchor numbered -1, -2, ..."""
    text = re.sub(r"^```.*?^```", "", md.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(md: Path) -> list[str]:
    """Every link and image target in the page's prose."""
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(md.read_text(encoding="utf-8")))


def broken_links(md: Path) -> list[str]:
    """'page: target (why)' for every relative link of the page that leads nowhere."""
    broken = []
    for target in links(md):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are not checked offline
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        where = f"{md.relative_to(REPO)}: {target}"
        if not dest.exists():
            broken.append(
                f"{where} (no such file: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest})"
            )
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no heading with anchor #{anchor} in {dest.relative_to(REPO)})")
    return broken


def test_readme_is_a_front_page_of_at_most_260_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md: expected at most {MAX_README_LINES} lines, got {n}; move detail to docs/"
    )


def test_readme_shows_both_fresh_machine_commands_verbatim_in_shell_blocks():
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
    lines = {line.strip() for block in blocks for line in block.splitlines()}
    for command in (DEMO_COMMAND, TEST_COMMAND):
        assert command in lines, f"README.md: expected the fresh-machine command on its own line: {command}"


def test_the_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    # The extras the CI installs are the ones the README's command installs ...
    extras = re.search(r"pip install (?:-q )?-e (\"[^\"]*\"|\S+)", ci)
    assert extras, ".ci/run: expected a 'pip install -e ...' line"
    assert f".venv/bin/pip install -e {extras.group(1)} " in TEST_COMMAND
    # ... and the command after the comment that names the README is the README's test runner.
    after = ci.split("The README's test command", 1)
    assert len(after) == 2, ".ci/run: expected the comment naming the README's test command"
    ci_command = next(line.strip() for line in after[1].splitlines()[1:] if line.strip())
    assert TEST_COMMAND.endswith(".venv/bin/" + ci_command), (
        f"README runs a different test command from CI: {ci_command}"
    )


def test_every_relative_link_in_the_readme_and_docs_leads_to_an_existing_file_and_heading():
    broken = [b for md in doc_files() for b in broken_links(md)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_reports_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    # Guards the guard: a checker that found nothing would pass the test above vacuously.
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    (tmp_path / "there.md").write_text("# A heading, with `code`\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a-heading-with-code) [gone](absent.md) ![img](absent.png) [bad](there.md#nope) "
        "[web](https://example.org/x) `[not a link](absent2.md)`\n",
        encoding="utf-8",
    )
    reports = broken_links(page)
    assert [r.split(" ", 2)[1] for r in reports] == ["absent.md", "absent.png", "there.md#nope"]


def test_readme_and_docs_carry_no_issue_references():
    pattern = re.compile(r"\bissues?\s*#?\d+|(?<![\w/&])#\d+\b|\bthe issue\b", re.I)
    files = [*doc_files(), *sorted((REPO / "benchmarks").glob("*.md"))]
    hits = [
        f"{md.relative_to(REPO)}:{i}: {line.strip()}"
        for md in files
        for i, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "issue-tracker references (say what the thing is instead):\n" + "\n".join(hits)


def subcommands(argv: list[str]) -> list[str]:
    """The subcommand names that `unrolled ARGV --help` lists."""
    module, _, func = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"][
        "unrolled"
    ].partition(":")
    main = getattr(importlib.import_module(module), func)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    listing = out.getvalue().split("positional arguments:", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    ([a-z][\w-]*)(?:\s{2,}|$)", listing, flags=re.M)


def test_every_command_has_a_row_with_an_example_in_the_readme_table():
    rows = [
        line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| `unrolled ")
    ]
    commands = [c for c in subcommands([]) if c != "train"] + [f"train {k}" for k in subcommands(["train"])]
    assert len(commands) >= 14, commands
    for command in commands:
        row = next((r for r in rows if r.startswith(f"| `unrolled {command}` |")), None)
        assert row, f"README.md: expected a row for `unrolled {command}` in the table of commands"
        assert f"`unrolled {command}" in row.split("|")[3], (
            f"README.md: the row of `unrolled {command}` needs an example"
        )


def test_the_ten_line_example_runs_and_its_gradient_step_lowers_the_loss():
    text = README.read_text(encoding="utf-8")
    code = re.search(r"^## Ten lines\n+```python\n(.*?)^```", text, flags=re.S | re.M).group(1)
    ns: dict = {}
    exec(compile(code, "README.md (Ten lines)", "exec"), ns)
    lstm, head, x = ns["lstm"], ns["head"], ns["x"]
    assert set(lstm.grads) == set(lstm.params)
    # The example's one step of gradient descent used the gradients BPTT produced: the loss went down.
    loss_after, _ = ns["unrolled"].mse(head(lstm(x)[0]), np.zeros((50, 16, 1), np.float32))
    assert loss_after < ns["loss"]
