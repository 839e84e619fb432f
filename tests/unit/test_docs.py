"""The documentation holds together: README.md is a front page (short), every relative link and
#anchor in README.md and docs/ resolves, docs/cli.md names every `tfs-release` subcommand and
docs/configuration.md every config key the loader accepts. Pure Python: no services."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

import cli
from registry import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_CHARS = 15_000

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target); target without spaces, optional "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (no markup), lowercased, punctuation
    removed except hyphens and spaces (word characters stay), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"<[^>]+>", "", text)                         # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)               # _emphasis_, not snake_case
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file (code spans and fenced blocks are not links)."""
    out = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
                continue  # http:, https:, mailto: ...
            out.append(target)
    return out


def inline_code(path: Path) -> list[str]:
    spans = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        spans += [m.group(2) for m in INLINE_CODE.finditer(line)]
    return spans


def test_readme_is_a_front_page():
    n = len(README.read_text(encoding="utf-8"))
    assert n <= README_MAX_CHARS, (f"README.md has {n} characters (at most {README_MAX_CHARS}): move reference "
                                   f"material into docs/ and link it")


def test_slug_rules():
    assert slug("The regression gate: is the candidate at least as good as production?") == \
        "the-regression-gate-is-the-candidate-at-least-as-good-as-production"
    assert slug("Configuration: `config/models.yaml`") == "configuration-configmodelsyaml"
    assert slug("bench/watch_cost.py: cost") == "benchwatch_costpy-cost"
    assert slug("One machine: Docker Compose") == "one-machine-docker-compose"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    problems = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file {os.path.relpath(dest, ROOT)}")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{target}: no heading with anchor #{anchor} in {os.path.relpath(dest, ROOT)} "
                                f"(anchors: {', '.join(sorted(anchors(dest)))})")
    assert not problems, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(problems)


def test_every_subcommand_is_in_the_cli_page():
    parser = cli.build_parser()
    names = {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
             for name in action.choices}
    assert names, "no subcommands found in cli.build_parser()"
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if not re.search(rf"tfs-release {re.escape(n)}(?![\w-])", text))
    assert not missing, f"docs/cli.md does not show `tfs-release <name>` for: {', '.join(missing)}"


def config_keys() -> set[str]:
    return (set(config_mod.KNOWN_KEYS) | set(config_mod.TOP_LEVEL_KEYS) | set(config_mod.TIMEOUT_KEYS)
            | set(config_mod.ALERT_KEYS) | set(config_mod.REGRESSION_LIMITS)
            | {"endpoints", "confirm_deadline_s", "conn_id"})


def test_every_config_key_is_in_the_configuration_page():
    tokens = set()
    for span in inline_code(DOCS / "configuration.md"):
        tokens.update(re.findall(r"[A-Za-z0-9_]+", span))
    missing = sorted(k for k in config_keys() if k not in tokens)
    assert not missing, f"docs/configuration.md names none of these config keys in backticks: {', '.join(missing)}"
