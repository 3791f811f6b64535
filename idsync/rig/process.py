"""A server child process that cannot outlive the Python process that started it."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from idsync.rig.errors import RigError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_running: set[ManagedProcess] = set()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: the kernel SIGKILLs the child when its parent dies, even by SIGKILL.

    The signal fires when the *thread* that forked exits, so start servers from a long-lived
    thread (the main thread, as pytest fixtures do).
    """

    def arm() -> None:
        if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(126)

    return arm


class ManagedProcess:
    """One long-running child: output to a log file, stopped by SIGTERM, SIGKILL as a last resort."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        if self.running:
            raise RigError(f"{self.name} is already running pid={self.pid}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    # Own session: a Ctrl-C in the terminal reaches pytest, whose teardown then stops
                    # the servers in order, instead of killing them under the running tests.
                    start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
            except OSError as exc:
                raise RigError(f"cannot launch {self.name}: {exc}") from exc
        _running.add(self)
        logger.debug("process started name=%s pid=%d log=%s", self.name, self.pid, self.log_path)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM and wait; SIGKILL if it has not exited within timeout. Idempotent."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            self._forget()
            return
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("process ignored SIGTERM, killing name=%s pid=%d timeout=%s", self.name, popen.pid, timeout)
            popen.kill()
            popen.wait()
        logger.debug("process stopped name=%s pid=%d returncode=%s", self.name, popen.pid, popen.returncode)
        self._forget()

    def kill(self) -> None:
        popen = self._popen
        if popen is not None and popen.poll() is None:
            popen.kill()
            popen.wait()
            logger.debug("process killed name=%s pid=%d", self.name, popen.pid)
        self._forget()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _forget(self) -> None:
        _running.discard(self)


@atexit.register
def _stop_all_at_exit() -> None:
    # A normal interpreter exit stops servers cleanly (and lets Kafka flush); PDEATHSIG covers the rest.
    for process in list(_running):
        process.stop(timeout=10)
