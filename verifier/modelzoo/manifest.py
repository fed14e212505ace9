"""The model manifest, read into typed records.

The manifest (``models/manifest.toml``) is the single statement of what each
model is and what it expects; the face classes read their contracts from here
rather than guessing from node names.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import ModelPackError
from verifier.templates import TemplateSpec

TASKS = ("detector", "landmarks", "embedder", "liveness")
# Tasks every pack must name; the others are optional (landmarks: where the
# detector gives them itself).
REQUIRED_TASKS = ("detector", "embedder")
# Tasks whose pack entry may list several models: their scores are fused.
FUSABLE_TASKS = ("embedder",)


@dataclass(frozen=True)
class Source:
    """A file inside a registry package, pinned by version and sha256."""

    registry: str
    package: str
    version: str
    sha256: str
    path: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    description: str
    licence: str
    source: Source
    prepare: tuple[str, ...]
    prepared_sha256: str
    input: dict[str, Any]
    output: dict[str, Any]
    # The class that owns the model's pre- and post-processing, where a task has
    # several (detectors: ultralight-rfb, yunet, retinaface).
    family: str = ""
    # A token a deployer must list in models.accept_licences before this model
    # loads: set for models whose licence restricts use (research only).
    requires_acceptance: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"

    @property
    def model_id(self) -> str:
        """Name plus the prepared file's hash: templates are tied to exact weights."""
        return f"{self.name}:{self.prepared_sha256[:12]}"


@dataclass(frozen=True)
class AssetSpec:
    """Files taken from a registry package (test photos), checked by the package hash."""

    name: str
    source: Source
    files: dict[str, str]


@dataclass(frozen=True)
class Manifest:
    path: Path
    models: dict[str, ModelSpec]
    # Pack name -> task -> the model names of that task (several only where fused).
    packs: dict[str, dict[str, tuple[str, ...]]]
    assets: dict[str, AssetSpec] = field(default_factory=dict)

    def members(self, name: str) -> dict[str, tuple[ModelSpec, ...]]:
        """The models of one pack by task; an unknown pack or model is a config error."""
        if name not in self.packs:
            raise ModelPackError(f"pack {name!r} is not in {self.path} (have {sorted(self.packs)})")
        chosen: dict[str, tuple[ModelSpec, ...]] = {}
        for task, model_names in self.packs[name].items():
            specs = []
            for model_name in model_names:
                if model_name not in self.models:
                    raise ModelPackError(f"pack {name!r} names unknown model {model_name!r}")
                spec = self.models[model_name]
                if spec.task != task:
                    raise ModelPackError(f"pack {name!r} uses {model_name!r} ({spec.task}) as {task}")
                specs.append(spec)
            chosen[task] = tuple(specs)
        return chosen

    def template_spec(self, name: str) -> TemplateSpec:
        """The model id and dimension of the templates a pack makes (fused where it has several embedders)."""
        parts = [TemplateSpec(spec.model_id, int(spec.output["dimension"])) for spec in self.members(name)["embedder"]]
        return parts[0] if len(parts) == 1 else TemplateSpec.fused(parts)

    def pack(self, name: str) -> dict[str, ModelSpec]:
        """The model of each task of a pack that fuses nothing."""
        members = self.members(name)
        fused = [task for task, specs in members.items() if len(specs) != 1]
        if fused:
            raise ModelPackError(f"pack {name!r} fuses several models for {', '.join(fused)}; read its members")
        return {task: specs[0] for task, specs in members.items()}


def load_manifest(path: Path) -> Manifest:
    """Parse and check the manifest; a malformed entry fails here, not at serve time."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelPackError(f"cannot read model manifest {path}: {exc}") from exc
    models: dict[str, ModelSpec] = {}
    for name, entry in raw.get("models", {}).items():
        try:
            spec = ModelSpec(
                name=name,
                task=entry["task"],
                description=entry.get("description", ""),
                licence=entry["licence"],
                source=Source(**entry["source"]),
                prepare=tuple(entry.get("prepare", ())),
                prepared_sha256=entry["prepared_sha256"],
                input=dict(entry["input"]),
                output=dict(entry["output"]),
                family=entry.get("family", ""),
                requires_acceptance=entry.get("requires_acceptance", ""),
            )
        except (KeyError, TypeError) as exc:
            raise ModelPackError(f"model {name!r} in {path} is incomplete: {exc}") from exc
        if spec.task not in TASKS:
            raise ModelPackError(f"model {name!r} has unknown task {spec.task!r}")
        models[name] = spec
    assets = {
        name: AssetSpec(name=name, source=Source(**entry["source"]), files=dict(entry["files"]))
        for name, entry in raw.get("assets", {}).items()
    }
    return Manifest(path=path, models=models, packs=_packs(raw.get("packs", {}), path), assets=assets)


def _packs(raw: dict[str, dict[str, Any]], path: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """Pack entries as tuples of model names; a list is allowed only where scores can be fused."""
    packs: dict[str, dict[str, tuple[str, ...]]] = {}
    for pack_name, entries in raw.items():
        packs[pack_name] = {}
        for task, value in entries.items():
            names = (value,) if isinstance(value, str) else tuple(value)
            if not names or (len(names) > 1 and task not in FUSABLE_TASKS):
                raise ModelPackError(f"pack {pack_name!r} in {path} needs one model for {task}, has {list(names)}")
            packs[pack_name][task] = names
        missing = [task for task in REQUIRED_TASKS if task not in packs[pack_name]]
        if missing:
            raise ModelPackError(f"pack {pack_name!r} in {path} names no {', '.join(missing)}")
    return packs
