"""Optional extras: what only model preparation or plotting needs, kept off a serving machine.

A serving install (``pip install .``) has what the server, ``verify`` and the
watch-list commands need; the server checks each prepared model's sha256 and
never needs the tools that made it. Preparing models from their shipped form
needs the ``prepare`` extra, and the plots of ``verifier eval`` the ``eval``
extra (``pip install '.[prepare,eval]'``; ``make run`` and ``make test``
install both). A command that needs a missing extra stops with
:class:`MissingExtra`, naming it, never with a bare ImportError.
"""

from __future__ import annotations

import importlib
from typing import Any

# The top-level modules each extra brings.
EXTRAS: dict[str, tuple[str, ...]] = {
    "prepare": ("onnx", "tflite2onnx", "tflite"),
    "eval": ("matplotlib",),
}


class MissingExtra(Exception):
    """A command needs an optional extra that is not installed."""

    def __init__(self, extra: str, module: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional extra {extra!r} (module {module!r} is not installed): "
            f"install it with `pip install 'verifier[{extra}]'` (or `pip install -e '.[{extra}]'` in a checkout)"
        )
        self.extra = extra
        self.module = module


def load(extra: str, module: str, name: str, purpose: str) -> Any:  # noqa: ANN401 - whatever the module holds
    """``module.name``, importing ``module`` only now; a missing module of
    ``extra`` becomes :class:`MissingExtra` saying what ``purpose`` needs."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in EXTRAS[extra]:
            raise MissingExtra(extra, missing, purpose) from exc
        raise
