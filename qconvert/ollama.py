"""An Ollama Modelfile for a GGUF converted from a Hugging Face model folder.

    FROM ./model.gguf                  the GGUF, relative to the Modelfile (which sits beside it)
    TEMPLATE \"\"\"...\"\"\"               the model's chat template in Ollama's Go text/template form
    SYSTEM \"\"\"...\"\"\"                 the default system prompt the chat template injects, if any
    PARAMETER stop "<|im_end|>"        the end of a turn, and the model's end-of-sequence tokens
    PARAMETER temperature 0.7          sampling defaults from generation_config.json

Only ChatML chat templates are translated (`<|im_start|>ROLE\\n...<|im_end|>\\n`, as Qwen2, Qwen2.5
and Qwen3 use). The Jinja template is not parsed: it is rendered, as transformers renders it, on a
set of probe conversations, and each render must be exactly what the translated template gives for
the same conversation in Ollama. That finds, and checks, the three things that vary between these
models: a default system prompt (Qwen2, Qwen2.5), an empty `<think>` block opening a final
assistant message (Qwen3) and one after the generation prompt when thinking is turned off (Qwen3).

How Ollama (0.3 and later) runs a template that names .Messages: the Modelfile's SYSTEM becomes a
system message in front of the conversation when the conversation does not start with one (so the
default system prompt is carried as SYSTEM, as Ollama's own qwen2.5 model does); consecutive
messages of one role are merged; .System joins the contents of the system messages, which stay in
.Messages too. The translated template renders the system messages from .Messages, where they
stand, as the Hugging Face templates do. A conversation that ends with an assistant message is a
prefill in Ollama: that message is left open, with no <|im_end|>, for the model to continue (as
transformers' `continue_final_message=True`). Tools and function calling are not translated: tool
messages render as plain ChatML turns and tool calls are dropped, so Ollama does not offer the model
for tool use.
"""

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qconvert.errors import QConvertError
from qconvert.hf.tokenizer import read_chat_template
from qconvert.outputs import atomic_output, check_output_path

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_EMPTY = "<think>\n\n</think>\n\n"

# generation_config.json key → Ollama PARAMETER, for the sampling defaults carried over.
SAMPLING_PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p"}
# Applies to greedy decoding too, so it is carried even with do_sample false.
PENALTY_PARAMETERS = {"repetition_penalty": "repeat_penalty"}
INTEGER_PARAMETERS = {"top_k"}


@dataclass(frozen=True)
class ChatMLDialect:
    """What a ChatML chat template adds to plain `<|im_start|>ROLE\\nCONTENT<|im_end|>\\n` turns."""

    default_system: str | None = None  # a system turn put first when the conversation has none
    think_prefill: bool = False  # a final assistant message after a user turn opens with <think>\n…\n</think>\n\n
    no_think_prompt: bool = False  # enable_thinking=False puts an empty think block after the generation prompt


def default_modelfile_path(gguf_path: Path) -> Path:
    """`model-q4_k_m.gguf` → `model-q4_k_m.Modelfile` beside it, so several GGUFs can share a folder."""
    return gguf_path.with_name(gguf_path.stem + ".Modelfile")


def write_modelfile(model_dir: Path, gguf_path: Path, out: Path | None = None, force: bool = False) -> Path:
    """Write an Ollama Modelfile for `gguf_path`, converted from the Hugging Face folder `model_dir`,
    and return its path (`out`, by default `default_modelfile_path(gguf_path)`).

    Raises QConvertError when the model's chat template is not a ChatML one it can translate (a
    model without a chat template gets a Modelfile without TEMPLATE: Ollama then sends prompts
    verbatim, as for a base model), when `out` exists and `force` is not set, or on unreadable input.
    """
    model_dir, gguf_path = Path(model_dir), Path(gguf_path)
    out = Path(out) if out is not None else default_modelfile_path(gguf_path)
    if not model_dir.is_dir():
        raise QConvertError("not a model directory", model_dir, "give the Hugging Face folder the GGUF was converted from")
    if not gguf_path.is_file():
        raise QConvertError("GGUF file not found", gguf_path, "convert the model first: qconvert gguf")
    check_output_path(out, force)
    text = modelfile_text(model_dir, gguf_path, out)
    with atomic_output(out, force) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return out


def modelfile_text(model_dir: Path, gguf_path: Path, out: Path) -> str:
    """The Modelfile `write_modelfile` writes to `out`."""
    tok_config_path = model_dir / "tokenizer_config.json"
    tok_config = _load_json(tok_config_path) if tok_config_path.is_file() else {}
    gen_config_path = model_dir / "generation_config.json"
    gen_config = _load_json(gen_config_path) if gen_config_path.is_file() else {}
    config_path = model_dir / "config.json"
    config = _load_json(config_path) if config_path.is_file() else {}

    template = read_chat_template(model_dir, tok_config)
    template_where = model_dir / "chat_template.jinja" if (model_dir / "chat_template.jinja").is_file() else tok_config_path

    lines = [
        f"# Ollama Modelfile written by qconvert from {_comment_safe(model_dir.name)}.",
        f"# Create the model with: ollama create NAME -f {_comment_safe(out.name)}",
        f"FROM {_from_path(gguf_path, out)}",
        "",
    ]
    stops: list[str] = []
    if template is None:
        lines += ["# The model has no chat template: Ollama sends prompts to it verbatim.", ""]
    else:
        dialect = detect_chatml(template, template_where, _special_tokens(tok_config))
        lines += [
            "# The chat template, translated from the model's ChatML Jinja template; tools and function",
            "# calling are not translated.",
            f"TEMPLATE {_triple_quoted(go_template(dialect), 'TEMPLATE', template_where)}",
            "",
        ]
        if dialect.default_system is not None:
            lines += [
                "# The default system prompt of the chat template, used when a conversation has none.",
                f"SYSTEM {_triple_quoted(dialect.default_system, 'default system prompt', template_where)}",
                "",
            ]
        stops.append(IM_END)
    for token in eos_tokens(model_dir, tok_config, gen_config, config):
        if token not in stops:
            stops.append(token)
    lines += [f"PARAMETER stop {_quoted(s, gen_config_path)}" for s in stops]
    lines += _sampling_lines(gen_config, gen_config_path)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- the Go template -------------------------------------------------------------------------


def go_template(dialect: ChatMLDialect) -> str:
    """The Ollama TEMPLATE for a ChatML model. The default system prompt is not in it: it goes to
    the Modelfile's SYSTEM, which Ollama puts in front of a conversation that has no system turn."""
    # $seenUser: a user turn came before (Qwen3 thinks only in an answer to a user turn).
    head = '{{- $seenUser := false }}\n' if dialect.think_prefill else ""
    think_open = (
        '{{ if and $last (eq .Role "assistant") $seenUser }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}'
        if dialect.think_prefill
        else ""
    )
    seen = '{{- if eq .Role "user" }}{{ $seenUser = true }}{{ end }}\n' if dialect.think_prefill else ""
    no_think = "{{ if and $.IsThinkSet (not $.Think) }}" + THINK_EMPTY + "{{ end }}" if dialect.no_think_prompt else ""
    return (
        head
        + "{{- range $i, $_ := .Messages }}\n"
        + "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
        + IM_START + "{{ .Role }}\n"
        + think_open + "{{ .Content }}\n"
        # A final assistant message is a prefill: left open for the model to continue.
        + '{{- if not (and $last (eq .Role "assistant")) }}' + IM_END + "\n{{ end }}\n"
        + seen
        + '{{- if and $last (ne .Role "assistant") }}' + IM_START + "assistant\n" + no_think + "{{ end }}\n"
        + "{{- end }}"
    )


# --- reading the Jinja template ----------------------------------------------------------------


def chatml_render(
    dialect: ChatMLDialect,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    enable_thinking: bool | None = None,
) -> str:
    """What a chat template of `dialect` renders for `messages` (transformers' add_generation_prompt
    semantics: a final assistant turn is closed). The translated Go template renders the same in
    Ollama, except that it leaves a final assistant turn open (Ollama's prefill)."""
    msgs = list(messages)
    if dialect.default_system is not None and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": dialect.default_system})
    parts = []
    seen_user = False
    for i, m in enumerate(msgs):
        body = m["content"]
        if dialect.think_prefill and i == len(msgs) - 1 and m["role"] == "assistant" and seen_user:
            body = f"<think>\n{m.get('reasoning_content') or ''}\n</think>\n\n{body}"
        parts.append(f"{IM_START}{m['role']}\n{body}{IM_END}\n")
        seen_user = seen_user or m["role"] == "user"
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
        if dialect.no_think_prompt and enable_thinking is False:
            parts.append(THINK_EMPTY)
    return "".join(parts)


def _probe_messages() -> dict[str, list[dict[str, Any]]]:
    """Probe conversations. Contents with surrounding spaces and line breaks catch a template that
    trims; a final assistant content starts with neither (Qwen3 strips a leading line break there)."""
    s, u1, a1, u2 = "qconvert probe: system", " qconvert probe: user 1\n", "qconvert probe:\nassistant 1 ", "\nqconvert probe: user 2"
    return {
        "user": [{"role": "user", "content": u1}],
        "system-user": [{"role": "system", "content": s}, {"role": "user", "content": u1}],
        "user-assistant-user": [
            {"role": "user", "content": u1},
            {"role": "assistant", "content": a1, "reasoning_content": "qconvert probe: dropped"},
            {"role": "user", "content": u2},
        ],
        "system-user-assistant-user": [
            {"role": "system", "content": s},
            {"role": "user", "content": u1},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": u2},
        ],
        "user-system-user": [
            {"role": "user", "content": u1},
            {"role": "system", "content": s},
            {"role": "user", "content": u2},
        ],
        "user-assistant": [{"role": "user", "content": u1}, {"role": "assistant", "content": a1}],
        "user-assistant-thinking": [
            {"role": "user", "content": u1},
            {"role": "assistant", "content": a1, "reasoning_content": "qconvert probe: reasoning"},
        ],
    }


def _jinja_renderer(template: str, where: object, special_tokens: dict[str, str]):
    """Render `template` as transformers' apply_chat_template does (same Jinja settings)."""
    try:
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 comes with transformers' torch
        raise QConvertError("reading a chat template needs jinja2", where, "pip install jinja2") from exc

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        from datetime import datetime

        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        compiled = env.from_string(template)
    except jinja2.TemplateError as exc:
        raise QConvertError(f"chat template does not parse as Jinja: {exc}", where) from exc

    def render(messages, add_generation_prompt, **kwargs) -> str:
        try:
            return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **special_tokens, **kwargs)
        except Exception as exc:  # a template's raise_exception, or any error of its own
            raise _untranslatable(where, f"rendering it failed: {exc}") from exc

    return render


def detect_chatml(template: str, where: object, special_tokens: dict[str, str] | None = None) -> ChatMLDialect:
    """The ChatML dialect of the Jinja chat `template`, found and checked by rendering it on probe
    conversations; QConvertError if it is not one the Go template reproduces."""
    if IM_START not in template or IM_END not in template:
        raise _untranslatable(where, f"it has no {IM_START} … {IM_END} turns")
    render = _jinja_renderer(template, where, special_tokens or {})
    probes = _probe_messages()

    plain = ChatMLDialect()
    user_only = render(probes["user"], False)
    expected = chatml_render(plain, probes["user"], False)
    default_system = None
    if user_only != expected:
        m = re.fullmatch(re.escape(IM_START) + r"system\n(.*)" + re.escape(IM_END) + r"\n", user_only[: -len(expected)], re.S)
        if not user_only.endswith(expected) or m is None or IM_START in m.group(1) or IM_END in m.group(1):
            raise _untranslatable(where, _mismatch("a single user turn", expected, user_only))
        default_system = m.group(1)

    prefill = render(probes["user-assistant"], False)
    think_prefill = prefill != chatml_render(ChatMLDialect(default_system), probes["user-assistant"], False)

    no_think = render(probes["user"], True, enable_thinking=False)
    no_think_prompt = no_think != chatml_render(ChatMLDialect(default_system), probes["user"], True)

    dialect = ChatMLDialect(default_system, think_prefill, no_think_prompt)
    checks = [(name, msgs, True, None) for name, msgs in probes.items() if msgs[-1]["role"] != "assistant"]
    checks += [(name, msgs, False, None) for name, msgs in probes.items()]
    checks += [("user", probes["user"], True, flag) for flag in (True, False)]
    for name, msgs, gen, thinking in checks:
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        got = render(msgs, gen, **kwargs)
        want = chatml_render(dialect, msgs, gen, thinking)
        if got != want:
            what = f"the conversation {name}" + (" with the generation prompt" if gen else "")
            if thinking is not None:
                what += f" and enable_thinking={thinking}"
            raise _untranslatable(where, _mismatch(what, want, got))
    return dialect


def _mismatch(what: str, want: str, got: str) -> str:
    return f"for {what} it renders {got!r}, not ChatML's {want!r}"


def _untranslatable(where: object, detail: str) -> QConvertError:
    return QConvertError(
        f"chat template is not a ChatML one (<|im_start|>ROLE … <|im_end|>, as Qwen2/2.5/3 use) that qconvert can "
        f"translate to Ollama's Go template: {detail}",
        where,
        "write the Modelfile's TEMPLATE by hand, as Ollama's docs/template.md shows, or keep only its FROM line: "
        "Ollama then picks a template that looks like the GGUF's chat template",
    )


# --- tokens and parameters ---------------------------------------------------------------------


def _special_tokens(tok_config: dict[str, Any]) -> dict[str, str]:
    """bos_token, eos_token, … of tokenizer_config.json, which transformers passes to the template."""
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        content = _token_content(tok_config.get(key))
        if content is not None:
            out[key] = content
    return out


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def eos_tokens(model_dir: Path, tok_config: dict[str, Any], gen_config: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The end-of-sequence tokens as strings: generation_config.json's eos_token_id (one id or a
    list; config.json's when it has none), mapped through tokenizer.json, and tokenizer_config's
    eos_token. Ids the tokenizer does not know are left out."""
    ids = gen_config.get("eos_token_id")
    if ids is None:
        ids = config.get("eos_token_id")
    ids = [ids] if isinstance(ids, int) and not isinstance(ids, bool) else ids if isinstance(ids, list) else []
    by_id = _tokens_by_id(model_dir) if ids else {}
    tokens = [by_id[i] for i in ids if isinstance(i, int) and i in by_id]
    eos = _token_content(tok_config.get("eos_token"))
    if eos:
        tokens.append(eos)
    return list(dict.fromkeys(tokens))


def _tokens_by_id(model_dir: Path) -> dict[int, str]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return {}
    tok = _load_json(path)
    by_id = {i: t for t, i in ((tok.get("model") or {}).get("vocab") or {}).items() if isinstance(i, int)}
    for added in tok.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("id"), int) and isinstance(added.get("content"), str):
            by_id[added["id"]] = added["content"]
    return by_id


def _sampling_lines(gen_config: dict[str, Any], where: Path) -> list[str]:
    """PARAMETER lines for generation_config.json's sampling defaults. With do_sample false the
    model card asks for greedy decoding, which Ollama has no switch for: the sampling values are
    then left out (Ollama's defaults apply) and only the repetition penalty is carried."""
    greedy = gen_config.get("do_sample") is False
    keys = dict(PENALTY_PARAMETERS) if greedy else {**SAMPLING_PARAMETERS, **PENALTY_PARAMETERS}
    lines = []
    if greedy and any(gen_config.get(k) is not None for k in SAMPLING_PARAMETERS):
        lines.append("# generation_config.json has do_sample false: its sampling values are left to Ollama's defaults.")
    for hf_key, ollama_key in keys.items():
        value = gen_config.get(hf_key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QConvertError(f"{hf_key} is {value!r}, not a number", where, "fix or remove it")
        if ollama_key in INTEGER_PARAMETERS:
            if value != int(value):
                raise QConvertError(f"{hf_key} is {value!r}, not a whole number", where, "fix or remove it")
            value = int(value)
        lines.append(f"PARAMETER {ollama_key} {value!r}")
    return lines


# --- Modelfile syntax --------------------------------------------------------------------------


def _printable(text: str) -> bool:
    """Ollama's Modelfile parser keeps only printable runes (Go's unicode.IsPrint) and whitespace."""
    return all(c in " \t\n" or unicodedata.category(c)[0] in "LMNPS" for c in text)


def _triple_quoted(text: str, what: str, where: object) -> str:
    if '"""' in text or not _printable(text):
        raise QConvertError(
            f"the {what} cannot be written in a Modelfile: it holds \"\"\" or characters Ollama's parser drops",
            where,
            "write the Modelfile by hand",
        )
    return f'"""{text}"""'


def _quoted(text: str, where: object) -> str:
    if '"' in text or "\n" in text or "\r" in text or not _printable(text):
        raise QConvertError(f"stop token {text!r} cannot be written in a Modelfile", where, "write the Modelfile by hand")
    return f'"{text}"'


def _from_path(gguf_path: Path, out: Path) -> str:
    """The GGUF's path relative to the Modelfile's folder (Ollama resolves a relative FROM there)."""
    rel = os.path.relpath(gguf_path.absolute(), out.absolute().parent)
    rel = rel if rel.startswith("..") else "./" + rel
    if rel != rel.strip() or rel.startswith('"') or "\n" in rel or "\r" in rel or not _printable(rel):
        raise QConvertError("the GGUF file name cannot be written in a Modelfile's FROM", gguf_path, "rename the file")
    return rel


def _comment_safe(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QConvertError(f"unreadable {path.name}: {exc}", path) from exc
    if not isinstance(data, dict):
        raise QConvertError(f"{path.name} is not a JSON object", path)
    return data
