"""The docs as specifications: the command reference is the parser's own (regenerate it with
`python -m mlx_dpo.cli.docs --write`), every link between the README and docs/ lands, and the README stays
a first page (at most README_MAX_LINES lines), its reference in docs/.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlx_dpo.cli.docs import DOCS_FILE, commands_markdown
from mlx_dpo.options import settings_of
from mlx_dpo.settings import LOSS_TYPES, TRAIN_GROUPS, OnlineSettings, RoundSettings

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_MAX_LINES = 200
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_command_reference_is_the_parsers_own():
    assert DOCS_FILE.read_text(encoding="utf-8") == commands_markdown(), (
        "docs/commands.md differs from the parser: run `.venv/bin/python -m mlx_dpo.cli.docs --write`"
    )


def test_the_command_reference_lists_every_setting_and_every_loss():
    text = commands_markdown()
    settings = [s for group in (*TRAIN_GROUPS, RoundSettings, OnlineSettings) for s in settings_of(group).values()]
    assert len(settings) > 50
    assert [s.flag for s in settings if f"`{s.flag}" not in text] == []
    loss_row = next(line for line in text.splitlines() if line.startswith("| `--loss LOSS`"))
    assert [name for name in LOSS_TYPES if name not in loss_row] == []
    assert "### `mlx-dpo data import`" in text and "`--max-tokens MAX_TOKENS`" in text  # subcommands, generate


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_readme_and_the_docs_lands():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # https:, mailto: — not checked offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_first_page_that_links_into_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert text.index("make demo") < text.index("make test") < 400  # the two commands open it
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(text) if t.startswith("docs/")}
    assert {p.name for p in (REPO / "docs").glob("*.md")} <= linked  # every page is reachable from it
