#!/usr/bin/env python3
"""List Rust files over a line budget and Rust functions over a line budget.

Usage: scripts/layout-check.py [--max-file N] [--max-fn N] [PATH ...]

Each PATH is a directory (searched for *.rs) or a single .rs file; the
default is the current directory. Exits 1 when anything is over, 0 otherwise.

The function scan is a brace counter, not a parser: it skips strings, chars,
raw strings and comments, which is enough for rustfmt-formatted code. A
function's length runs from its `fn` line to its closing brace, inclusive,
so test functions count like any other.
"""

import argparse
import os
import re
import sys

FN_RE = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?"
    r"(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)"
)


def strip_code(text):
    """Return text with comments, strings and char literals blanked out.

    Newlines are kept so line numbers still match the source.
    """
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def long_functions(text, limit):
    """Yield (name, first_line, length) for functions longer than limit."""
    code = strip_code(text).split("\n")
    for idx, line in enumerate(code):
        m = FN_RE.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for end in range(idx, len(code)):
            seg = code[end]
            if not opened and ";" in seg and "{" not in seg:
                break  # a declaration without a body (trait item, extern)
            for ch in seg:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth <= 0:
                length = end - idx + 1
                if length > limit:
                    yield m.group(1), idx + 1, length
                break


def rust_files(paths):
    for path in paths:
        if os.path.isfile(path):
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("target", ".git"))
            for name in sorted(files):
                if name.endswith(".rs"):
                    yield os.path.join(root, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", default=["."], help="directories or .rs files")
    ap.add_argument("--max-file", type=int, default=400, help="most lines a file may have")
    ap.add_argument("--max-fn", type=int, default=60, help="most lines a function may have")
    args = ap.parse_args()

    over = 0
    for path in rust_files(args.paths):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        if lines > args.max_file:
            print(f"{path}: file has {lines} lines (max {args.max_file})")
            over += 1
        for name, line, length in long_functions(text, args.max_fn):
            print(f"{path}:{line}: fn {name} has {length} lines (max {args.max_fn})")
            over += 1
    if over:
        print(f"{over} item(s) over budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
