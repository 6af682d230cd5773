"""The shape of the code: small modules and functions, and one family of user-facing errors."""
import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import featviz
from featviz import errors

SOURCE = Path(featviz.__file__).parent
LONGEST_FUNCTION, LONGEST_MODULE = 60, 400


def _modules():
    for path in sorted(SOURCE.rglob("*.py")):
        yield path, ast.parse(path.read_text())


def test_no_module_or_function_is_too_long():
    too_long = []
    for path, tree in _modules():
        lines = path.read_text().count("\n")
        if lines > LONGEST_MODULE:
            too_long.append(f"{path.name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    too_long.append(f"{path.name}:{node.name}: {length} lines")
    assert not too_long, too_long


def test_every_public_exception_is_a_featviz_error():
    """A user-facing error of any module derives from ``featviz.errors.FeatvizError``, which is
    all the command line catches; the others are private (a control-flow signal)."""
    found = []
    for info in pkgutil.walk_packages(featviz.__path__, "featviz."):
        if info.name.startswith("featviz.data"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Exception) and \
                    value.__module__ == info.name and not name.startswith("_"):
                found.append(value)
    outside = [c.__qualname__ for c in found if not issubclass(c, errors.FeatvizError)]
    assert not outside, outside
    assert all(c.__module__ == "featviz.errors" for c in found)


def test_the_command_line_catches_the_base_class_only():
    """``featviz.cli.main`` turns user mistakes into one line by their base class, not a list."""
    source = (SOURCE / "cli" / "__init__.py").read_text()
    main = next(node for node in ast.parse(source).body
                if isinstance(node, ast.FunctionDef) and node.name == "main")
    handlers = [node for node in ast.walk(main) if isinstance(node, ast.ExceptHandler)]
    caught = {ast.unparse(h.type) for h in handlers if h.type is not None}
    assert "FeatvizError" in caught
    assert not any(name.endswith("Error") and name not in ("FeatvizError", "OSError",
                                                           "MemoryError") for name in caught)
