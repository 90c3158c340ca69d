"""The documentation stays true to the tree: README's commands, links, the structure map, the error table."""
import re
from pathlib import Path

import pytest

from golden import TABLE_END, TABLE_START, manifest, table_rows

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "golden" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    install, tests = first_block.splitlines()[:2]
    assert install.startswith("pip install . && npw2v2 transcribe --examples")
    assert tests.startswith('pip install ".[test,ray]" && python -m pytest -q')
    assert readme.index("```bash") < readme.index("\n## ")  # before anything else
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and '".[test,ray]"' in ci


def test_the_supported_pythons_agree_everywhere():
    """The versions CI tests are the ones pyproject declares and the README states."""
    ci = re.search(r'SUPPORTED="([0-9. ]+)"', (ROOT / ".ci" / "run").read_text()).group(1).split()
    pyproject = re.findall(r"Programming Language :: Python :: (3\.\d+)", (ROOT / "pyproject.toml").read_text())
    assert ci == pyproject and len(ci) >= 2
    assert f"Python {ci[0]} to {ci[-1]}" in (ROOT / "README.md").read_text()
    assert f'requires-python = ">={ci[0]}"' in (ROOT / "pyproject.toml").read_text()


def test_readme_stays_a_users_page():
    assert len((ROOT / "README.md").read_bytes()) <= 10_500


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_structure_page_names_every_module_and_only_those():
    page = (ROOT / "docs" / "structure.md").read_text()
    tree = page.split("```", 2)[1]
    for layer in ("core", "io", "app"):
        modules = {p.name for p in (ROOT / "npw2v2" / layer).glob("*.py") if p.name != "__init__.py"}
        section = tree.split(f"npw2v2/{layer}/", 1)[1].split("npw2v2/", 1)[0]
        named = set(re.findall(r"\b(\w+\.py)\b", section))
        assert named == modules, f"npw2v2/{layer}: the page lacks {modules - named}, names {named - modules}"


def test_verification_page_holds_the_generated_table():
    """Every configuration and kind of case golden/ records has its row, within its tolerance."""
    page = (ROOT / "docs" / "verification.md").read_text()
    table = page.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    versions = manifest()["versions"]
    assert f"transformers {versions['transformers']}, torch {versions['torch']}" in table
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| configuration", "| ---"))]
    listed = {(name, case, int(stages)) for name, case, stages, *_ in rows}
    assert listed == {(name, case, stages) for name, case, stages, *_ in table_rows()}
    for name, case, _, fast, reference, tolerance in rows:
        assert float(fast) <= float(tolerance) and float(reference) <= float(tolerance), (name, case)
