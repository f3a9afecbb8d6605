"""`kobi-cpas` is the project's one command line: every command hangs off the click group in devenv/cli.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kobi_cpas.devenv.cli import main

PACKAGE = Path(__file__).resolve().parents[1] / "kobi_cpas"
CLI_MODULE = PACKAGE / "devenv" / "cli.py"


def test_the_group_has_every_command() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0, top.output
    for command in ("run", "dev", "sandbox", "tables", "postgres", "bench", "demo-feeds"):
        assert f"\n  {command} " in top.output, command
    for group, commands in (("postgres", ("start", "stop", "status")), ("bench", ("feeds", "insights"))):
        sub = runner.invoke(main, [group, "--help"])
        assert sub.exit_code == 0, sub.output
        for command in commands:
            assert f"\n  {command} " in sub.output, (group, command)


def _is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def test_no_other_command_line_in_the_package() -> None:
    """No argparse parser and no `python -m` entry point beside the click group."""
    others = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == CLI_MODULE:
            continue
        if path.name == "__main__.py":
            others.append(str(path))
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            imported = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if "argparse" in imported or _is_main_guard(node):
                others.append(f"{path}:{node.lineno}")
    assert others == []


@pytest.mark.bench
def test_bench_subcommands_print_their_figures_as_json(tmp_path: Path) -> None:
    runner = CliRunner()
    insights = runner.invoke(main, ["bench", "insights", "--ads", "1", "--days", "1", "--page-limit", "50"])
    assert insights.exit_code == 0, insights.output
    figures = json.loads(insights.stdout)
    assert figures["complete"] and figures["api_requests_issued"] >= figures["minimum_requests"] > 0

    feeds = runner.invoke(
        main, ["bench", "feeds", "--items", "200", "--workdir", str(tmp_path), "--repeat", "1"]
    )
    assert feeds.exit_code == 0, feeds.output
    figures = json.loads(feeds.stdout)
    assert figures["n_items"] == 200 and len(figures["paired_ratios"]) == 1
