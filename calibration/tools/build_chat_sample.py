#!/usr/bin/env python3
"""Build calibration/chat/sample.jsonl mechanically from human-written text.

Usage:
    tools/fetch_sources.sh /tmp/calsrc
    python3 tools/build_chat_sample.py /tmp/calsrc [-o chat/sample.jsonl]

SRC is the same folder build_calibration.py reads (one ``dpkg-deb -x`` tree
per package).  No network, standard library only.

Each record is {"messages": [...]} with roles system/user/assistant.  Every
assistant message is a human-written passage copied from the source (only
markup converted); user messages are the source's own FAQ question headings,
or fixed templates filled with a dictionary headword or a poem's title and
author; system messages are a few fixed one-line strings.  Records:

* Python 3.11 FAQ (python3.11-doc, PSF License): question heading -> answer
  section; reStructuredText roles/links/literal blocks turned into Markdown.
  Some records chain two consecutive questions into a two-turn conversation.
* The Devil's Dictionary (dict-devil, public domain): headword -> entry, only
  from letters that calibration/en/ does not contain.
* Tang and Song poems (fortunes-zh): title and author -> poem text.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_calibration as bc  # noqa: E402

FAQ_DIR = "python3.11-doc/usr/share/doc/python3.11/html/_sources/faq"
FAQ_FILES = ["general", "programming", "design", "library", "extending"]
N_FAQ_SINGLE = 32
N_FAQ_PAIRS = 6
N_DEVIL = 20
N_TANG = 10
N_SONG = 4

SYS_PY = "You are a helpful assistant that answers questions about the Python programming language."
SYS_DEVIL = "You answer with entries from Ambrose Bierce's The Devil's Dictionary (1911)."
SYS_ZH = "你是一位熟悉中国古典诗词的助手。"


# --------------------------------------------------------------------------
# reStructuredText -> Markdown (only what the FAQ uses)

ROLE_RE = re.compile(r":(?:py:)?([a-z]+):`([^`]+)`")


def _role(m: re.Match) -> str:
    role, body = m.group(1), m.group(2)
    explicit = re.match(r"^(.*?)\s*<([^>]+)>$", body, re.S)
    if role == "pep":
        return f"PEP {body}"
    if role in ("ref", "term", "doc"):
        return explicit.group(1) if explicit else body
    if explicit:
        body = explicit.group(1)
    if body.startswith("~"):
        body = body[1:].rsplit(".", 1)[-1]
    body = body.lstrip("!")
    return f"`{body}`"


def inline(text: str) -> str:
    text = ROLE_RE.sub(_role, text)
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)
    text = re.sub(r"`([^`<]+?)\s*<([^>]+)>`__?", r"[\1](\2)", text, flags=re.S)
    return text


def rst_to_md(body: str) -> str | None:
    """Convert one FAQ answer; None if it uses constructs we do not convert."""
    lines = body.split("\n")
    out: list[str] = []
    i = 0
    expect_code = False
    while i < len(lines):
        ln = lines[i]
        if re.match(r"^\.\. _[^:]+:\s*$", ln):  # label target
            i += 1
            continue
        if ln.startswith(".. "):
            return None  # directive (note, seealso, code-block, table, ...)
        if re.match(r"^[+=]{4,}", ln.strip()):
            return None  # table
        if ln.strip() and ln[:1].isspace() and (expect_code or ln.strip().startswith(">>>")):
            block = []
            doctest = ln.strip().startswith(">>>") and not expect_code
            ind = len(ln) - len(ln.lstrip())
            while i < len(lines):
                cur = lines[i]
                if not cur.strip():
                    if doctest:
                        break  # a doctest block ends at the first blank line
                elif len(cur) - len(cur.lstrip()) < ind:
                    break  # literal block ends where the indentation does
                block.append(cur)
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out.append("```")
            out.extend(textwrap.dedent("\n".join(block)).split("\n"))
            out.append("```")
            out.append("")
            expect_code = False
            continue
        if ln.rstrip().endswith("::"):
            s = ln.rstrip()
            if s.strip() == "::":
                ln = ""
            elif s.endswith(" ::"):
                ln = s[:-3]
            else:
                ln = s[:-1]
            expect_code = True
        elif ln.strip():
            expect_code = False
        out.append(ln)
        i += 1
    # Inline markup only outside the fenced code blocks.
    segs = re.split(r"(^```\n.*?^```$)", "\n".join(out), flags=re.M | re.S)
    md = "".join(seg if seg.startswith("```") else inline(seg) for seg in segs)
    if re.search(r"(^|\s):[a-z]+:`|\|[a-z]+\|", md):
        return None
    md = re.sub(r"\n{3,}", "\n\n", md).strip()
    return md


def unwrap_md(md: str) -> str:
    """Join hard-wrapped prose lines; leave code fences and lists alone."""
    out, para, in_code = [], [], False

    def flush():
        if para:
            out.append(" ".join(p.strip() for p in para))
            para.clear()

    for ln in md.split("\n"):
        if ln.startswith("```"):
            flush()
            out.append(ln)
            in_code = not in_code
            continue
        if in_code:
            out.append(ln)
        elif not ln.strip():
            flush()
            out.append("")
        elif re.match(r"^\s*([*\-]|\d+\.|#\.)\s", ln):
            flush()
            para.append(ln.rstrip())
        elif ln[:1].isspace() and not para:
            para.append(ln.rstrip())
        else:
            para.append(ln)
    flush()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def faq_sections(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    heads = []
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if title.strip() and re.fullmatch(r"-{3,}", under) and len(under) >= len(title.rstrip()):
            heads.append(i)
    out = []
    for k, h in enumerate(heads):
        end = heads[k + 1] if k + 1 < len(heads) else len(lines)
        body = lines[h + 2 : end]
        # Stop at a level-1 section heading (=== underline).
        for j in range(len(body) - 1):
            if body[j].strip() and re.fullmatch(r"={3,}", body[j + 1]):
                body = body[:j]
                break
        out.append((lines[h].strip(), "\n".join(body)))
    return out


def eligible_faq(src: Path) -> list[list[tuple[str, str]]]:
    per_file = []
    for name in FAQ_FILES:
        items = []
        for q, body in faq_sections(src / FAQ_DIR / f"{name}.rst.txt"):
            if not q.endswith("?"):
                continue
            md = rst_to_md(body)
            if md is None:
                continue
            md = unwrap_md(md)
            if 200 <= len(md) <= 2000:
                items.append((inline(q), md))
        per_file.append(items)
    return per_file


def spread(items: list, n: int) -> list:
    """n items evenly spaced through the list (deterministic)."""
    if n >= len(items):
        return list(items)
    return [items[(k * len(items)) // n] for k in range(n)]


# --------------------------------------------------------------------------


def faq_records(src: Path) -> list[dict]:
    per_file = eligible_faq(src)
    # Pairs: two consecutive eligible questions of the same FAQ file.
    pairs, used = [], set()
    candidates = [(f, i) for f, items in enumerate(per_file) for i in range(len(items) - 1)]
    for f, i in spread(candidates, N_FAQ_PAIRS * 3)[::3]:
        pairs.append((per_file[f][i], per_file[f][i + 1]))
        used.update({(f, i), (f, i + 1)})
    singles = [(f, i) for f, items in enumerate(per_file) for i in range(len(items)) if (f, i) not in used]
    records = []
    for k, (f, i) in enumerate(spread(singles, N_FAQ_SINGLE)):
        q, a = per_file[f][i]
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if k % 2 == 0:
            msgs.insert(0, {"role": "system", "content": SYS_PY})
        records.append({"messages": msgs})
    for (q1, a1), (q2, a2) in pairs:
        records.append({"messages": [
            {"role": "system", "content": SYS_PY},
            {"role": "user", "content": q1},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": q2},
            {"role": "assistant", "content": a2},
        ]})
    return records


def devil_records(src: Path) -> list[dict]:
    _, body = bc.devil_body(src)
    items = []
    for head, chunk in bc.devil_entries(body):
        if head[0] in bc.DEVIL_EN_LETTERS:
            continue  # those letters are in calibration/en/
        entry = bc.strip_italics(bc.unwrap(chunk))
        if "\n" in entry or not (80 <= len(entry) <= 700):
            continue  # keep single-paragraph prose entries (no verse)
        items.append((head, entry))
    records = []
    for k, (head, entry) in enumerate(spread(items, N_DEVIL)):
        word = head.capitalize()
        q = f'What does "{word}" mean?' if k % 2 == 0 else f'Define the word "{word}".'
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": entry}]
        if k % 3 != 2:
            msgs.insert(0, {"role": "system", "content": SYS_DEVIL})
        records.append({"messages": msgs})
    return records


def parse_poems(path: Path) -> list[tuple[str, str, str]]:
    text, _ = bc.build_fortune(path)
    poems = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        if len(lines) < 3:
            continue
        m = re.search(r"《([^》]+)》(.*)$", lines[0])
        a = re.match(r"^作者[：:]\s*([^（(]+)", lines[1])
        if not m or not a:
            continue
        title = m.group(1) + m.group(2).strip()
        body = lines[2:]
        if not (2 <= len(body) <= 8) or any(len(x) > 40 for x in body):
            continue
        poems.append((title, a.group(1).strip(), "\n".join(body)))
    return poems


def zh_records(src: Path) -> list[dict]:
    records = []
    chosen = spread(parse_poems(src / bc.FORTUNES / "tang300"), N_TANG)
    chosen += spread(parse_poems(src / bc.FORTUNES / "song100"), N_SONG)
    for k, (title, author, poem) in enumerate(chosen):
        q = f"请背诵{author}的《{title}》。" if k % 2 == 0 else f"《{title}》（{author}）的全文是什么？"
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": poem}]
        if k % 2 == 1:
            msgs.insert(0, {"role": "system", "content": SYS_ZH})
        records.append({"messages": msgs})
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder with one dpkg-deb -x tree per package")
    ap.add_argument("-o", "--out", type=Path,
                    default=Path(__file__).resolve().parent.parent / "chat" / "sample.jsonl")
    args = ap.parse_args()
    groups = [faq_records(args.src), devil_records(args.src), zh_records(args.src)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        for recs in groups:
            for r in recs:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{args.out}: {sum(map(len, groups))} records "
          f"(faq {len(groups[0])}, devil {len(groups[1])}, zh {len(groups[2])}), "
          f"{args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
