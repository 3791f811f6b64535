"""Peak RSS and CPU seconds of a process and its children, from /proc (Linux)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def parse_cpu_seconds(stat: str, ticks: int = _TICKS) -> float:
    """utime + stime + cutime + cstime of a /proc/<pid>/stat line, in seconds (children that
    were waited for included). The command name may hold spaces and parentheses: fields count
    from the last ')'."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)): utime..cstime are fields 14..17.
    return sum(int(value) for value in fields[11:15]) / ticks


def parse_peak_rss_kb(status: str) -> int:
    """VmHWM (peak resident set) of a /proc/<pid>/status text, in kB; 0 when absent (a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant alive now."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in (_PROC / str(current) / "task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


@dataclass(frozen=True, slots=True)
class Usage:
    peak_rss_mb: float
    cpu_seconds: float


def usage(pid: int) -> Usage | None:
    """The tree's summed CPU seconds and its largest peak RSS; None when `pid` is gone."""
    peak, cpu, any_read = 0, 0.0, False
    for member in process_tree(pid):
        try:
            cpu += parse_cpu_seconds((_PROC / str(member) / "stat").read_text())
            peak = max(peak, parse_peak_rss_kb((_PROC / str(member) / "status").read_text()))
            any_read = True
        except (OSError, ValueError):
            continue
    return Usage(peak_rss_mb=peak / 1024, cpu_seconds=cpu) if any_read else None


class Sampler:
    """Samples usage(pid) every `interval` seconds on a thread, so the last figures survive the
    process's exit; `latest` is the newest sample."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self._interval = pid, interval
        self.latest: Usage | None = usage(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)
        self._thread.start()

    def sample(self) -> Usage | None:
        now = usage(self.pid)
        if now is not None:
            self.latest = now
        return self.latest

    def close(self) -> Usage | None:
        self._stop.set()
        self._thread.join()
        return self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()
