"""Every command shown in README.md and docs/*.md code blocks exists: `videored ...`,
`python -m videored...` and `python -m slurm.submit ...` lines print their `--help`, and each
`--flag` a line uses is one its parser knows (issue 25: `python -m videored.bench.memory` was
documented and failed with an ImportError)."""
from __future__ import annotations

import argparse
import re
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_START = re.compile(r"^(?:\S+=\S+\s+)*(?:sudo\s+)?(videored|python -m (?:videored|slurm)[\w.]*)(\s|$)")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, tokens) of every videored / python -m videored|slurm command in a code block:
    continuation lines joined, comments and `[...]` optional parts kept (their flags count)."""
    found = []
    for doc in DOCS:
        for block in _FENCE.findall(doc.read_text(encoding="utf-8")):
            for n, line in enumerate(re.sub(r"\\\n\s*", " ", block).splitlines()):
                line = re.sub(r"(^|\s)#.*", "", line).strip()
                for part in re.split(r"\s*(?:&&|;|\|\|?|>)\s*", line):
                    m = _START.match(part)
                    if m:
                        tokens = part[m.start(1):].replace("[", " ").replace("]", " ").split()
                        found.append((f"{doc.name}: {part[:80]}", tokens))
    return found


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


def _descend(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The innermost (sub)parser the leading positional words choose, and the words used."""
    used = []
    for word in words:
        sub = _subparser(parser, word)
        if sub is None:
            break
        parser, used = sub, used + [word]
    return parser, used


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _videored_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    from videored.cli import build_parser

    return _descend(build_parser(words), words)


def _check(tokens: list[str]) -> tuple[list[str], set[str]]:
    """(argv for --help, the flags the line may use)."""
    words = [t for t in tokens[1:] if not t.startswith("-")]
    if tokens[0] == "videored":
        parser, used = _videored_parser(words)
        return ["videored", *used], _flags(parser)
    module = tokens[2]
    if module == "slurm.submit":
        from slurm.submit import build_parser

        parser, used = _descend(build_parser(), words[1:2])
        allowed = _flags(parser)
        if used and used[0] in ("train", "eval", "sweep"):  # the rest goes to `videored <command>`
            command = used[0] if used[0] != "sweep" else "train"
            allowed |= _flags(_videored_parser([command])[0]) | _flags(_videored_parser(["eval"])[0])
        return ["python -m", module, *used], allowed
    return ["python -m", module], set()  # checked through --help only


CASES = documented_commands()


def test_the_docs_show_commands():
    kinds = {tuple(t[:3]) if t[0] == "python" else ("videored",) for _, t in CASES}
    assert ("python", "-m", "slurm.submit") in kinds and ("videored",) in kinds
    assert len(CASES) >= 20


@pytest.mark.parametrize("where,tokens", CASES, ids=[w for w, _ in CASES])
def test_documented_flags_exist(where, tokens):
    _, allowed = _check(tokens)
    if not allowed:
        return
    flags = {t.split("=")[0] for t in tokens if t.startswith("--") and len(t) > 2}
    unknown = sorted(f for f in flags if f not in allowed)
    assert not unknown, f"{where}: unknown flag(s) {unknown}"


HELP = sorted({tuple(_check(t)[0]) for _, t in CASES})


@pytest.mark.parametrize("command", HELP, ids=[" ".join(c) for c in HELP])
def test_documented_command_prints_help(command, capsys, monkeypatch):
    if command[0] == "videored":
        from videored.cli import main

        with pytest.raises(SystemExit) as done:
            main([*command[1:], "--help"])
    else:
        module, rest = command[1], list(command[2:])
        monkeypatch.setattr(sys, "argv", [module, *rest, "--help"])
        with pytest.raises(SystemExit) as done:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out
