"""The README's Python examples and every module's docstring examples run as written."""
import doctest
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import featviz

README = Path(__file__).resolve().parents[1] / "README.md"
MODULES = sorted(m.name for m in pkgutil.walk_packages(featviz.__path__, "featviz."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["result"].images.shape == (4, 128, 128, 3)
    assert namespace["images"].shape == (8, 64, 64, 3)


def test_readme_test_command_is_what_ci_runs():
    command = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci


@pytest.mark.parametrize("script", sorted(p.name for p in
                                          (Path(__file__).parents[1] / "benchmarks").glob("*.py")))
def test_benchmark_scripts_import(script, monkeypatch):
    """Every benchmark imports what it names from featviz (a renamed function breaks a script
    that no test runs)."""
    path = Path(__file__).parents[1] / "benchmarks" / script
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    monkeypatch.syspath_prepend(str(path.parent))  # as ``python benchmarks/x.py`` runs it
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
