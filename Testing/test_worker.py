"""A worker the Slicer panel starts ends when the process that started it is killed (the PythonSlicer
launcher), instead of running on as an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX re-parenting; the Windows path is not run here")

#: a stand-in for PythonSlicer: starts the worker as its child, prints the child's pid, waits
LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen({command!r})
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) has ended
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _kill_the_launcher_of(command: list[str], settle_s: float) -> bool:
    """Start ``command`` through a launcher, let it work ``settle_s``, kill the launcher: did the worker end
    within 10 s? (It is killed afterwards either way.)"""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(command=command)], stdout=subprocess.PIPE,
                                text=True)
    worker = int(launcher.stdout.readline())
    try:
        time.sleep(settle_s)
        assert _alive(worker), "the worker ended before its launcher was killed"
        launcher.kill()
        launcher.wait()
        return _wait_gone(worker, 10)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_worker_exits_when_its_launcher_is_killed():
    code = "from MRISynthesisLib.worker import exit_with_parent; import time; exit_with_parent(0.1); time.sleep(60)"
    assert _kill_the_launcher_of([sys.executable, "-c", code], settle_s=1.0)


def test_a_command_run_for_the_panel_ends_with_its_launcher(tmp_path):
    """The panel's Cancel: ``python -m MRISynthesisLib rank ... --progress-lines`` (minutes of work)."""
    command = [sys.executable, "-m", "MRISynthesisLib", "rank", "--data", "phantom:brain:2", "--out",
               str(tmp_path / "ranking"), "--device", "cpu", "--progress-lines"]
    assert _kill_the_launcher_of(command, settle_s=4.0)


def test_without_the_watch_the_orphan_runs_on():
    """The case the watch exists for: killing the launcher alone does not end its child."""
    assert not _kill_the_launcher_of([sys.executable, "-c", "import time; time.sleep(60)"], settle_s=0.5)
