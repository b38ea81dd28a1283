"""Which flags of a ceems_tool command docs/ceems-tool.md does not document."""

from __future__ import annotations

import argparse
import re

from ceems.cli.tool.main import build_parser
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "ceems-tool.md").read_text()


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError(f"{parser.prog} has no subcommands")


def undocumented_flags(group: str, command: str) -> list[str]:
    """Long flags of `ceems_tool GROUP COMMAND` missing from its section (or the shared intro).

    A missing section is reported as the section heading itself.
    """
    parser = _choices(_choices(build_parser())[group])[command]
    intro = DOC.split("\n## ", 1)[0]
    sections = re.split(r"^## ", DOC, flags=re.M)
    section = next((s for s in sections if s.startswith(f"{group} {command}\n")), None)
    if section is None:
        return [f"## {group} {command}"]
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    return sorted(f for f in flags - {"--help"} if f"`{f}`" not in intro + section)
