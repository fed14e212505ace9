"""The committed generated code is what the .proto files generate now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from verifier.config import REPO_ROOT


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    protos = sorted((REPO_ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO_ROOT / 'proto'}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *map(str, protos)],
        check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc generated nothing"
    for relative in generated:
        committed = REPO_ROOT / relative
        assert committed.exists(), f"{relative} is not committed: run `make proto`"
        assert committed.read_text() == (tmp_path / relative).read_text(), f"{relative} is stale: run `make proto`"
