"""The library changes nothing process-wide (environment, warnings filters, file descriptor 2);
the CLI alone silences native logs and the stack's warnings, and only while a command runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

#: what a child prints of its process state; compared before and after the code under test
_STATE = """
import atexit, os, sys, warnings
import numpy  # numpy adds warnings filters of its own when imported: they are not edgeship's
def state():
    return dict(os.environ), list(warnings.filters), os.fstat(2)[:2], os.readlink("/proc/self/fd/2")
# registered first, so it runs last at exit: fd 2 must still reach the caller's stderr then
atexit.register(lambda: os.write(2, b"fd 2 still open at exit\\n"))
before = state()
"""


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _STATE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def _unchanged(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("unchanged"), result.stdout
    assert "fd 2 still open at exit" in result.stderr, result.stderr[-2000:]


def test_importing_and_calling_the_library_changes_no_process_state():
    _unchanged(_child("""
        import numpy as np
        import edgeship, edgeship.converters, edgeship.runtimes
        from edgeship import metrics, tasks
        assert metrics.accuracy(np.array([1, 0, 2]), np.array([1, 1, 2])) == 2 / 3
        assert tasks.parse_task("binary") == "binary"
        assert state() == before, "the library changed os.environ, warnings.filters or fd 2"
        print("unchanged")
    """))


def test_a_litert_session_leaves_stderr_alone_unless_asked(quickstart_dir):
    model = quickstart_dir / "tiny_cnn.int8.tflite"
    result = _child(f"""
        import numpy as np
        from edgeship.runtimes import load
        session = load({str(model)!r}, runtime="litert-compiled")
        session.predict(np.zeros((1, 8, 8, 1), np.float32))
        assert state() == before, "loading a model changed os.environ, warnings.filters or fd 2"
        print("unchanged")
    """)
    _unchanged(result)  # and LiteRT's logs show: this caller did not ask for quiet
    assert "accelerator" in result.stderr.lower(), result.stderr[-2000:]


def test_the_cli_is_quiet_for_a_command_and_restores_everything_after():
    result = _child("""
        from edgeship._deps import native_is_quiet, quiet_native_stderr
        from edgeship.cli import cli

        @cli.command("noisy")
        def noisy():
            with quiet_native_stderr():
                os.write(2, b"native noise\\n")
            warnings.warn("an old API", DeprecationWarning)
            print("quiet" if native_is_quiet() else "loud")

        before = state()
        for args in (["noisy"], ["--debug", "noisy"]):
            cli.main(args=args, standalone_mode=False)
            assert state() == before and not native_is_quiet(), args
        print("unchanged")
    """)
    _unchanged(result)
    assert result.stdout.split() == ["quiet", "loud", "unchanged"]
    # only the --debug run let the native line and the warning through
    assert result.stderr.count("native noise") == 1 and result.stderr.count("an old API") == 1, result.stderr


def test_the_cli_hides_litert_logs_and_debug_shows_them(quickstart_dir):
    model = str(quickstart_dir / "tiny_cnn.int8.tflite")
    args = ["bench", model, "--runtime", "litert-compiled", "--no-isolate", "--runs", "3", "--warmup", "1", "--json"]
    quiet = subprocess.run([sys.executable, "-m", "edgeship.cli", *args], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]  # none at exit either
    loud = subprocess.run([sys.executable, "-m", "edgeship.cli", "--debug", *args], capture_output=True, text=True,
                          timeout=300)
    assert loud.returncode == 0 and "accelerator" in loud.stderr.lower(), loud.stderr[-2000:]
