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

GRANDCHILD = "from MRISynthesisLib.worker import exit_with_parent; import time; exit_with_parent({interval}); time.sleep(60)"
LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {code!r}])
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as ended
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _launch(interval: str) -> tuple[subprocess.Popen, int]:
    code = GRANDCHILD.format(interval=interval)
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(code=code)], stdout=subprocess.PIPE, text=True)
    return launcher, int(launcher.stdout.readline())


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_worker_exits_when_its_launcher_is_killed():
    launcher, worker = _launch("0.1")
    try:
        time.sleep(1.0)  # the worker has started its watch
        assert _alive(worker)
        launcher.kill()
        launcher.wait()
        assert _wait_gone(worker, 10), "the worker outlived the launcher that started it"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_command_run_for_the_panel_ends_with_its_launcher(tmp_path):
    """The panel's Cancel: ``python -m MRISynthesisLib rank ... --progress-lines`` (minutes of work) started
    through a launcher ends when the launcher is killed."""
    command = [sys.executable, "-m", "MRISynthesisLib", "rank", "--data", "phantom:brain:2", "--out",
               str(tmp_path / "ranking"), "--device", "cpu", "--progress-lines"]
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER.replace("[sys.executable, \"-c\", {code!r}]",
                                                                        repr(command))],
                                stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    try:
        time.sleep(4.0)  # imported and at work
        assert _alive(worker)
        launcher.kill()
        launcher.wait()
        assert _wait_gone(worker, 10), "the worker outlived the launcher that started it"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_without_the_watch_the_orphan_runs_on():
    """The case the watch exists for: killing the launcher alone does not end its child."""
    code = "import time; time.sleep(60)"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(code=code)], stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    launcher.kill()
    launcher.wait()
    try:
        assert not _wait_gone(worker, 1.5)
    finally:
        os.kill(worker, signal.SIGKILL)
