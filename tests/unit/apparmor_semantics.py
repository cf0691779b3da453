"""Answer questions about DDMail's AppArmor profiles with Debian's own policy library.

Run with /usr/bin/python3 (python3-apparmor lives only in Debian's dist-packages, not in the
project's virtualenv); tests/unit/test_apparmor_profiles.py calls it.

    /usr/bin/python3 apparmor_semantics.py < questions.json > answers.json

questions: {"files": {"<profile file>": "<flattened text from apparmor_parser -p>"},
            "paths": [[profile, path, perms, owner]], "networks": [[profile, domain, type]]}
answers:   {"profiles": [names], "paths": [{"allowed": bool, "denied": bool}],
            "networks": [...], "network_allows": {profile: ["domain type", ...]}}

A profile is named "name" or "name//child". Variables (@{run} etc.) are expanded before the
library sees the rules, because its coverage checks do not expand them.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from apparmor.rule.file import FileRule
from apparmor.rule.network import NetworkRule

from apparmor import aa

PROFILE = re.compile(r"^\s*profile\s+(\S+)(?:\s+\S+)?\s*(?:flags=\([^)]*\)\s*)?\{\s*$")
HEADER = "under_test"  # each profile is parsed on its own, under this name
VARIABLE = re.compile(r"^\s*(@\{\w+\})\s*(\+?=)\s*(.*?)\s*$")


def expand(text: str) -> str:
    """Drop the variable definitions and write each rule once per value of its variables."""
    values: dict[str, list[str]] = {}
    rules = []
    for line in text.splitlines():
        found = VARIABLE.match(line.split("#", 1)[0])
        if found:
            name, op, value = found.groups()
            items = value.split()
            values[name] = [*values.get(name, []), *items] if op == "+=" else items
        else:
            rules.append(line)

    def lines_of(line: str, depth: int = 0) -> list[str]:
        name = next((n for n in values if n in line), None)
        if name is None or depth > 10:  # values refer to other variables
            return [line]
        # One rule line per value (the library cannot parse a path that starts with "{");
        # values such as @{run}=/run/ leave "//", which AppArmor reads as "/".
        return [
            expanded
            for v in values[name]
            for expanded in lines_of(
                re.sub(r"(?<=\S)//+", "/", line.replace(name, v.strip('"'), 1)), depth + 1
            )
        ]

    return "\n".join(expanded for line in rules for expanded in lines_of(line))


def split_children(text: str) -> list[tuple[str, str]]:
    """(name, text) of each profile, child profiles ("profile gpg {" inside another) taken out
    as top-level ones named "parent//child": this library version refuses them nested."""
    out: dict[str, list[str]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        start = PROFILE.match(line)
        if start:
            name = start.group(1)
            stack.append(f"{stack[0]}//{name}" if stack else name)
            out[stack[-1]] = [f"profile {HEADER} {{"]
            continue
        if line.strip() == "}" and stack:
            out[stack.pop()].append("}")
            continue
        if stack:
            out[stack[-1]].append(line)
    return [(name, "\n".join(lines) + "\n") for name, lines in out.items()]


def parse(texts: dict[str, str]) -> dict[str, Any]:
    rulesets: dict[str, Any] = {}
    for file, text in texts.items():
        for name, body in split_children(expand(text)):
            data = aa.parse_profile_data(body.splitlines(keepends=True), f"{file}:{name}", True)
            (hats,) = data.values()
            rulesets[name] = hats[HEADER]
    return rulesets


def main() -> None:
    questions = json.load(sys.stdin)
    profiles = parse(questions["files"])
    answers: dict[str, Any] = {"profiles": sorted(profiles), "paths": [], "networks": []}
    for profile, path, perms, owner in questions["paths"]:
        files = profiles[profile]["file"]
        allow = FileRule(path, set(perms), None, FileRule.ALL, owner=owner)
        deny = FileRule(path, set(perms), None, FileRule.ALL, owner=False, deny=True)
        answers["paths"].append(
            {"allowed": files.is_covered(allow), "denied": files.is_covered(deny)}
        )
    for profile, domain, kind in questions["networks"]:
        network = profiles[profile]["network"]
        answers["networks"].append(
            {
                "allowed": network.is_covered(NetworkRule(domain, kind)),
                "denied": network.is_covered(NetworkRule(domain, kind, deny=True)),
            }
        )
    answers["network_allows"] = {
        name: sorted(
            f"{r.domain} {r.type_or_protocol}" for r in body["network"].rules if not r.deny
        )
        for name, body in profiles.items()
    }
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
