"""The recipes in README.md and examples/**/*.md match the code: every `anysr ...` command they show
parses with the real command line (options, methods), and they carry no path of the machine they were
written on nor the retired ANYSR_WIDTH variable."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from anysr_plugin.adapters import get_adapter
from anysr_plugin.cli import build_parser
from anysr_plugin.commands.launch import split_remainder
from anysr_plugin.errors import AnySRError

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "examples").rglob("*.md")])
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
# `anysr CMD ...` or `python -m anysr_plugin CMD ...`, not output lines such as `anysr: built ...`
COMMAND = re.compile(r"(?:^|[\s|;(])(?:anysr|python3? -m anysr_plugin) ([a-z][a-z-]+)(?=\s|$)([^;|&#\n]*)")


def commands(text: str):
    for block in FENCE.findall(text):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            for m in COMMAND.finditer(line):
                args = (m.group(2) or "").replace("; done", "")
                args = re.sub(r"<[^<>\s]+>", "X", args).replace("$s", "2").replace("$w", "0.5")
                yield m.group(1), shlex.split(args.split(" done")[0])


def test_docs_show_commands():
    found = [c for doc in DOCS for c in commands(doc.read_text())]
    assert {"launch", "convert-config", "convert-checkpoint"} <= {name for name, _ in found}
    assert sum(1 for name, argv in found if name == "launch" and "--width" in argv) >= 5  # every method


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_parses(doc):
    parser = build_parser()
    for name, argv in commands(doc.read_text()):
        try:
            args, rest = parser.parse_known_args([name, *argv])
        except SystemExit:
            pytest.fail(f"{doc.relative_to(ROOT)}: `anysr {name} {' '.join(argv)}` does not parse")
        where = f"{doc.relative_to(ROOT)}: `anysr {name} {' '.join(argv)}`"
        if getattr(args, "accepts_remainder", False):
            try:
                script = split_remainder(rest)
            except AnySRError as exc:
                pytest.fail(f"{where}: {exc}")
            assert script[0].endswith(".py"), where
        else:
            assert not rest, f"{where}: unknown {rest}"
        method = getattr(args, "method", None)
        if method is not None:
            get_adapter(method)  # an unknown method raises


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths_nor_retired_variables(doc):
    text = doc.read_text()
    paths = re.findall(r"(?<![\w.<>~-])/(?:work|home|root|Users|mnt)/\S*", text)
    assert not paths, f"{doc.relative_to(ROOT)}: absolute paths of a machine: {paths[:5]} (use placeholders like <LIIF_REPO>)"
    assert "ANYSR_WIDTH" not in text, f"{doc.relative_to(ROOT)}: ANYSR_WIDTH is retired; use `anysr launch METHOD --width W`"


#: what only the people who wrote the code had: notes outside the repository
OUTSIDE = re.compile(r"\.\./shared|shared/research|shared/paper|research/upstream|research/design|design-anchors|"
                     r"DESIGN\.md|DESIGN \d")


def test_nothing_points_outside_the_repository():
    """Every tracked text file stands on its own: rationale lives in docs/, never in notes a user
    does not have."""
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    offenders = []
    for name in files.splitlines():
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg") or not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line) and name != "tests/test_docs.py":
                offenders.append(f"{name}:{lineno}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders[:10])
