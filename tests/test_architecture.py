"""
docs/architecture.md stays true: its module table lists every module of the
package with exactly the package modules it imports, the layers keep their
one-way rules, and no module reaches into another's underscored names.
"""

from __future__ import annotations

import ast
import os
import re

from twisted.trial.unittest import SynchronousTestCase

import libvirt_twisted

PACKAGE = os.path.dirname(libvirt_twisted.__file__)
TOP = os.path.dirname(PACKAGE)


def modules() -> dict[str, ast.Module]:
    """Every module of the package, parsed, by file name."""
    return {
        name: ast.parse(open(os.path.join(PACKAGE, name), encoding="utf-8").read())
        for name in sorted(os.listdir(PACKAGE))
        if name.endswith(".py")
    }


def imported(tree: ast.Module) -> set[str]:
    """The package modules a module imports, as their names without .py."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
    return found


def table() -> dict[str, set[str]]:
    """The architecture document's module table: file -> the modules it imports."""
    with open(os.path.join(TOP, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    rows: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        path = cells[0].strip("`")
        name = path.rsplit("/", 1)[-1]
        if path.startswith("twisted/"):
            continue
        rows[name] = set(re.findall(r"`(\w+)`", cells[2]))
    return rows


class ArchitectureTests(SynchronousTestCase):
    def test_theTableListsEveryModuleAndItsImports(self) -> None:
        documented = table()
        parsed = modules()
        self.assertEqual(set(documented), set(parsed))
        wrong = {
            name: (sorted(imported(tree)), sorted(documented[name]))
            for name, tree in parsed.items()
            if name != "__init__.py" and imported(tree) != documented[name]
        }
        self.maxDiff = None
        self.assertEqual(wrong, {}, "module: (imports, documented)")

    def test_layersPointOneWay(self) -> None:
        parsed = {name[:-3]: imported(tree) for name, tree in modules().items()}
        for lower in ("_eventloop", "_fdwatch", "_reactor", "_install"):
            self.assertFalse(
                parsed[lower] & {"_connection", "_registrations", "_service", "_monitor"}, lower
            )
        for layer in ("_connection", "_registrations", "_registry", "_delivery"):
            self.assertFalse(
                parsed[layer] & {"_service", "_subscriptions", "_monitor", "_audience"}, layer
            )
        self.assertFalse(any("libvirt_monitor" in found for found in parsed.values()))

    def test_noModuleTouchesAnotherModulesPrivateNames(self) -> None:
        for name, tree in modules().items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    if node.module is None:
                        continue  # "from . import _families": the module itself
                    self.assertEqual(private, [], f"{name} imports {private} from {node.module}")
                if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                    if node.attr.startswith("__"):
                        continue
                    owner = node.value
                    if isinstance(owner, ast.Name) and owner.id in ("self", "cls", "libvirt"):
                        continue
                    self.fail(f"{name}:{node.lineno} reaches into {ast.unparse(node)}")
