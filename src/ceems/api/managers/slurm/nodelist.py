"""SLURM host lists (`node[1-3,5],gpu-[01-02]`) expanded into node names."""

from __future__ import annotations

import re

# The characters Go's regexp.QuoteMeta escapes. CEEMS stores `nodelistexp` escaped this way
# because dashboards drop it into PromQL regex matchers (`hostname=~"$nodelistexp"`).
_GO_REGEX_META = frozenset(r"\.+*?()|[]{}^$")
_RANGE = re.compile(r"\[([^\[\]]*)\]")


def split_hostlist(hostlist: str) -> list[str]:
    """Split at the commas outside brackets: `a[1,3],b` -> `a[1,3]`, `b`."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in hostlist:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {hostlist!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {hostlist!r}")
    parts.append("".join(current))
    return [part for part in parts if part]


def _expand_one(pattern: str) -> list[str]:
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    names: list[str] = []
    for item in match.group(1).split(","):
        first, _, last = item.partition("-")
        last = last or first
        if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
            raise ValueError(f"bad range {item!r} in host list {pattern!r}")
        # SLURM keeps the zero padding of the range's first bound: gpu-[01-02] -> gpu-01, gpu-02
        width = len(first)
        for number in range(int(first), int(last) + 1):
            names.extend(_expand_one(f"{head}{number:0{width}d}{tail}"))
    return names


def expand_hostlist(hostlist: str) -> list[str]:
    """Every node name of a host list, in order; several bracket groups multiply out."""
    names: list[str] = []
    for part in split_hostlist(hostlist.strip()):
        names.extend(_expand_one(part))
    return names


def quote_meta(name: str) -> str:
    """Escape a node name as Go's regexp.QuoteMeta does (not Python's re.escape, which
    also escapes `-`)."""
    return "".join("\\" + c if c in _GO_REGEX_META else c for c in name)


def nodelist_exp(hostlist: str) -> str:
    """CEEMS' `nodelistexp` tag: expanded, regex-quoted node names joined with `|`."""
    return "|".join(quote_meta(name) for name in expand_hostlist(hostlist))
