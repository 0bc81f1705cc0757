"""`qconvert run --executor ray` on real Ray: a local instance (the CLI's own `ray.init`) and a
cluster of two nodes on this machine (`ray start --head`, then `ray start --address`, each with its
own temp dir and resource label). What is checked: the matrix's artefacts are byte-identical to the
local executor's and the report's numbers equal; stages land on both nodes; a node that cannot see
RUN_DIR fails the storage probe before any work; a worker killed mid-stage is retried and the
retry is in the report; a driver killed mid-run resumes from the finished stages; without Ray,
`--executor ray` says how to install it and the local executor never imports it.

Every Ray process these tests start carries QCONVERT_RAY_TEST=<its temp dir> in its environment, so
that teardown finds and ends exactly those (and checks that a killed driver's instance went away by
itself). Runs use the same RUN_DIR path where artefacts are compared: an artefact may record its
inputs' paths.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import EVAL_TEXT, FIXTURE, CliResult
from tests.pipeline.test_run import actions

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'qconvert[ray]')")

MATRIX = f"""
[calibration]
n_samples = 16
seqlen = 64

[gguf]
types = ["q4_0"]

[[gptq]]
bits = 4
group_size = 64

[eval]
text = "{EVAL_TEXT}"
ctx = 128
chunks = 2

[run]
compute_dtype = "float32"
threads = 1

[[models]]
path = "{FIXTURE}"
name = "tiny"

[[models]]
path = "{FIXTURE}"
name = "tiny"
variant = "k"
gguf = {{ types = ["q4_0", "q4_k_m"] }}
"""
MEASURED = ("artefact", "engine", "size_mib", "bits_per_weight", "ppl", "ppl_err", "kld", "same_top_p")
ENV_TAG = "QCONVERT_RAY_TEST"
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def qconvert(*args: object, env: dict | None = None) -> CliResult:
    proc = subprocess.run([sys.executable, "-m", "qconvert", *map(str, args)], capture_output=True, text=True, env={**os.environ, **RAY_ENV, **(env or {})})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def hashes(run_dir: Path) -> dict[str, str]:
    stages = run_dir / "stages"
    return {str(p.relative_to(stages)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(stages.rglob("out/**/*")) if p.is_file()}


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def measured(run_dir: Path) -> list[dict]:
    return [{k: row.get(k) for k in MEASURED} for row in report(run_dir)["rows"]]


def seed(source: Path, run_dir: Path, leave_out: set[str]) -> None:
    """RUN_DIR with the finished stages of another run, but those named in `leave_out`."""
    for record in (source / "stages").rglob("stage.json"):
        name = json.loads(record.read_text())["name"]
        if name not in leave_out:
            shutil.copytree(record.parent, run_dir / "stages" / record.parent.relative_to(source / "stages"))


def tagged(tag: str) -> dict[int, str]:
    """pid → command line of the processes whose environment carries ENV_TAG=tag: the Ray
    processes (and stage workers) one test started."""
    needle = f"{ENV_TAG}={tag}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return found


def tagged_pids(tag: str) -> list[int]:
    return list(tagged(tag))


def end_tagged(tag: str) -> None:
    for pid in tagged_pids(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gptq_workers(tag: str) -> list[int]:
    """The stage workers (their own processes, under a Ray worker) running a GPTQ stage."""
    return [pid for pid, cmd in tagged(tag).items() if "qconvert.pipeline.worker" in cmd and "/.partial-gptq-" in cmd]


def wait_for(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def short_temp_dir(prefix: str) -> Path:
    """Ray's socket paths must stay under 108 bytes: a short folder under /tmp, not pytest's."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def no_ray(work) -> dict:
    """An environment where `import ray` fails as it does without the package."""
    stub = work / "no-ray" / "ray"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    return {"PYTHONPATH": os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def local_run(work, no_ray, llama_tools) -> Path:
    """The matrix with the local executor, where Ray cannot be imported: it never is."""
    recipe = work / "matrix.toml"
    recipe.write_text(MATRIX)
    result = qconvert("run", recipe, "-o", work / "run", env=no_ray)
    assert result.rc == 0, result.stderr
    (work / "run").rename(work / "local")
    return work / "local"


@pytest.fixture(scope="module")
def ray_run(work, local_run) -> tuple[Path, CliResult]:
    """The matrix on a local Ray instance (`ray.init`, this machine's 2 CPUs), in the same RUN_DIR path."""
    temp = short_temp_dir("qcr")
    try:
        result = qconvert("run", work / "matrix.toml", "-o", work / "run", "--executor", "ray", env={"RAY_TMPDIR": str(temp), ENV_TAG: str(temp)})
        assert result.rc == 0, result.stdout[-3000:] + result.stderr
        assert wait_for(lambda: not tagged_pids(str(temp)), 30), "the run's Ray instance outlived it"
    finally:
        end_tagged(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
    (work / "run").rename(work / "ray")
    return work / "ray", result


def test_matrix_on_ray_is_byte_identical_to_local(local_run, ray_run):
    ray_dir, result = ray_run
    local = hashes(local_run)
    assert local == hashes(ray_dir) and len(local) >= 10
    assert measured(ray_dir) == measured(local_run)
    rows = [r["artefact"] for r in measured(local_run)]
    assert rows == ["tiny/hf", "tiny/gguf-f16", "tiny/gguf-q4_0", "tiny/gptq-w4-g64", "tiny+k/gguf-q4_k_m"]
    # what the variants have in common (the same keys) is one stage: only q4_k_m is tiny+k's own
    stages = {s["stage"]: s for s in report(ray_dir)["stages"]}
    assert sorted(name for name in stages if name.startswith("tiny+k/")) == ["tiny+k/eval-gguf-q4_k_m", "tiny+k/gguf-q4_k_m"]
    assert all(s["node"] and s["attempts"] == 1 and s["wall_s"] > 0 for s in stages.values())
    assert all(s["memory_estimate_mib"] >= s["peak_rss_mib"] for s in stages.values()), "a memory estimate below the measured peak"
    assert set(actions(result.stdout).values()) == {"ran"}
    assert any(line.startswith("progress: ") and " running (" in line for line in result.stdout.splitlines())
    assert "| node | attempts |" in (ray_dir / "report.md").read_text()


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path, no_ray):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(MATRIX)
    result = qconvert("run", recipe, "-o", tmp_path / "run", "--executor", "ray", env=no_ray)
    assert result.rc == 2, result.stderr
    assert result.stderr.strip() == "qconvert: error: --executor ray: Ray is not installed (install it with: pip install 'qconvert[ray]')"
    assert not (tmp_path / "run").exists()
    result = qconvert("run", recipe, "-o", tmp_path / "run", "--ray-address", "auto")
    assert result.rc == 2 and "--ray-address: only with --executor ray" in result.stderr


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Ray nodes on this machine, each `ray start --block` in a process group of its own."""

    def __init__(self) -> None:
        self.base = short_temp_dir("qcc")
        self.nodes: dict[str, subprocess.Popen] = {}
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"

    def start(self, label: str, head: bool = False, wrap: tuple[str, ...] = ()) -> None:
        dash, agent, agent_grpc, env_agent, metrics, manager, objects = _free_ports(7)
        command = [
            str(Path(sys.executable).with_name("ray")), "start", "--block", "--num-cpus=1", f"--resources={json.dumps({label: 1})}",
            f"--temp-dir={self.base / label}", "--object-store-memory=80000000", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics}", f"--node-manager-port={manager}", f"--object-manager-port={objects}",
        ]
        if head:
            command += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={dash}"]
        else:
            command += [f"--address={self.address}"]
        log = self.base / f"{label}.log"
        env = {**os.environ, **RAY_ENV, ENV_TAG: str(self.base)}
        with open(log, "w") as out:
            self.nodes[label] = subprocess.Popen([*wrap, *command], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started = wait_for(lambda: "Ray runtime started" in log.read_text() or self.nodes[label].poll() is not None, 90, step=0.2)
        assert started and self.nodes[label].poll() is None, f"ray start of {label} failed:\n{log.read_text()[-3000:]}"

    def stop(self, label: str) -> None:
        proc = self.nodes.pop(label)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def close(self) -> None:
        for label in list(self.nodes):
            self.stop(label)
        end_tagged(str(self.base))  # workers and agents outside the groups, if any
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    try:
        cluster.start("qc_head", head=True)
        cluster.start("qc_second")
        yield cluster
    finally:
        cluster.close()
    assert not tagged_pids(str(cluster.base))


@needs_ray
def test_two_nodes_share_the_work(cluster, local_run, tmp_path):
    """Both GGUF types (and then their evaluations) are ready at once: one lands on each node."""
    run_dir = tmp_path / "run"
    quantized = {"tiny/gguf-q4_0", "tiny+k/gguf-q4_k_m", "tiny/eval-gguf-q4_0", "tiny+k/eval-gguf-q4_k_m"}
    seed(local_run, run_dir, quantized)
    result = qconvert("run", local_run.parent / "matrix.toml", "-o", run_dir, "--executor", "ray", "--ray-address", cluster.address)
    assert result.rc == 0, result.stdout[-3000:] + result.stderr
    assert {n for n, a in actions(result.stdout).items() if a == "ran"} == quantized
    nodes = {s["stage"]: s["node"] for s in report(run_dir)["stages"] if s["stage"] in quantized}
    assert any("[qc_head]" in n for n in nodes.values()) and any("[qc_second]" in n for n in nodes.values()), nodes
    assert hashes(run_dir) == hashes(local_run)
    assert measured(run_dir) == measured(local_run)


@needs_ray
def test_worker_killed_mid_stage_is_retried(cluster, local_run, tmp_path):
    run_dir = tmp_path / "run"
    stage = "tiny/gptq-w4-g64"
    seed(local_run, run_dir, {stage, "tiny/eval-gptq-w4-g64"})
    driver = subprocess.Popen(
        [sys.executable, "-m", "qconvert", "run", str(local_run.parent / "matrix.toml"), "-o", str(run_dir), "--executor", "ray", "--ray-address", cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **RAY_ENV},
    )
    try:
        attempts = run_dir / "stages" / "tiny"
        assert wait_for(lambda: gptq_workers(str(cluster.base)) or driver.poll() is not None, 120), "the GPTQ stage did not start"
        assert driver.poll() is None, "the run ended before its GPTQ stage could be killed"
        for pid in gptq_workers(str(cluster.base)):  # held mid-stage, so that it cannot finish before the kill lands
            os.kill(pid, signal.SIGSTOP)
        first = json.loads(next(attempts.glob(".partial-gptq-*.attempts")).read_text())
        assert len(first) == 1
        os.kill(first[0]["pid"], signal.SIGKILL)  # the Ray worker running the stage; the stage's own worker dies with it
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stdout[-3000:] + stderr
    record = next(s for s in report(run_dir)["stages"] if s["stage"] == stage)
    assert record["attempts"] == 2, record
    assert f"{stage}: done in" in stdout and "attempt 2" in stdout
    assert f"| {stage} | gptq | {record['node']} | 2 |" in (run_dir / "report.md").read_text()
    assert hashes(run_dir) == hashes(local_run) and not list(run_dir.glob("stages/*/.partial-*"))


@needs_ray
def test_driver_killed_mid_run_resumes_from_finished_stages(local_run, tmp_path):
    """On the CLI's own Ray instance, which dies with the driver."""
    run_dir = tmp_path / "run"
    left = {"tiny+k/gguf-q4_k_m", "tiny+k/eval-gguf-q4_k_m", "tiny/gptq-w4-g64", "tiny/eval-gptq-w4-g64"}
    seed(local_run, run_dir, left)
    temp = short_temp_dir("qcd")
    env = {**os.environ, **RAY_ENV, "RAY_TMPDIR": str(temp), ENV_TAG: str(temp)}
    command = [sys.executable, "-m", "qconvert", "run", str(local_run.parent / "matrix.toml"), "-o", str(run_dir), "--executor", "ray"]
    try:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        assert wait_for(lambda: gptq_workers(str(temp)) or driver.poll() is not None, 120)
        assert driver.poll() is None, "the run ended before it could be killed"
        for pid in gptq_workers(str(temp)):  # held mid-stage, so that it cannot finish before the kill lands
            os.kill(pid, signal.SIGSTOP)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        # Its processes die with it (Ray's fate sharing; the stage's worker with its Ray worker), but
        # for Ray's agents, which notice a minute or so later that their raylet is gone.
        agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
        assert wait_for(lambda: all(c.startswith(agents) for c in tagged(str(temp)).values()), 30), f"outlived the killed driver: {tagged(str(temp))}"
        end_tagged(str(temp))
        finished = {json.loads(p.read_text())["name"] for p in run_dir.rglob("stage.json")}
        assert "tiny/gptq-w4-g64" not in finished
        result = qconvert("run", local_run.parent / "matrix.toml", "-o", run_dir, "--executor", "ray", env={"RAY_TMPDIR": str(temp), ENV_TAG: str(temp)})
        assert result.rc == 0, result.stdout[-3000:] + result.stderr
        assert wait_for(lambda: not tagged_pids(str(temp)), 30)
    finally:
        end_tagged(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
    ran = {n for n, a in actions(result.stdout).items() if a == "ran"}
    assert ran == left - finished and "tiny/gptq-w4-g64" in ran
    assert hashes(run_dir) == hashes(local_run) and measured(run_dir) == measured(local_run)
    assert not list(run_dir.glob("stages/*/.partial-*"))


@needs_ray
def test_ctrl_c_on_the_driver_cancels_the_stages_in_flight(local_run, tmp_path):
    """SIGINT to the driver in the middle of a stage: exit 130, the stage's task cancelled (its
    worker gone, its partial folder removed), the finished stages kept, no report."""
    run_dir = tmp_path / "run"
    left = {"tiny/gptq-w4-g64", "tiny/eval-gptq-w4-g64"}
    seed(local_run, run_dir, left)
    temp = short_temp_dir("qcc")
    env = {**os.environ, **RAY_ENV, "RAY_TMPDIR": str(temp), ENV_TAG: str(temp)}
    command = [sys.executable, "-m", "qconvert", "run", str(local_run.parent / "matrix.toml"), "-o", str(run_dir), "--executor", "ray"]
    try:
        # a terminal's SIGINT disposition, whatever started the tests (a background job ignores it)
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert wait_for(lambda: list(run_dir.glob("stages/tiny/.partial-gptq-*/out/*")) or driver.poll() is not None, 120)
        assert driver.poll() is None, "the run ended before it could be interrupted"
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
        assert driver.returncode == 130, stderr[-3000:]
        agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
        assert wait_for(lambda: all(c.startswith(agents) for c in tagged(str(temp)).values()), 30), f"outlived the interrupted driver: {tagged(str(temp))}"
    finally:
        end_tagged(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
    assert not list(run_dir.glob("stages/*/.partial-*")) and not (run_dir / "report.json").exists()
    finished = {json.loads(p.read_text())["name"] for p in run_dir.rglob("stage.json")}
    assert finished and "tiny/gptq-w4-g64" not in finished


def _unshare() -> tuple[str, ...] | None:
    """A command prefix that runs in a mount namespace of its own, or None where this machine has none."""
    prefix = ("unshare", "--mount", "--propagation", "private") if os.geteuid() == 0 else ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private")
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return None
    return prefix if ok else None


@needs_ray
def test_node_that_cannot_see_run_dir_fails_the_probe(cluster, tmp_path):
    """A third node whose RUN_DIR parent is an empty tmpfs of its own, as a node without the NFS
    mount: the run stops before any stage with one error naming that node. (Last in this module:
    Ray notices a stopped node only after a while, and the cluster goes after this test.)"""
    prefix = _unshare()
    if prefix is None:
        pytest.skip("no mount namespaces here (unshare), to give a node its own view of RUN_DIR")
    blind = tmp_path / "shared"
    blind.mkdir()
    cluster.start("qc_blind", wrap=(*prefix, "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(blind)))
    try:
        recipe = tmp_path / "recipe.toml"
        recipe.write_text(MATRIX)
        result = qconvert("run", recipe, "-o", blind / "run", "--executor", "ray", "--ray-address", cluster.address)
    finally:
        cluster.stop("qc_blind")
    assert result.rc == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"qconvert: error: {blind / 'run'}: node ") and "[qc_blind] cannot read .probe-" in error, result.stderr
    assert "No such file or directory" in error and "every node sees at the same path" in error
    assert "qc_head" not in error and "qc_second" not in error
    assert sorted(p.name for p in (blind / "run").iterdir()) == [".lock"]  # no stage started
