"""How the runner's stages are run: one small interface, two executors.

A StageJob is plain data — the stage's kind, options, input paths and folder under RUN_DIR — so it
can run here or on another machine that sees RUN_DIR at the same path. `execute_stage` runs one
attempt anywhere: a worker process (`qconvert.pipeline.worker`) writes into a partial folder of its
own, which is renamed into place only when complete, so two attempts at one stage never leave a
half-written artefact, and a stage cut short leaves only a partial folder that the next run
removes.

An Executor takes jobs (`submit`), reports the ones that finished (`wait`) and which are running
where (`running`), stops them (`cancel`) and lets go (`close`). LocalExecutor runs one at a time in this machine;
qconvert.pipeline.ray_executor runs them as tasks on a Ray cluster.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from qconvert import __version__
from qconvert.pipeline.resources import StageResources

RECORD = "stage.json"
PARTIAL_PREFIX = ".partial-"
ATTEMPTS_SUFFIX = ".attempts"  # PARTIAL_PREFIX + folder + this: the attempts at a stage so far, across retries
WORKER_LOG = "worker.log"


class StageFailed(Exception):
    """The stage's own error (bad input, a tool that failed): running it again would fail again."""


class WorkerLost(Exception):
    """The stage's worker process was killed (a signal, out of memory): another attempt may succeed."""


@dataclass(frozen=True)
class StageJob:
    name: str
    kind: str
    key: str
    options: dict
    inputs: dict[str, str]  # role → the upstream stage's name
    paths: dict[str, str]  # role → the upstream artefact's path
    run_dir: str
    folder: str  # Stage.folder_name, under RUN_DIR/stages
    resources: StageResources
    threads: int = 0  # the worker's CPU threads where the executor fixes them (OMP_NUM_THREADS); 0: its default


@dataclass(frozen=True)
class StageOutcome:
    name: str
    record: dict | None = None  # stage.json of a finished stage
    error: str | None = None  # why it failed, one line


class Executor(Protocol):
    capacity: int | None  # stages it runs at once; None: as many as it is given (it queues them)

    @classmethod
    def start(cls, run_dir: Path, progress: bool, address: str | None) -> "Executor":
        """Ready to run stages in RUN_DIR (for Ray: connected, and every node sees RUN_DIR)."""

    def submit(self, job: StageJob) -> None: ...

    def wait(self, timeout: float) -> list[StageOutcome]:
        """The submitted jobs that ended since the last call; waits up to `timeout` seconds for one."""

    def running(self) -> dict[str, str]:
        """Stage name → the node it runs on, for the submitted jobs that have started."""

    def cancel(self) -> None:
        """Stop every submitted job (Ctrl-C): each removes its partial folder, or leaves it to the runner."""

    def close(self) -> None:
        """Let go of what it holds (a Ray connection)."""


def stages_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "stages"


def partial_folders(run_dir: Path) -> Iterator[Path]:
    """Partial folders and attempt records: RUN_DIR/stages/.partial-*, and a matrix model's."""
    stages = stages_dir(run_dir)
    yield from stages.glob(f"{PARTIAL_PREFIX}*")
    yield from stages.glob(f"*/{PARTIAL_PREFIX}*")


def _attempts_file(final: Path) -> Path:
    return final.parent / f"{PARTIAL_PREFIX}{final.name}{ATTEMPTS_SUFFIX}"


def read_attempts(run_dir: Path, folder: str) -> list[dict]:
    """The attempts at a stage that started in this run: node, pid and partial folder of each."""
    try:
        return json.loads(_attempts_file(stages_dir(run_dir) / folder).read_text())
    except (OSError, ValueError):
        return []


def _die_with_parent() -> None:
    """In the worker: SIGKILL when its parent dies, so kill -9 of a run (or of a Ray worker) stops its stage too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stage_error(path: Path) -> str:
    """The stage's own error line, which its worker leaves in the partial folder."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _log_tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or [""])[-1].strip()


def _wait(proc: subprocess.Popen) -> int:
    """Its exit code. Waits in short steps: Ray cancels a task with a KeyboardInterrupt raised
    between two Python bytecodes, which one long wait in C would not see."""
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass


def execute_stage(job: StageJob, node: str, progress: bool, log: bool = False) -> dict:
    """One attempt at a stage, in a worker process; its record once it is in place.

    With `log`, the worker's output goes to worker.log in the stage folder (a remote node's
    terminal is nobody's), and a failure's message carries its last error line."""
    final = stages_dir(Path(job.run_dir)) / job.folder
    partial = final.parent / f"{PARTIAL_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    attempts_file = _attempts_file(final)
    attempts = read_attempts(Path(job.run_dir), job.folder) + [{"node": node, "pid": os.getpid(), "partial": partial.name}]
    out = partial / "out"
    out.mkdir(parents=True)
    attempts_file.write_text(json.dumps(attempts))
    spec = {"kind": job.kind, "options": job.options, "inputs": job.paths, "out": str(out), "progress": progress, "result": str(partial / "result.json"),
            "error": str(partial / "error.txt")}
    (partial / "spec.json").write_text(json.dumps(spec, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": str(job.threads)} if job.threads else None
    log_path = partial / WORKER_LOG if log else None
    start = time.monotonic()
    with open(log_path, "w") if log_path else open(os.devnull) as log_file:
        streams = {"stdout": log_file, "stderr": subprocess.STDOUT} if log_path else {}
        proc = subprocess.Popen([sys.executable, "-m", "qconvert.pipeline.worker", str(partial / "spec.json")], preexec_fn=_die_with_parent, env=env, **streams)
        try:
            rc = _wait(proc)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # it may not have had it: a signal to the runner's pid alone
            proc.wait()
            shutil.rmtree(partial, ignore_errors=True)
            attempts_file.unlink(missing_ok=True)
            raise
    if rc != 0:
        cause = _stage_error(partial / "error.txt") or _log_tail(log_path)
        shutil.rmtree(partial, ignore_errors=True)
        if rc == 130 or rc == -signal.SIGINT:
            attempts_file.unlink(missing_ok=True)
            raise KeyboardInterrupt
        if rc < 0:  # the attempts file stays: the next attempt counts on from it
            raise WorkerLost(f"stage {job.name}: its worker was killed by signal {signal.Signals(-rc).name} on {node}")
        attempts_file.unlink(missing_ok=True)
        where = f" on {node}" if log_path else ""
        raise StageFailed(f"stage {job.name} failed{where}: {cause}" if cause else f"stage {job.name} failed{where} (exit code {rc})")
    worker = json.loads((partial / "result.json").read_text())
    record = {
        "name": job.name,
        "kind": job.kind,
        "key": job.key,
        "options": job.options,
        "inputs": job.inputs,
        "result": {**worker["result"], "artifact": f"out/{worker['result']['artifact']}"} if "artifact" in worker["result"] else worker["result"],
        "wall_s": round(time.monotonic() - start, 2),
        "peak_rss_mib": worker["peak_rss_mib"],
        "memory_estimate_mib": round(job.resources.memory_bytes / (1 << 20)),
        "node": node,
        "attempts": len(attempts),
        "attempt_nodes": [a["node"] for a in attempts],
        "qconvert_version": __version__,
    }
    (partial / RECORD).write_text(json.dumps(record, indent=1))
    (partial / "result.json").unlink()
    _move_into_place(partial, final)
    for lost in attempts[:-1]:  # retried only once their worker was gone: their partial folders are litter
        shutil.rmtree(final.parent / lost["partial"], ignore_errors=True)
    attempts_file.unlink(missing_ok=True)
    return record


def _move_into_place(partial: Path, final: Path) -> None:
    """Rename the complete partial folder to the stage's folder. A finished folder already there is
    the old result of a --force (it goes now, once the new one is complete)."""
    if final.exists():
        old = final.parent / f"{PARTIAL_PREFIX}old-{final.name}-{partial.name[-8:]}"
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(partial, final)


@dataclass
class LocalExecutor:
    """This machine, one stage at a time, each in its worker process (the default)."""

    progress: bool = True
    capacity: int | None = 1
    node: str = field(default_factory=socket.gethostname)
    _queue: list[StageJob] = field(default_factory=list)

    @classmethod
    def start(cls, run_dir: Path, progress: bool, address: str | None = None) -> "LocalExecutor":
        return cls(progress)

    def submit(self, job: StageJob) -> None:
        self._queue.append(job)

    def running(self) -> dict[str, str]:
        return {job.name: self.node for job in self._queue[:1]}

    def wait(self, timeout: float) -> list[StageOutcome]:
        if not self._queue:
            return []
        job = self._queue[0]
        try:
            return [StageOutcome(job.name, record=execute_stage(job, self.node, self.progress))]
        except (StageFailed, WorkerLost) as exc:
            return [StageOutcome(job.name, error=str(exc))]
        finally:
            self._queue.pop(0)

    def cancel(self) -> None:
        self._queue.clear()  # the running stage was interrupted with the runner, in execute_stage

    def close(self) -> None:
        pass
