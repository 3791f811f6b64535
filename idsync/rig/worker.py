"""`idsync run` as a child process, for the demo and for tests that restart or kill it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from idsync.rig.process import ManagedProcess


class WorkerProcess:
    def __init__(self, topology: Path, *, log_path: Path, env: Mapping[str, str], components: str | None = None,
                 state_dir: Path | None = None) -> None:
        """`components`: what `idsync run --components` gets (default: all). `state_dir`: where
        its tables live (default: beside its log, named after it), another worker's to restart it."""
        chosen = ["--components", components] if components else []
        # Each worker its own tables (two processes cannot open one RocksDB directory).
        self.state_dir = state_dir or log_path.parent / f"{log_path.stem}-state"
        state = ["--state-dir", str(self.state_dir)]
        self._process = ManagedProcess(
            "idsync-worker",
            [sys.executable, "-m", "idsync.cli", "run", "--topology", str(topology), *state, *chosen],
            log_path=log_path,
            env={**os.environ, **env},
            # faust keeps its <app_id>-data directory in the working directory: the test's, not
            # the repository.
            cwd=log_path.parent,
        )
        self.log_path = log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def start(self) -> WorkerProcess:
        self._process.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._process.stop(timeout)

    def kill(self) -> None:
        self._process.kill()
