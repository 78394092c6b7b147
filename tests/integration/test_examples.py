"""The examples in examples/ run as a user would run them: from another folder, in a fresh interpreter without
Django settings, importing only the installed `dla` package (the walkthrough itself refuses a Django import)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_without_django_from_any_folder(script, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO", "DATABASE", "CELERY", "PYTHONPATH"))
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vs exact truth: vessel Dice" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_science_package_never_imports_django(tmp_path):
    """Every module of `dla` imports in a clean interpreter without pulling in Django, Celery or DRF."""
    code = (
        "import importlib, pkgutil, sys, dla\n"
        "names = [m.name for m in pkgutil.walk_packages(dla.__path__, 'dla.')]\n"
        "[importlib.import_module(n) for n in names]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery', 'rest_framework'))\n"
        "print(len(names), 'modules'); sys.exit(', '.join(bad[:5]) or None)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout.split()[0]) >= 25
