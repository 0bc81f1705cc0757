"""`qconvert run` on the fixture: the whole graph once, then what a release engineer relies on —
a finished run reruns doing nothing, a changed type reruns only its branch, --force reruns a
stage and what depends on it, kill -9 or Ctrl-C in the middle of a stage resumes to the same
report, and the report's numbers are the stages' own (re-measured here independently)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EVAL_TEXT, FIXTURE, interrupt_cli, ppl_json, run_cli, run_cli_limited

RECIPE = f"""
[model]
path = "{FIXTURE}"
name = "tiny"

[calibration]
n_samples = 16
seqlen = 128

[gguf]
types = ["q4_0"]
imatrix = "both"
ollama = true

[[gptq]]
bits = 4
group_size = 64

[eval]
text = "{EVAL_TEXT}"
ctx = 128
chunks = 4
"""
MEASURED = ("artefact", "engine", "size_mib", "bits_per_weight", "ppl", "ppl_err", "kld", "same_top_p")


def write_recipe(folder: Path, text: str = RECIPE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.toml"
    path.write_text(text)
    return path


def measured(run_dir: Path) -> list[dict]:
    return [{k: row.get(k) for k in MEASURED} for row in json.loads((run_dir / "report.json").read_text())["rows"]]


def actions(stdout: str) -> dict[str, str]:
    """stage name → what the run did with it ("running" and "done ...", or "reused")."""
    seen = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "] " in line and ": " in line:
            name, what = line.split("] ", 1)[1].split(": ", 1)
            seen[name] = "reused" if what == "reused" else "ran"
    return seen


@pytest.fixture(scope="module")
def first(tmp_path_factory, llama_tools):
    folder = tmp_path_factory.mktemp("pipeline")
    recipe = write_recipe(folder)
    result = run_cli("run", recipe, "-o", folder / "run")
    assert result.rc == 0, result.stderr
    return recipe, folder / "run", result


def copy_run(first, tmp_path: Path) -> tuple[Path, Path]:
    _, run_dir, _ = first
    shutil.copytree(run_dir, tmp_path / "run")
    return write_recipe(tmp_path), tmp_path / "run"


def test_report_has_every_artefact(first):
    _, run_dir, result = first
    rows = {r["artefact"]: r for r in measured(run_dir)}
    assert set(rows) == {"hf", "gguf-f16", "gguf-q4_0", "gguf-q4_0-imatrix", "gptq-w4-g64"}
    assert all(r["kld"] is None for name, r in rows.items() if name in ("hf", "gguf-f16"))
    for name in ("gguf-q4_0", "gguf-q4_0-imatrix", "gptq-w4-g64"):
        assert 0 < rows[name]["kld"] < 0.1 and 0.5 < rows[name]["same_top_p"] <= 1
        assert rows[name]["size_mib"] < rows["gguf-f16"]["size_mib"]
    assert 4.5 < rows["gguf-q4_0"]["bits_per_weight"] < 5.5  # q4_0 is 4.5; token_embd q4_0, output q6_k
    assert 8 < rows["gptq-w4-g64"]["bits_per_weight"] < 10  # the fp16 embedding and lm_head are 40% of this model
    assert 15 < rows["gguf-f16"]["bits_per_weight"] < 17
    assert (run_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gguf = Path(json.loads((run_dir / "report.json").read_text())["rows"][2]["path"])
    assert gguf.name == "tiny-q4_0.gguf" and f"FROM ./{gguf.name}" in gguf.with_suffix(".Modelfile").read_text()
    assert "| gguf-q4_0-imatrix | llama.cpp |" in (run_dir / "report.md").read_text()
    stages = json.loads((run_dir / "report.json").read_text())["stages"]
    assert all(s["wall_s"] > 0 and s["peak_rss_mib"] > 10 for s in stages)
    assert set(actions(result.stdout).values()) == {"ran"}


def test_finished_run_reruns_doing_nothing(first):
    recipe, run_dir, _ = first
    before = measured(run_dir)
    records = {p: p.stat().st_mtime_ns for p in run_dir.glob("stages/*/stage.json")}
    result = run_cli("run", recipe, "-o", run_dir)
    assert result.rc == 0, result.stderr
    assert set(actions(result.stdout).values()) == {"reused"}
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("stages/*/stage.json")} == records
    assert measured(run_dir) == before


def test_report_command_reprints_it(first):
    _, run_dir, _ = first
    result = run_cli("report", run_dir)
    assert result.rc == 0 and result.stdout.strip() == (run_dir / "report.md").read_text().strip()
    result = run_cli("report", run_dir, "--json")
    assert json.loads(result.stdout) == json.loads((run_dir / "report.json").read_text())


def test_report_numbers_are_the_stages_own(first):
    """Re-measured with `qconvert ppl` on the artefacts the report points at."""
    _, run_dir, _ = first
    rows = {r["artefact"]: r for r in json.loads((run_dir / "report.json").read_text())["rows"]}
    options = ("--text", EVAL_TEXT, "--ctx", "128", "--chunks", "4")
    gguf = ppl_json(rows["gguf-q4_0-imatrix"]["path"], *options, "--kld-base", rows["gguf-f16"]["path"])
    assert (gguf["ppl"], gguf["kld_mean"], gguf["same_top_p"]) == (rows["gguf-q4_0-imatrix"]["ppl"], rows["gguf-q4_0-imatrix"]["kld"], rows["gguf-q4_0-imatrix"]["same_top_p"])
    hf = ppl_json(rows["gptq-w4-g64"]["path"], *options, "--kld-base", FIXTURE)
    assert hf["ppl"] == pytest.approx(rows["gptq-w4-g64"]["ppl"], rel=1e-6) and hf["kld_mean"] == pytest.approx(rows["gptq-w4-g64"]["kld"], rel=1e-4)
    assert Path(rows["gguf-q4_0"]["path"]).stat().st_size == pytest.approx(rows["gguf-q4_0"]["size_mib"] * 2**20, abs=2**20 / 1000)


def test_changed_type_reruns_only_its_branch(first, tmp_path):
    recipe, run_dir = copy_run(first, tmp_path)
    recipe.write_text(RECIPE.replace('["q4_0"]', '["q5_0"]'))
    dry = run_cli("run", recipe, "-o", run_dir, "--dry-run")
    assert dry.rc == 0, dry.stderr
    planned = {line.split()[1]: line.split()[0] for line in dry.stdout.splitlines()[:-1]}
    ran = {name for name, action in planned.items() if action == "run"}
    assert ran == {"gguf-q5_0", "gguf-q5_0-imatrix", "eval-gguf-q5_0", "eval-gguf-q5_0-imatrix"}
    result = run_cli("run", recipe, "-o", run_dir)
    assert result.rc == 0, result.stderr
    assert {n for n, a in actions(result.stdout).items() if a == "ran"} == ran
    assert [r["artefact"] for r in measured(run_dir)] == ["hf", "gguf-f16", "gguf-q5_0", "gguf-q5_0-imatrix", "gptq-w4-g64"]


def test_force_reruns_a_stage_and_what_depends_on_it(first, tmp_path):
    recipe, run_dir = copy_run(first, tmp_path)
    result = run_cli("run", recipe, "-o", run_dir, "--force", "imatrix")
    assert result.rc == 0, result.stderr
    assert {n for n, a in actions(result.stdout).items() if a == "ran"} == {"imatrix", "gguf-q4_0-imatrix", "eval-gguf-q4_0-imatrix"}
    assert measured(run_dir) == measured(first[1])


def test_stage_without_its_record_is_not_finished(first, tmp_path):
    recipe, run_dir = copy_run(first, tmp_path)
    (next(run_dir.glob("stages/gptq-w4-g64-*")) / "stage.json").unlink()
    result = run_cli("run", recipe, "-o", run_dir)
    assert result.rc == 0, result.stderr
    assert {n for n, a in actions(result.stdout).items() if a == "ran"} == {"gptq-w4-g64", "eval-gptq-w4-g64"}


def _new_stage(run_dir: Path, seen: list[str]) -> str | None:
    """A stage in progress that is not in `seen`: its partial folder RUN_DIR/stages/.partial-NAME-KEY-ATTEMPT exists."""
    for partial in run_dir.glob("stages/.partial-*"):
        if partial.suffix == ".attempts":  # the stage's attempt record, beside its partial folder
            continue
        name = partial.name.removeprefix(".partial-").rsplit("-", 2)[0]
        if name not in seen:
            return name
    return None


def test_kill_9_at_each_stage_in_turn_resumes_to_the_same_report(first, tmp_path):
    """kill -9 of the runner in every stage of the recipe, one after the other, each rerun resuming
    the last: the finished stages stay finished, nothing half-written is taken for an artefact, and
    the final report is the uninterrupted run's. While one run holds the folder, a second is refused."""
    recipe = write_recipe(tmp_path)
    run_dir = tmp_path / "run"
    killed: list[str] = []

    def wait_for_stage(runner: subprocess.Popen, seen: list[str]) -> str | None:
        deadline = time.time() + 300
        while runner.poll() is None and time.time() < deadline:
            if stage := _new_stage(run_dir, seen):
                return stage
            time.sleep(0.01)
        return None

    while True:
        runner = subprocess.Popen([sys.executable, "-m", "qconvert", "run", str(recipe), "-o", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not killed and wait_for_stage(runner, []):
            second = run_cli("run", recipe, "-o", run_dir)
            assert second.rc == 2 and "another `qconvert run` is using this run folder" in second.stderr, second.stderr
        stage = wait_for_stage(runner, killed)
        if stage is None:
            break
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        time.sleep(0.5)  # the worker dies with its runner (PR_SET_PDEATHSIG) and renames nothing
        done = [d.name.rsplit("-", 1)[0] for d in run_dir.glob("stages/[!.]*")]
        assert stage not in done and all((run_dir / "stages" / d / "stage.json").is_file() for d in os.listdir(run_dir / "stages") if d[0] != "."), stage
        killed.append(stage)
    assert runner.wait() == 0
    assert set(killed) == set(actions(first[2].stdout)), killed
    assert not list(run_dir.glob("stages/.partial-*"))
    assert measured(run_dir) == measured(first[1])


def test_disk_full_mid_run_is_one_clear_error_and_resumes_once_freed(first, tmp_path):
    """No file may pass 1 MiB: the small stages finish, the first big artefact (the f16 GGUF) fails
    as a full disk would; the run stops with one error line, no partial folder, and a rerun with
    room finishes from there to the same report."""
    recipe = write_recipe(tmp_path)
    run_dir = tmp_path / "run"
    proc = run_cli_limited("run", recipe, "-o", run_dir, file_limit=1 << 20)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("qconvert: error: ")]
    assert len(error) == 1 and "file too large" in error[0] and str(run_dir) in error[0], proc.stderr[-3000:]
    assert not list(run_dir.glob("stages/.partial-*"))
    finished = {p.parent.name.rsplit("-", 1)[0] for p in run_dir.glob("stages/*/stage.json")}
    assert "calibration" in finished and "gguf-f16" not in finished, finished
    result = run_cli("run", recipe, "-o", run_dir)
    assert result.rc == 0, result.stderr
    assert all(actions(result.stdout)[name] == "reused" for name in finished)
    assert measured(run_dir) == measured(first[1])


def test_ctrl_c_mid_stage_keeps_finished_stages_and_no_partial(tmp_path, llama_tools):
    recipe = write_recipe(tmp_path)
    run_dir = tmp_path / "run"
    rc, stderr = interrupt_cli("run", recipe, "-o", run_dir, ready=lambda: bool(list(run_dir.glob("stages/.partial-imatrix-*/out"))), settle=1.0)
    assert rc == 130, stderr
    assert not list(run_dir.glob("stages/.partial-*")) and list(run_dir.glob("stages/calibration-*/stage.json"))
    assert not list(run_dir.glob("stages/imatrix-*")) and not (run_dir / "report.json").exists()


def test_regression_gate(first, tmp_path):
    _, run_dir, _ = first
    rows = {r["artefact"]: r for r in measured(run_dir)}
    gate = tmp_path / "gate.toml"
    gate.write_text("# why the tolerances\n[tolerance]\nppl = 0.01\nkld = 0.05\n[expect.gptq-w4-g64]\nppl = 1.0\n")
    assert run_cli("report", run_dir, "--write-gate", gate).rc == 0
    text = gate.read_text()
    assert text.startswith("# why the tolerances\n[tolerance]\nppl = 0.01\nkld = 0.05\n")
    result = run_cli("report", run_dir, "--check", gate)
    assert result.rc == 0, result.stderr
    assert f"ok   gguf-q4_0 kld: {rows['gguf-q4_0']['kld']:.6g}" in result.stderr
    moved = rows["gguf-q4_0"]["kld"] * 1.06
    gate.write_text(text.replace(repr(rows["gguf-q4_0"]["kld"]), repr(moved)) + '\n[expect."gguf-q9_9"]\nppl = 5.0\n')
    result = run_cli("report", run_dir, "--check", gate)
    assert result.rc == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 2 and "gguf-q4_0 kld" in failed[0] and "-5.66%" in failed[0] and "gguf-q9_9 ppl: not measured" in failed[1]


def test_a_qwen3_recipe_runs(tmp_path, llama_tools):
    from tests.arch_models import make_random_model

    model = make_random_model("qwen3", tmp_path / "qwen3")
    recipe = write_recipe(tmp_path, RECIPE.replace(str(FIXTURE), str(model)).replace('["q4_0"]', '["q4_k_m"]').replace('"both"', "true").replace("group_size = 64", "group_size = 32"))
    result = run_cli("run", recipe, "-o", tmp_path / "run")
    assert result.rc == 0, result.stderr
    rows = {r["artefact"]: r for r in measured(tmp_path / "run")}
    assert set(rows) == {"hf", "gguf-f16", "gguf-q4_k_m-imatrix", "gptq-w4-g32"}
    assert all(0 < rows[name]["kld"] < 1 for name in ("gguf-q4_k_m-imatrix", "gptq-w4-g32"))
