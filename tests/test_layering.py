"""Which package may import which: `core` is the engine and never imports the UI or the benchmark.

Read from the source (every `import` anywhere in a module, including inside functions),
so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UI_AND_TOOLS = {"streamlit", "studio", "pages", "bench"}


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every absolute import in the file at `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", sorted(str(p.relative_to(ROOT / "core")) for p in (ROOT / "core").rglob("*.py")))
def test_core_never_imports_the_ui_or_the_benchmark(module):
    wrong = imported_packages(ROOT / "core" / module) & UI_AND_TOOLS
    assert not wrong, f"core/{module} imports {sorted(wrong)}: core must run without them"


@pytest.mark.parametrize(
    "path", ["streamlit_app.py", *sorted(str(p.relative_to(ROOT)) for d in ("studio", "pages") for p in (ROOT / d).rglob("*.py"))]
)
def test_the_studio_never_imports_the_benchmark(path):
    assert "bench" not in imported_packages(ROOT / path), f"{path} imports bench: the benchmark drives the studio"


def test_the_check_sees_lazy_and_dotted_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n\ndef f():\n    import streamlit.runtime as rt\n    from studio.state import all_runs\n"
        "    from . import sibling\n    from bench.browser import serve\n"
    )
    assert imported_packages(module) == {"os", "streamlit", "studio", "bench"}
