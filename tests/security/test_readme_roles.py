"""The README's "Who may call what" table says what `verifier/security/roles.py`
enforces: a grant added to one and not the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

from verifier.security.roles import PERMISSIONS, Role

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_table() -> dict[str, frozenset[Role]]:
    """Full method name -> roles ticked, from the table under "Who may call what"."""
    text = README.read_text()
    start = text.index("### Who may call what")
    section = text[start:text.index("\n### ", start + 1)]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| RPC"))
    roles = [Role(cell.strip()) for cell in header.strip("|").split("|")[1:]]
    table: dict[str, frozenset[Role]] = {}
    for line in lines:
        first, *ticks = line.strip().strip("|").split("|")
        granted = frozenset(role for role, tick in zip(roles, ticks) if tick.strip() == "✓")
        service = ""
        for name in re.findall(r"`([^`]+)`", first):
            if "/" in name:
                service, rpc = name.rsplit("/", 1)
            else:
                rpc = name
            package = "" if service.startswith("grpc.") else "verifier.v1."
            if rpc == "*":
                for method in PERMISSIONS:
                    if method.startswith(f"/{package}{service}/"):
                        table[method] = granted
            else:
                table[f"/{package}{service}/{rpc}"] = granted
        if "reflection" in first:
            for method in PERMISSIONS:
                if "ServerReflection" in method:
                    table[method] = granted
    return table


def test_the_readme_roles_table_matches_the_enforced_one() -> None:
    documented = _readme_table()
    assert set(documented) == set(PERMISSIONS), (
        f"in roles.py only: {sorted(set(PERMISSIONS) - set(documented))}; "
        f"in the README only: {sorted(set(documented) - set(PERMISSIONS))}"
    )
    differ = {m: (sorted(documented[m]), sorted(PERMISSIONS[m])) for m in PERMISSIONS if documented[m] != PERMISSIONS[m]}
    assert not differ, f"README against roles.py: {differ}"
