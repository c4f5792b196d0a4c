"""The layers point one way: job processes load no web framework, the API and CLI name no job package,
and job packages import nothing of serve/ (what they need of it, the CLI lends them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_job_processes_import_no_web_framework():
    code = ("import sys, actors.runner\n"
            "from actors.jobs import load_modules\n"
            "from actors.settings import DEFAULT_JOB_MODULES\n"
            "load_modules(DEFAULT_JOB_MODULES)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'serve')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def imports_across(folder: str, forbidden: str) -> dict[str, list[str]]:
    """The modules of ``folder`` that import something of the package ``forbidden``, with what they import."""
    found = {str(path.relative_to(ROOT)): sorted(n for n in imported_modules(path) if n.split(".")[0] == forbidden)
             for path in (ROOT / folder).rglob("*.py")}
    return {module: names for module, names in found.items() if names}


def test_serve_names_no_job_package():
    assert not imports_across("serve", "pipelines")


def test_job_packages_import_nothing_of_serve():
    assert not imports_across("pipelines", "serve")


def test_job_packages_bring_their_routes_and_commands():
    from actors.jobs import extensions
    from actors.settings import DEFAULT_JOB_MODULES

    routes = extensions(DEFAULT_JOB_MODULES, "ROUTES")
    assert [route.path for router in routes for route in router.routes] == ["/v1/renders"]
    done = subprocess.run([sys.executable, "-m", "serve.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for command in ("render", "crawl", "clips", "batch"):
        assert command in done.stdout.split("positional arguments:")[0], done.stdout


def test_the_queue_rules_tests_import_neither_ray_nor_a_job_package():
    """The rules get their job types injected (``tests/unit/jobtypes.py``): no unit test names a job package
    or Ray, and loading the rules' tests (as pytest does) loads neither. (Two of their tests, of the
    runner's and the facade's helpers, import those modules, which use Ray, inside the test.)"""
    unit = ROOT / "tests" / "unit"
    assert not {str(p.relative_to(ROOT)): sorted(imported_modules(p)) for p in unit.glob("*.py")
                if p.name != "test_layers.py"
                and any(n.split(".")[0] in ("ray", "pipelines") for n in imported_modules(p))}
    rules = [p for p in unit.glob("test_*.py") if "actors.queue" in imported_modules(p)
             or "from .conftest import" in p.read_text(encoding="utf-8")]
    assert len(rules) >= 10, rules
    modules = sorted(f"tests.unit.{p.stem}" for p in rules)
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'pipelines'}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
