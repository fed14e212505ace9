"""The map of docs/architecture.md, kept true: who may import whom, and how long a module may grow.

Every import of every module under verifier/ is read from its syntax tree
(imports inside functions and under TYPE_CHECKING included), and checked
against the layers: the domain (core modules and packages) imports only
downwards, never the transport (verifier.server), the composition root
(verifier.app) or the command line (verifier.cli); the transport never the
two above it; the composition root never the command line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "verifier"
MAX_LINES = 600

# Layers, lowest first: a module may import its own layer and those below.
DOMAIN, TRANSPORT, COMPOSITION, COMMAND_LINE = range(4)
LAYER_NAMES = ("domain", "transport (verifier.server)", "composition root (verifier.app)", "command line (verifier.cli)")

# Within the domain, packages by rank: a package imports packages of lower
# rank only (and the core, rank 0, whose top-level modules, face/ and
# modelzoo/ form the face engine and may import one another).
RANKS = {
    "core": 0,
    "storage": 1,
    "security": 2,
    "vectors": 2,
    "watchlist": 3,
    "gate": 4,
    "registry": 5,
    "replication": 5,
    "evaluation": 6,
}
CORE_PACKAGES = {"face", "modelzoo", "v1"}

# Known upward imports, each with the step that removes it. Remove an entry
# with its import; the test fails on an entry that no longer happens.
UPWARD_ALLOWED: set[tuple[str, str]] = set()

# Packages that never import another, whatever their ranks: replication
# follows the storage layer's change feed, whatever the store holds, and
# reaches the service above the store only through its own port
# (verifier/replication/replicated.py).
NEVER = {("replication", "watchlist"), ("replication", "registry")}

# Modules still over MAX_LINES, each with the step that splits it. Remove an
# entry when the module is split; the test fails on an entry already short enough.
OVERSIZE_ALLOWED: set[str] = set()


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[1] == "v1":  # generated protocol code
            continue
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(module: str, path: Path) -> set[str]:
    """Every verifier name ``module`` imports (``from verifier.x import y``: verifier.x and verifier.x.y)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("verifier.")}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return DOMAIN
    return {"server": TRANSPORT, "app": COMPOSITION, "cli": COMMAND_LINE}.get(parts[1], DOMAIN)


def _package(module: str) -> str:
    """The domain package a module belongs to; "core" for top-level modules and the face engine."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in CORE_PACKAGES or not (PACKAGE / parts[1]).is_dir():
        return "core"
    return parts[1]


IMPORTS = {module: _imports(module, path) for module, path in _modules()}


def _known(imported: str) -> str:
    """The module an imported name is (``verifier.x.y`` where y is a name in module x: verifier.x)."""
    while imported not in IMPORTS and imported.count(".") > 1 and not imported.startswith("verifier.v1."):
        imported = imported.rpartition(".")[0]
    return imported


def test_the_scan_sees_the_whole_package() -> None:
    assert {"verifier.app", "verifier.cli", "verifier.server.gate_servicer", "verifier.watchlist.service"} <= set(IMPORTS)
    assert "verifier.server.gate_servicer" in IMPORTS["verifier.app"]
    assert "verifier.watchlist.store" in {_known(name) for name in IMPORTS["verifier.watchlist.service"]}


def test_no_layer_imports_a_layer_above_it() -> None:
    """Above all: no domain module imports verifier.server, verifier.app or
    verifier.cli; a command that needs a local service gets it from verifier.app."""
    upward = sorted(
        f"{module} ({LAYER_NAMES[_layer(module)]}) imports {name} ({LAYER_NAMES[_layer(name)]})"
        for module, names in IMPORTS.items() for name in names if _layer(name) > _layer(module)
    )
    assert not upward, "\n".join(upward)


def test_domain_packages_import_only_downwards() -> None:
    seen: set[tuple[str, str]] = set()
    upward = []
    for module, names in IMPORTS.items():
        if _layer(module) != DOMAIN:
            continue
        own = _package(module)
        for name in map(_known, names):
            other = _package(name)
            if _layer(name) != DOMAIN or other == own or RANKS[other] < RANKS[own] or other == "core":
                continue
            if (module, name) in UPWARD_ALLOWED:
                seen.add((module, name))
                continue
            upward.append(f"{module} ({own}, rank {RANKS[own]}) imports {name} ({other}, rank {RANKS[other]})")
    assert not upward, "\n".join(sorted(upward))
    assert seen == UPWARD_ALLOWED, f"no longer imported, drop from UPWARD_ALLOWED: {UPWARD_ALLOWED - seen}"


def test_replication_knows_the_storage_layer_not_what_is_stored() -> None:
    found = sorted(
        f"{module} imports {name}" for module, names in IMPORTS.items() for name in map(_known, names)
        if (_package(module), _package(name)) in NEVER
    )
    assert not found, "\n".join(found)
    assert any(_package(_known(name)) == "storage" for name in IMPORTS["verifier.replication.feed"])


def test_every_domain_package_has_a_rank() -> None:
    packages = {_package(module) for module in IMPORTS if _layer(module) == DOMAIN}
    assert packages == set(RANKS), f"ranks to add or remove: {packages ^ set(RANKS)}"


def _sources() -> Iterator[Path]:
    for folder in (PACKAGE, ROOT / "benchmarks"):
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(ROOT)
            if any(part.startswith(".") or part in {"results", "__pycache__"} for part in relative.parts):
                continue  # benchmarks/.peer-venv: the peer's own environment
            if relative.parts[:2] == ("verifier", "v1"):
                continue  # generated by protoc
            yield path


def test_no_module_passes_the_size_limit() -> None:
    limit = MAX_LINES
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines()) for path in _sources()}
    assert "benchmarks/loadgen/__init__.py" in sizes and "verifier/app.py" in sizes
    over = sorted(f"{name}: {lines} lines" for name, lines in sizes.items()
                  if lines > limit and name not in OVERSIZE_ALLOWED)
    assert not over, f"split along a seam (docs/architecture.md): {over}"
    short = {name for name in OVERSIZE_ALLOWED if sizes.get(name, 0) <= limit}
    assert not short, f"under the limit now (or gone), drop from OVERSIZE_ALLOWED: {short}"
