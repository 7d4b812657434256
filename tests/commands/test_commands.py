"""The command line as a layer on top: every verb registered from a static list (import order cannot change
the help), `eval` dispatching on the kind of model directory through one table, and no module below
unrolled.commands importing it (nor argparse inside the apps)."""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import unrolled
from unrolled.commands import build_parser, main
from unrolled.commands import eval as eval_command

SRC = Path(unrolled.__file__).parent
VERBS = ["demo", "train", "sample", "eval", "forecast", "classify", "translate", "export", "quantize",
         "diagnose", "experiment", "bench", "data"]  # fmt: skip
TRAIN_KINDS = ["charlm", "forecast", "classify", "translate"]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {c.dest: c.help for c in action._choices_actions}


# --------------------------------------------------------------------------- registration
def test_every_verb_and_train_kind_is_registered_in_the_listed_order():
    parser = build_parser()
    verbs = _subcommands(parser)
    assert list(verbs) == VERBS
    assert list(_subcommands(verbs["train"])) == TRAIN_KINDS


def test_every_verb_has_a_help_line_without_issue_references():
    parser = build_parser()
    lines = {
        **_help_lines(parser),
        **{f"train {k}": h for k, h in _help_lines(_subcommands(parser)["train"]).items()},
    }
    assert set(lines) >= set(VERBS) | {f"train {k}" for k in TRAIN_KINDS}
    for verb, text in lines.items():
        assert text and len(text) > 15, verb
    helps = [parser.format_help()] + [p.format_help() for p in _subcommands(parser).values()]
    helps += [p.format_help() for p in _subcommands(_subcommands(parser)["train"]).values()]
    for text in helps:
        assert not re.search(r"\bissues?\b|#\d+", text), text


_HELP_AFTER_IMPORTS = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from unrolled.commands import build_parser
p = build_parser()
print(p.format_help())
for verb in ("train", "eval", "translate"):
    print(p._subparsers._group_actions[0].choices[verb].format_help())
"""


def test_help_text_is_the_same_whatever_was_imported_first():
    def helps(*modules: str) -> str:
        r = subprocess.run(
            [sys.executable, "-c", _HELP_AFTER_IMPORTS, *modules], capture_output=True, text=True, check=True
        )
        return r.stdout

    plain = helps()
    assert "charlm" in plain and "--pairs" in plain and "--text" in plain
    # the old order-dependent registration: translate's module first, charlm's last (and the reverse)
    assert (
        helps("unrolled.commands.translate", "unrolled.commands.train_translate", "unrolled.apps.charlm")
        == plain
    )
    assert helps("unrolled.apps.charlm", "unrolled.commands.sample", "unrolled.commands.eval") == plain


def test_python_dash_m_unrolled_cli_is_the_same_command_line():
    def run(module: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", module, "train", "--help"], capture_output=True, text=True, check=True
        ).stdout

    assert run("unrolled.cli") == run("unrolled.commands")


def test_translate_takes_options_between_dir_and_text():
    args = build_parser().parse_args(["translate", "DIR", "--beam", "5", "the", "cat"])
    assert (args.dir, args.beam, args.text) == ("DIR", 5, ["the", "cat"])


# --------------------------------------------------------------------------- eval dispatch
def _model_dir(path: Path, app: str | None, run_dir: bool = False) -> Path:
    """A directory whose meta.json names `app` (in DIR/last for a charlm-style run directory)."""
    d = path / "last" if run_dir else path
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"meta": {} if app is None else {"app": app}}))
    return path


def test_eval_table_covers_every_app_kind():
    from unrolled.apps import charlm, classify, forecast, translate

    kinds = {charlm.APP, classify.APP, forecast.APP, translate.APP}
    assert set(eval_command.EVALUATORS) == kinds


@pytest.mark.parametrize("app", ["charlm", "translate", "forecast", "classify"])
@pytest.mark.parametrize("run_dir", [False, True])
def test_eval_dispatches_on_the_kind_in_meta_json(tmp_path, monkeypatch, app, run_dir):
    called = []
    table = {k: (lambda args, k=k: called.append((k, args.dir)) or 0) for k in eval_command.EVALUATORS}
    monkeypatch.setattr(eval_command, "EVALUATORS", table)
    d = _model_dir(tmp_path / "m", app, run_dir)
    extra = ["--pairs", "p.tsv"] if app == "translate" else []
    assert main(["eval", str(d), *extra]) == 0
    assert called == [(app, str(d))]


def test_model_kind_is_none_without_a_readable_meta_json(tmp_path):
    assert eval_command.model_kind(tmp_path / "missing") is None
    assert eval_command.model_kind(_model_dir(tmp_path / "bare", None)) is None
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "meta.json").write_text("{not json")
    assert eval_command.model_kind(tmp_path / "garbage") is None


@pytest.mark.parametrize(
    "app, command", [("forecast", "unrolled forecast"), ("classify", "unrolled classify")]
)
def test_eval_of_a_model_scored_by_another_command_names_it_in_one_line(tmp_path, capsys, app, command):
    assert main(["eval", str(_model_dir(tmp_path / "m", app))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unrolled: error: eval:") and command in err and err.count("\n") == 1


def test_eval_with_pairs_on_a_charlm_run_is_refused(tmp_path, capsys):
    assert main(["eval", str(_model_dir(tmp_path / "m", "charlm", run_dir=True)), "--pairs", "p.tsv"]) == 2
    assert "not a translation model (--pairs needs one)" in capsys.readouterr().err


# --------------------------------------------------------------------------- layering
def _imports(path: Path) -> set[str]:
    """Every module `path` imports, as dotted names (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _library_modules() -> list[Path]:
    """Every module of the package but the command line itself (commands/ and its alias cli.py)."""
    return [p for p in SRC.rglob("*.py") if "commands" not in p.relative_to(SRC).parts and p.name != "cli.py"]


def test_no_module_below_the_command_line_imports_it():
    modules = _library_modules()
    assert len(modules) > 40 and any(p.match("apps/charlm/lm.py") for p in modules)
    offenders = {
        str(p.relative_to(SRC)): sorted(n for n in _imports(p) if re.match(r"unrolled\.(commands|cli)\b", n))
        for p in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_apps_hold_no_argparse():
    apps = list((SRC / "apps").rglob("*.py"))
    assert len(apps) > 10
    assert [str(p.relative_to(SRC)) for p in apps if "argparse" in _imports(p)] == []
