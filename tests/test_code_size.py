"""The library stays readable: no function of workflow/critscale over 80 lines (decorators and
docstring included), so that a long driver is a sequence of named steps, and no module over 500."""

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "workflow" / "critscale"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def test_no_library_function_is_longer_than_80_lines():
    too_long = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(LIBRARY)}:{node.lineno} {node.name}: "
                                    f"{node.end_lineno - start + 1} lines")
    assert not too_long, "\n".join(too_long)


def test_no_library_module_is_longer_than_500_lines():
    too_long = [f"{path.relative_to(LIBRARY)}: {lines} lines" for path in sorted(LIBRARY.rglob("*.py"))
                if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not too_long, "\n".join(too_long)
