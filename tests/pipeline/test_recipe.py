"""Bad recipes: each mistake is one error line naming the key, exit code 2, and nothing started
(no run folder made)."""

import json
import shutil

import pytest

from tests.conftest import FIXTURE, run_cli

GOOD = f"""
[model]
path = "{FIXTURE}"

[gguf]
types = ["q4_0"]
"""

MATRIX = f"""
[gguf]
types = ["q4_0"]

[[models]]
path = "{FIXTURE}"

[[models]]
path = "{FIXTURE}"
variant = "g32"
"""

MISTAKES = [
    # (what is appended to or replaces the good recipe, what the error line must say)
    ('[gguf]\ntypes = ["q4_0"]\n', "missing the [model] table"),
    (GOOD + '[gptq]\ngrup_size = 64\n', "gptq[0]: unknown key 'grup_size' (did you mean 'group_size'?)"),
    (GOOD + '[evaluation]\nctx = 128\n', "unknown key 'evaluation' (did you mean 'eval'?)"),
    (GOOD + '[gptq]\nbits = "4"\n', "gptq[0].bits: must be an integer, not string '4'"),
    (GOOD + '[eval]\nchunks = 2.5\n', "eval.chunks: must be an integer"),
    (GOOD + '[awq]\nzero_point = "yes"\n', "awq.zero_point: must be true or false"),
    (GOOD.replace('["q4_0"]', '["q4_z"]'), "gguf.types[0]: unknown type 'q4_z'"),
    (GOOD.replace('["q4_0"]', '"q4_0"'), "gguf.types: must be a list of strings"),
    (GOOD + '[gptq]\nbits = 5\n', "gptq[0].bits: unsupported bits 5"),
    (GOOD + '[[gptq]]\nbits = 4\n[[gptq]]\ngroup_size = 100\n', "gptq[1].group_size: unsupported group size 100"),
    (GOOD + '[awq]\nbits = 3\n', "awq.bits: AWQ GEMM checkpoints hold 4-bit weights"),
    (GOOD.replace(str(FIXTURE), "/no/such/model"), "model.path: no Hugging Face model folder"),
    (GOOD + '[eval]\ntext = "missing.txt"\n', "eval.text: no such file or folder"),
    (GOOD + '[calibration]\nmode = "windows"\n', "calibration.mode: unknown mode 'windows'"),
    (GOOD + '[run]\ndevice = "tpu"\n', "run.device: unknown device 'tpu'"),
    (GOOD.replace('["q4_0"]', '["q4_0"]\nimatrix = "yes"'), 'gguf.imatrix: must be true, false or "both"'),
    (GOOD + "[gptq\n", "not valid TOML"),
    (GOOD.replace('["q4_0"]', '["q4_0", "Q4_0"]'), "gguf.types[1]: repeats gguf.types[0]"),
    (GOOD + '[[gptq]]\nbits = 4\n[[gptq]]\ngroup_size = 128\n', "gptq[1]: repeats gptq[0]"),
    # release matrices: [[models]], each entry with its own overrides
    (GOOD + f'[[models]]\npath = "{FIXTURE}"\n', "has both [model] and [[models]]"),
    (MATRIX + 'pth = "x"\n', "models[1]: unknown key 'pth' (did you mean 'path'?)"),
    (MATRIX.replace('variant = "g32"\n', ""), "models[1]: repeats models[0] ('tiny-qwen2')"),
    (MATRIX + "gptq = [{ bits = 5 }]\n", "models[1].gptq[0].bits: unsupported bits 5"),
    (MATRIX + 'gguf = { types = ["q4_z"] }\n', "models[1].gguf.types[0]: unknown type 'q4_z'"),
    (MATRIX + "[models.eval]\nctx = 64\n", "models[1].eval: evaluation is the same for every model"),
    (MATRIX.replace('variant = "g32"', 'name = "a/b"'), "models[1].name: 'a/b' cannot name a folder"),
    (MATRIX.replace(str(FIXTURE), "/no/such/model", 1), "models[0].path: no Hugging Face model folder"),
    (GOOD.replace("[model]", "[model]\nvariant = \"x\""), "model.variant: a variant only tells apart entries of [[models]]"),
]


@pytest.mark.parametrize("text, message", MISTAKES, ids=[m for _, m in MISTAKES])
def test_bad_recipe_is_one_clear_error(tmp_path, text, message):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text)
    run_dir = tmp_path / "run"
    result = run_cli("run", recipe, "-o", run_dir)
    assert result.rc == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(recipe) in lines[0], result.stderr
    assert not run_dir.exists()


def test_missing_recipe_and_unknown_forced_stage(tmp_path):
    result = run_cli("run", tmp_path / "none.toml")
    assert result.rc == 2 and "no such recipe file" in result.stderr
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(GOOD)
    result = run_cli("run", recipe, "-o", tmp_path / "run", "--force", "gptq-w4")
    assert result.rc == 2 and "--force: no stage named 'gptq-w4'" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_report_of_a_folder_without_one(tmp_path):
    result = run_cli("report", tmp_path)
    assert result.rc == 2 and "no report in this folder" in result.stderr


def test_shipped_recipes_load(tmp_path):
    """The fixture's recipe loads as it is; the others need their model, and say so by key."""
    from qconvert.errors import QConvertError
    from qconvert.pipeline.plan import build_plan
    from qconvert.pipeline.recipe import load_recipe
    from tests.conftest import ROOT

    recipes = sorted((ROOT / "recipes").glob("*.toml"))
    assert len([r for r in recipes if not r.name.endswith(".gate.toml")]) >= 2
    for recipe in recipes:
        if recipe.name.endswith(".gate.toml"):
            continue
        try:
            plan = build_plan(load_recipe(recipe))
        except QConvertError as exc:
            assert "model.path: no Hugging Face model folder" in str(exc), exc
            (tmp_path / recipe.name).write_text(recipe.read_text().replace('path = "../models/', f'path = "{FIXTURE.parent}/').replace("Qwen2.5-0.5B-Instruct", FIXTURE.name))
            plan = build_plan(load_recipe(tmp_path / recipe.name))
        assert any(s.kind == "eval" for s in plan)


def test_run_folder_that_is_a_file(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(GOOD)
    (tmp_path / "run").write_text("not a folder")
    result = run_cli("run", recipe, "-o", tmp_path / "run")
    assert result.rc == 2 and "cannot use it as the run folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_one_run_at_a_time_per_folder(tmp_path):
    import fcntl

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(GOOD)
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_cli("run", recipe, "-o", tmp_path / "run")
    assert result.rc == 2 and "another `qconvert run` is using this run folder" in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]


def test_matrix_plan_shares_stages_by_key(tmp_path):
    """A variant of one model shares everything but its own settings; another model with the same
    tokenizer shares the calibration set only; one with another tokenizer shares nothing."""
    from qconvert.pipeline.plan import build_plan
    from qconvert.pipeline.recipe import load_recipe

    sibling, stranger = tmp_path / "sibling", tmp_path / "stranger"
    for folder in (sibling, stranger):
        shutil.copytree(FIXTURE, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))  # other "weights"
    tokenizer = json.loads((stranger / "tokenizer_config.json").read_text())
    (stranger / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "chat_template": "{{ messages }}"}))
    recipe = tmp_path / "matrix.toml"
    recipe.write_text(f"""
[calibration]
n_samples = 16
seqlen = 64
[gguf]
types = ["q4_0"]
imatrix = true
[[gptq]]
group_size = 64
[[models]]
path = "{FIXTURE}"
name = "tiny"
[[models]]
path = "{FIXTURE}"
name = "tiny"
variant = "g32"
gptq = [{{ group_size = 32 }}]
gguf = false
[[models]]
path = "{sibling}"
gptq = []
[[models]]
path = "{stranger}"
gptq = []
""")
    release = load_recipe(recipe)
    assert [r.label for r in release.recipes] == ["tiny", "tiny+g32", "sibling", "stranger"]
    assert release.recipes[1].gguf is None and release.recipes[1].gptq[0].group_size == 32 and release.recipes[1].calibration.n_samples == 16
    work = {s.name: s for s in build_plan(release) if s.kind != "source"}
    assert sorted(n for n in work if n.startswith("tiny+g32/")) == ["tiny+g32/eval-gptq-w4-g32", "tiny+g32/gptq-w4-g32"]
    assert work["tiny+g32/gptq-w4-g32"].inputs["calibration"] == "tiny/calibration"
    assert "sibling/calibration" not in work and work["sibling/imatrix"].inputs["calibration"] == "tiny/calibration"
    assert "sibling/gguf-f16" in work and "stranger/calibration" in work
    assert len({s.key for s in work.values()}) == len(work)


def test_gguf_gptq_adds_a_rounded_file_per_type(tmp_path):
    """`gptq = true` in [gguf]: each type, and each AWQ-scaled type, also made by `gguf --gptq` from the
    calibration set, evaluated against the f16 GGUF like the others."""
    from qconvert.pipeline.plan import build_plan
    from qconvert.pipeline.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(GOOD.replace('["q4_0"]', '["q4_0", "q8_0"]\ngptq = true') + '[awq]\npacked = false\ngguf_types = ["q4_k_m"]\n')
    release = load_recipe(recipe)
    assert release.recipes[0].needs_calibration
    work = {s.name: s for s in build_plan(release) if s.kind != "source"}
    rounded = sorted(n for n in work if n.endswith("-gptq") and work[n].kind == "gguf")
    assert rounded == ["gguf-q4_0-gptq", "gguf-q4_k_m-awq-gptq", "gguf-q8_0-gptq"]
    for name in rounded:
        assert work[name].options["gptq"] is True and work[name].inputs["calibration"] == "calibration"
        assert work[f"eval-{name}"].inputs["base"] == "gguf-f16"
    assert work["gguf-q4_k_m-awq-gptq"].inputs["model"] == "awq-scaled-q4_k_m"
    assert "gptq" not in work["gguf-q4_0"].options
