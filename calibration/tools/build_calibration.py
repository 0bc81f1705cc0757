#!/usr/bin/env python3
"""Rebuild calibration/{en,zh,code,eval} and calibration/licenses from unpacked
Debian packages.

Usage:
    tools/fetch_sources.sh /tmp/calsrc          # apt-get download + dpkg-deb -x
    python3 tools/build_calibration.py /tmp/calsrc [--out calibration]

SRC must hold one folder per package, named after the package, each the
output of ``dpkg-deb -x`` (see fetch_sources.sh).  Nothing is fetched from the
network and only the Python standard library is used.

Every text is human-written; the processing is mechanical (see SOURCES.md):
front matter dropped, whole chapters/entries kept from the start of a work up
to a size budget, hard-wrapped prose lines joined into one line per paragraph,
_underscore_ italics markers removed, runs of blank lines collapsed.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import struct
import zlib
from pathlib import Path

JANE = "r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data"
DEVIL = "dict-devil/usr/share/dictd/devil.dict.dz"
FORTUNES = "fortunes-zh/usr/share/games/fortunes"
PYLIB = "libpython3.11-stdlib/usr/lib/python3.11"

# (source novel, output name, byte budget); whole chapters are kept until the
# budget would be exceeded.  Persuasion is reserved for eval/ only.
EN_NOVELS = [
    ("prideprejudice", "austen-pride-and-prejudice.txt", 160_000),
    ("emma", "austen-emma.txt", 120_000),
]
EVAL_NOVEL = ("persuasion", "heldout-en.txt", 60_000)
# The Devil's Dictionary: preface + entries whose headword starts with one of
# these letters go to en/; entries of later letters are left for the chat
# sample so the two do not overlap.
DEVIL_EN_LETTERS = "ABCD"
CODE_MODULES = ["fractions.py", "pprint.py", "shlex.py", "queue.py", "graphlib.py"]


# --------------------------------------------------------------------------
# Minimal reader for R's lazy-load data base (data/Rdata.rdx + Rdata.rdb),
# enough for the character vectors janeaustenr ships.


class _XDR:
    def __init__(self, buf: bytes):
        self.b = buf
        self.i = 0

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.b, self.i)
        self.i += 4
        return v

    def bytes(self, n: int) -> bytes:
        v = self.b[self.i : self.i + n]
        self.i += n
        return v


def _unserialize(buf: bytes):
    if buf[:2] != b"X\n":
        raise ValueError("only XDR-serialised R objects are supported")
    r = _XDR(buf[2:])
    version = r.int()
    r.int()  # R version that wrote it
    r.int()  # minimal R version to read it
    if version == 3:
        r.bytes(r.int())  # native encoding name
    refs: list = []

    def item():
        flags = r.int()
        typ = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if typ == 254:  # NILVALUE_SXP
            return None
        if typ == 255:  # REFSXP
            return refs[(flags >> 8) - 1]
        if typ == 1:  # SYMSXP
            name = item()
            refs.append(name)
            return name
        if typ == 9:  # CHARSXP
            n = r.int()
            return None if n == -1 else r.bytes(n).decode("utf-8")
        if typ == 16:  # STRSXP
            out = [item() for _ in range(r.int())]
        elif typ == 19:  # VECSXP
            out = [item() for _ in range(r.int())]
        elif typ in (13, 10):  # INTSXP, LGLSXP
            out = [r.int() for _ in range(r.int())]
        elif typ == 14:  # REALSXP
            n = r.int()
            out = list(struct.unpack(f">{n}d", r.bytes(8 * n)))
        elif typ == 2:  # LISTSXP (pairlist), returned as dict
            out = {}
            while True:
                attr = item() if has_attr else None
                tag = item() if has_tag else None
                out[tag] = item()
                nxt = r.int()
                if (nxt & 0xFF) == 254:
                    break
                has_attr = bool(nxt & (1 << 9))
                has_tag = bool(nxt & (1 << 10))
            del attr
            return out
        else:
            raise ValueError(f"unsupported R SEXP type {typ}")
        if has_attr:
            attrs = item()
            if isinstance(attrs, dict) and "names" in attrs and typ == 19:
                return dict(zip(attrs["names"], out))
        return out

    return item()


def read_r_lazyload(data_dir: Path) -> dict[str, list]:
    index = _unserialize(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    db = (data_dir / "Rdata.rdb").read_bytes()
    out = {}
    for name, (off, length) in index["variables"].items():
        chunk = db[off : off + length]
        out[name] = _unserialize(zlib.decompress(chunk[4:]))
    return out


# --------------------------------------------------------------------------
# Text helpers


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    lines = [ln.rstrip() for ln in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)  # at most one blank line
    return text.strip("\n") + "\n"


def strip_italics(text: str) -> str:
    return re.sub(r"_([^_\n]+?)_", r"\1", text)


def _join(a: str, b: str) -> str:
    if a.endswith("--") or (a.endswith("-") and not a.endswith(" -")):
        return a + b  # em dash written as --, or a word hyphenated at the wrap
    return a + " " + b


def unwrap(text: str) -> str:
    """Join hard-wrapped prose lines into one line per paragraph.

    A block is a run of non-blank lines.  Unindented lines are prose; an
    indented line directly followed by an unindented one starts a new prose
    paragraph (the Devil's Dictionary marks paragraphs that way); any other
    indented line (verse, letters, headings, attributions) is kept as a line
    of its own, with the block's common indentation removed.
    """
    out_blocks = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.rstrip() for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        parts: list[list] = []  # ["p", text] or ["v", [lines]]
        for k, ln in enumerate(lines):
            indented = ln[:1].isspace()
            nxt = lines[k + 1] if k + 1 < len(lines) else None
            starts_para = indented and nxt is not None and not nxt[:1].isspace()
            if not indented and parts and parts[-1][0] == "p":
                parts[-1][1] = _join(parts[-1][1], ln.strip())
            elif not indented or starts_para:
                parts.append(["p", ln.strip()])
            elif parts and parts[-1][0] == "v":
                parts[-1][1].append(ln)
            else:
                parts.append(["v", [ln]])
        rendered = []
        for kind, body in parts:
            if kind == "p":
                rendered.append(re.sub(r" {2,}", " ", body))
            else:
                ind = min(len(x) - len(x.lstrip()) for x in body)
                vlines = []
                for x in body:
                    x = x[ind:]
                    # right-aligned attribution under a quotation
                    if len(x) - len(x.lstrip()) >= 24:
                        x = x.strip()
                    vlines.append(x)
                rendered.append("\n".join(vlines))
        out_blocks.append("\n\n".join(rendered))
    return "\n\n".join(out_blocks)


# --------------------------------------------------------------------------
# Sources


CHAPTER_RE = re.compile(r"^(CHAPTER|Chapter) [0-9IVXLC]+\.?$")


def austen_chapters(lines: list) -> tuple[str, list[str]]:
    """Return (title block, [chapter texts]) for a janeaustenr novel."""
    text = "\n".join("" if x is None else x for x in lines)
    rows = text.split("\n")
    starts = [i for i, r in enumerate(rows) if CHAPTER_RE.match(r.strip())]
    title = "\n".join(rows[: starts[0]])
    chapters = []
    for a, b in zip(starts, starts[1:] + [len(rows)]):
        chunk = rows[a:b]
        # Drop "VOLUME II" style lines that sit between chapters.
        while chunk and re.match(r"^\s*(VOLUME|Volume) [IVX0-9]+\s*$", chunk[-1] or "x"):
            chunk.pop()
        while chunk and not chunk[-1].strip():
            chunk.pop()
        # The closing "Finis" line is back matter.
        if chunk and chunk[-1].strip() in ("Finis", "THE END", "FINIS"):
            chunk.pop()
        chapters.append("\n".join(chunk))
    return title, chapters


def title_lines(title_block: str) -> str:
    """Keep title and author lines; drop 'VOLUME I', dates, blank runs."""
    keep = []
    for ln in title_block.split("\n"):
        s = ln.strip()
        if not s or re.match(r"^(VOLUME|Volume) ", s) or s.lower() == "by":
            continue
        s = re.sub(r"^(by|By) ", "", s)
        s = re.sub(r"\s*\(\d{4}\)$", "", s)
        if re.match(r"^\(\d{4}\)$", s):
            continue
        keep.append(s)
    return "\n".join(keep)


def build_novel(novels: dict, key: str, budget: int) -> tuple[str, int]:
    title, chapters = austen_chapters(novels[key])
    text = title_lines(title)
    used = 0
    for ch in chapters:
        piece = strip_italics(unwrap(ch))
        if used and len((text + "\n\n" + piece).encode()) > budget:
            break
        text += "\n\n" + piece
        used += 1
    return normalise(text), used


def devil_body(src: Path) -> tuple[str, str]:
    """Return (preface, entries) of The Devil's Dictionary, wrapping notice removed."""
    raw = gzip.decompress((src / DEVIL).read_bytes()).decode("utf-8")
    start = raw.index("                              PREFACE")
    end = raw.rindex(" abcdefghijklmnopqrstuvwxyz")  # dictfmt alphabet record
    body = raw[start:end]
    first = re.search(r"^ABASEMENT, n\.", body, re.M).start()
    preface = body[:first].replace("                              PREFACE", "PREFACE", 1)
    return preface, body[first:]


ENTRY_RE = re.compile(r"^([A-Z][A-Z'\- ]*[A-Z])(,| ?\.)", re.M)


def devil_entries(entries: str) -> list[tuple[str, str]]:
    """Split the dictionary body into (HEADWORD, entry text) at headword lines."""
    # A headword line starts at column 0 right after a blank line.
    starts = [m.start() for m in re.finditer(r"(?:(?<=\n\n)|^)(?=[A-Z][A-Z'\- ]*[A-Z](,| ?\.))", entries)]
    out = []
    for a, b in zip(starts, starts[1:] + [len(entries)]):
        chunk = entries[a:b].strip("\n")
        head = ENTRY_RE.match(chunk).group(1)
        out.append((head, chunk))
    return out


def build_devil(src: Path) -> str:
    preface, entries = devil_body(src)
    kept = [chunk for head, chunk in devil_entries(entries) if head[0] in DEVIL_EN_LETTERS]
    text = "THE DEVIL'S DICTIONARY\nAmbrose Bierce\n\n" + unwrap(preface) + "\n\n"
    text += "\n\n".join(unwrap(c) for c in kept)
    return normalise(strip_italics(text))


def build_fortune(path: Path) -> tuple[str, int]:
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"\x1b\[[0-9;]*m", "", raw)  # ANSI colour codes around title/author
    poems = [p.strip("\n") for p in re.split(r"^%$", raw, flags=re.M) if p.strip()]
    return normalise("\n\n".join(poems)), len(poems)


# --------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder with one dpkg-deb -x tree per package")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    src, out = args.src, args.out
    for sub in ("en", "zh", "code", "eval", "licenses"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    def write(rel: str, text: str, note: str = "") -> None:
        p = out / rel
        p.write_text(text, encoding="utf-8", newline="\n")
        print(f"{rel}: {len(text.encode())} bytes {note}")

    novels = read_r_lazyload(src / JANE)
    for key, name, budget in EN_NOVELS:
        text, n = build_novel(novels, key, budget)
        write(f"en/{name}", text, f"({n} chapters)")
    write("en/bierce-devils-dictionary-a-d.txt", build_devil(src))
    key, name, budget = EVAL_NOVEL
    text, n = build_novel(novels, key, budget)
    write(f"eval/{name}", text, f"({n} chapters)")

    for fname in ("tang300", "song100"):
        text, n = build_fortune(src / FORTUNES / fname)
        write(f"zh/{fname}.txt", text, f"({n} poems)")

    for mod in CODE_MODULES:
        text = (src / PYLIB / mod).read_text(encoding="utf-8")
        write(f"code/{mod}.txt", text.replace("\r\n", "\n"))

    shutil.copyfile(src / PYLIB / "LICENSE.txt", out / "licenses/PSF-2.0-Python-3.11.txt")
    print("licenses/PSF-2.0-Python-3.11.txt")


if __name__ == "__main__":
    main()
