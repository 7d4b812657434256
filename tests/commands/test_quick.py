"""UNROLLED_QUICK (tests only): the lengths a command line gives are capped, nothing else changes."""

from __future__ import annotations

from unrolled.commands._quick import CAPS, apply_quick
from unrolled.commands.main import build_parser


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


def test_quick_caps_steps_time_and_epochs_and_says_so(monkeypatch, capsys):
    monkeypatch.setenv("UNROLLED_QUICK", "1")
    a = apply_quick(parse(["train", "translate", "--dates", "200", "--steps", "1500", "--out", "d"]))
    assert a.steps == CAPS["steps"] and a.dates == 200 and a.out == "d"
    a = apply_quick(parse(["train", "classify", "--dataset", "names", "--epochs", "30", "--out", "n"]))
    assert a.epochs == CAPS["epochs"] and a.dataset == "names"
    a = apply_quick(parse(["train", "charlm", "--text", "t.txt", "--out", "m", "--time", "15"]))
    assert a.time == CAPS["time"]
    assert "UNROLLED_QUICK is set (tests only): capped time" in capsys.readouterr().err


def test_quick_gives_an_untimed_demo_a_short_time_and_keeps_smaller_values(monkeypatch):
    monkeypatch.setenv("UNROLLED_QUICK", "1")
    assert apply_quick(parse(["demo", "--out", "d"])).time == CAPS["time"]
    assert (
        apply_quick(parse(["train", "translate", "--dates", "200", "--steps", "5", "--out", "d"])).steps == 5
    )


def test_without_quick_nothing_is_capped(monkeypatch, capsys):
    monkeypatch.delenv("UNROLLED_QUICK", raising=False)
    a = apply_quick(parse(["train", "translate", "--dates", "200", "--steps", "1500", "--out", "d"]))
    assert a.steps == 1500 and not hasattr(apply_quick(parse(["demo"])), "time")
    assert capsys.readouterr().err == ""
