"""``relay serve --workers N``: N relay processes on one machine, when one core is not enough.

Each worker is a whole relay (``relay serve``) in the same consumer group, on the same store: Kafka
assigns each its partitions, and the store hands pending jobs over on a rebalance exactly as it does
between instances on separate machines (docs/scale-out.md). Only the first worker listens for the API
and ``/metrics``; Prometheus' multiprocess mode lets that one ``/metrics`` count every worker.

This parent does no relay work: it prepares what workers would race for (the generated master key,
the topics and the schema, by starting the first worker alone), starts the rest, restarts a worker
that dies (with a growing pause), and on SIGTERM or SIGINT stops them all and waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

import structlog

from relay.config import Settings
from relay.crypto import load_master_key

log = structlog.get_logger("relay.workers")

STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
RESTART_PAUSE_MAX = 30.0
POLL = 0.2


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    failures: int = 0  # consecutive early exits: the restart pause doubles with each
    started_at: float = 0.0
    restart_at: float | None = None


class Workers:
    def __init__(self, settings: Settings, count: int, config: str | None) -> None:
        self._settings = settings
        self._count = count
        self._config = config
        self._stopping = False
        self._metrics_dir = ""

    def run(self) -> int:
        """Run until signalled; the exit code is the first worker's if it could not start."""
        load_master_key(self._settings.master_key, self._settings.data_dir)  # generated once, here
        self._metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        workers = [_Worker(index) for index in range(self._count)]
        try:
            first = workers[0]
            self._spawn(first)
            code = self._wait_ready(first)
            if code is not None:
                return code
            for worker in workers[1:]:
                self._spawn(worker)
            log.info("workers_started", workers=self._count, pids=[w.proc.pid for w in workers if w.proc])
            while not self._stopping:
                for worker in workers:
                    self._watch(worker)
                time.sleep(POLL)
            return 0
        finally:
            self._stop_all(workers)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _command(self, worker: _Worker) -> list[str]:
        command = [sys.executable, "-m", "relay.cli", "serve", "--workers", "1", "--worker-index", str(worker.index)]
        return command + (["--config", self._config] if self._config else [])

    def _spawn(self, worker: _Worker) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        worker.proc = subprocess.Popen(self._command(worker), env=env)
        worker.started_at = time.monotonic()
        worker.restart_at = None

    def _wait_ready(self, worker: _Worker) -> int | None:
        """Wait until the first worker answers /healthz; its exit code if it exits first."""
        host, port = self._settings.api_host_port
        url = f"http://{host}:{port}/healthz"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        assert worker.proc is not None
        while not self._stopping:
            code = worker.proc.poll()
            if code is not None:
                log.error("worker_failed_to_start", worker=worker.index, exit_code=code)
                return code or 1
            try:
                with urllib.request.urlopen(url, timeout=1.0):
                    return None
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                log.error("worker_not_ready", worker=worker.index, waited_s=STARTUP_TIMEOUT)
                return 1
            time.sleep(POLL)
        return 0

    def _watch(self, worker: _Worker) -> None:
        """Restart a worker that exited; quick repeated exits wait longer each time."""
        if worker.proc is None:
            return
        code = worker.proc.poll()
        if code is None:
            return
        now = time.monotonic()
        if worker.restart_at is None:
            _mark_dead(worker.proc.pid, self._metrics_dir)
            worker.failures = worker.failures + 1 if now - worker.started_at < RESTART_PAUSE_MAX else 1
            pause = min(RESTART_PAUSE_MAX, 0.5 * 2 ** (worker.failures - 1))
            worker.restart_at = now + pause
            log.error("worker_exited", worker=worker.index, pid=worker.proc.pid, exit_code=code,
                      restart_in_s=pause)
        elif now >= worker.restart_at:
            self._spawn(worker)
            log.info("worker_restarted", worker=worker.index, pid=worker.proc.pid)

    def _stop_all(self, workers: Sequence[_Worker]) -> None:
        running = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker_killed", pid=proc.pid, waited_s=STOP_TIMEOUT)
                proc.kill()
                proc.wait()
        log.info("workers_stopped", workers=len(workers))


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """A dead worker's gauges stop counting (its counters keep their totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)
