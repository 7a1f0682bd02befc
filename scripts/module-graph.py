#!/usr/bin/env python3
"""The module graph of a Rust crate, drawn from its `use` paths.

    scripts/module-graph.py userspace/src [ebpf/veer-xdp/src ...]

For each crate source directory: every file is a module; an edge goes from
a file to the file whose module a path it names resolves to (`crate::`,
`super::`, `self::` and child-module paths; other crates are ignored; test
modules at the end of a file are skipped). It reports

- circles between files (strongly connected components);
- upward arrows: a file importing a module that contains it (its parent's
  `mod.rs`, or any ancestor's);
- circles between the folders (and files) of one directory, with every
  file below each of them collapsed into it.

Exits non-zero if it finds any, so `cargo xtask test` can run it.
"""

import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def modules(src):
    """Maps module paths (tuples) to files, and files to module paths."""
    by_path = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(root, f)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[0] == "bin":
                continue
            by_path[tuple(rel)] = full
    # `#[path = "x_tests.rs"] mod tests;` files are children of the file naming them.
    for mod, full in list(by_path.items()):
        text = open(full).read()
        for target in re.findall(r'#\[path\s*=\s*"([^"]+)"\]\s*mod\s+' + IDENT, text):
            child = os.path.normpath(os.path.join(os.path.dirname(full), target))
            for m, f in list(by_path.items()):
                if f == child:
                    del by_path[m]
                    by_path[mod + ("tests",)] = f
    return by_path


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Inline test modules are the file's own business.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", text)
    return text[: cut.start()] if cut else text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if start is None:
        return [re.sub(r"\s+as\s+" + IDENT + "$", "", tree)]
    prefix, inner = tree[:start], tree[start + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip():
            out += [prefix + q for q in expand(p)]
    return out


PUB_USE = r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);"


def reexports(text):
    """`pub use a::b::C as D;` -> {"D": "a::b::C"}: names a module passes on."""
    out = {}
    for stmt in re.findall(PUB_USE, text):
        for p in expand(stmt):
            p = p.replace(" ", "").replace("\n", "")
            alias = re.search(r"as(" + IDENT + ")$", stmt.replace(" ", "")) if "{" not in stmt else None
            name = alias.group(1) if alias else p.split("::")[-1]
            if name != "*":
                out[name] = re.sub(r"as" + IDENT + "$", "", p) if alias else p
    return out


def paths(text):
    """The paths a file depends on. A `pub use` of its own child is the
    parent showing the child's item, not a dependency on it."""
    found = []
    for stmt in re.findall(r"\buse\s+([^;]+);", re.sub(PUB_USE, "", text)):
        found += [p.replace(" ", "").replace("\n", "") for p in expand(stmt)]
    for stmt in re.findall(PUB_USE, text):
        found += ["reexport:" + p.replace(" ", "").replace("\n", "") for p in expand(stmt)]
    rest = re.sub(r"\buse\s+[^;]+;", "", text)
    found += re.findall(r"(?<![:\w])(?:crate|super|self)(?:::" + IDENT + ")+", rest)
    return found


def resolve(path, here, mods, exports=None, depth=0):
    """The module a path lands in. A name that module only re-exports
    resolves to the module that defines it."""
    segs = [s for s in path.split("::") if s and s != "*"]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        while segs and segs[0] in ("super", "self"):
            base = base[:-1] if segs[0] == "super" else base
            segs = segs[1:]
    elif here + (segs[0],) in mods:
        base = here
    else:
        return None  # another crate, or a name in scope
    best = base if base in mods else None
    cur, rest = base, list(segs)
    for s in segs:
        cur = cur + (s,)
        if cur in mods:
            best, rest = cur, rest[1:]
        else:
            break
    if exports and best is not None and rest and rest[0] in exports.get(best, {}) and depth < 8:
        via = resolve(exports[best][rest[0]], best, mods, exports, depth + 1)
        if via is not None:
            return via
    return best


def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check(src):
    mods = modules(src)
    exports = {mod: reexports(strip(open(full).read())) for mod, full in mods.items()}
    edges = defaultdict(set)
    for mod, full in mods.items():
        for p in paths(strip(open(full).read())):
            shown = p.startswith("reexport:")
            t = resolve(p.removeprefix("reexport:"), mod, mods, exports)
            if shown and t is not None and t[: len(mod)] == mod:
                continue
            if t is not None and t != mod:
                edges[mod].add(t)
    name = lambda m: "::".join(m) or "(crate root)"
    problems = []
    for comp in sccs(mods.keys(), edges):
        problems.append("circle between files: " + " <-> ".join(name(m) for m in comp))
    for m, ts in sorted(edges.items()):
        for t in sorted(ts):
            # A test module importing what it tests is no arrow.
            if len(t) < len(m) and m[: len(t)] == t and m[-1] != "tests":
                problems.append(f"upward arrow: {name(m)} imports {name(t)}, which contains it")
    # Folder level: within each directory, its children with everything below collapsed.
    dirs = {m[:-1] for m in mods if m} | {()}
    for d in sorted(dirs):
        kids = {m[len(d)] for m in mods if len(m) > len(d) and m[: len(d)] == d}
        level = defaultdict(set)
        for m, ts in edges.items():
            for t in ts:
                if len(m) > len(d) and len(t) > len(d) and m[: len(d)] == d == t[: len(d)] and m[len(d)] != t[len(d)]:
                    level[m[len(d)]].add(t[len(d)])
        for comp in sccs(kids, level):
            problems.append(f"circle in {name(d)}/: " + " <-> ".join(comp))
    return mods, edges, problems


def main():
    bad = False
    for src in sys.argv[1:] or ["userspace/src"]:
        mods, edges, problems = check(src)
        n = sum(len(t) for t in edges.values())
        print(f"{src}: {len(mods)} modules, {n} edges, {len(problems)} problems")
        for p in problems:
            print("  " + p)
        bad |= bool(problems)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
