"""A lean serving install: the server's path imports none of the optional extras
(model preparation, plotting), and a command that needs a missing extra says
which one, rather than failing with an ImportError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from verifier.extras import EXTRAS

OPTIONAL = sorted(module for modules in EXTRAS.values() for module in modules)


def _python(absent: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``absent`` modules cannot be
    imported (as on a lean install: importing one raises ModuleNotFoundError)."""
    blocking = f"import sys\nfor name in {absent!r}:\n    sys.modules[name] = None\n"
    return subprocess.run([sys.executable, "-c", blocking + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, check=False, env=os.environ.copy())


def test_serving_imports_no_optional_extra() -> None:
    """A real server starts, loads the real models (sha256-checked), answers and
    stops with every optional module made absent, and never imported one."""
    result = _python(OPTIONAL, """
        import tempfile
        from pathlib import Path
        from verifier.config import get_settings
        from verifier.app import build_service, start_server
        from verifier.watchlist.service import initialise_store

        settings = get_settings().model_copy(deep=True)
        settings.server.port = 0
        settings.data_dir = Path(tempfile.mkdtemp())
        initialise_store(settings)
        running = start_server(settings, build_service(settings))
        running.stop(grace=1.0)
        import verifier.cli, verifier.watchlist.cli, verifier.evaluation.cli
        loaded = sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None})
        print("LOADED", [m for m in loaded if m in %r])
    """ % OPTIONAL)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_eval_without_its_extra_names_it() -> None:
    result = _python(["matplotlib"], """
        from verifier.cli import main
        sys.exit(main(["eval", "/nonexistent"]))
    """)
    assert result.returncode == 2, result.stderr
    assert "needs the optional extra 'eval'" in result.stderr and "pip install" in result.stderr
    assert "Traceback" not in result.stderr


def test_preparing_without_its_extra_names_it() -> None:
    result = _python(["onnx"], """
        from verifier.extras import MissingExtra, load
        try:
            load("prepare", "verifier.modelzoo.prepare", "prepare", "preparing a model")
        except MissingExtra as error:
            print(error)
    """)
    assert result.returncode == 0, result.stderr
    assert "preparing a model needs the optional extra 'prepare' (module 'onnx' is not installed)" in result.stdout
