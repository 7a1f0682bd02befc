#!/usr/bin/env python3
"""Import graph of the XDP crate's modules: fails on a cycle, or on an import of a module
declared later in main.rs (the layers, bottom up). Usage: scripts/ebpf-module-graph.py [ebpf/veer-xdp/src]"""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../ebpf/veer-xdp/src")
mods = {}  # module path -> file
for dp, dirs, fs in os.walk(root):
    # src/bin holds other crates (their own programs), not modules of this one.
    if os.path.relpath(dp, root) == '.' and 'bin' in dirs:
        dirs.remove('bin')
    for f in fs:
        if not f.endswith('.rs'):
            continue
        rel = os.path.relpath(os.path.join(dp, f), root)[:-3].split(os.sep)
        if rel[-1] == 'mod':
            rel = rel[:-1]
        if rel in (['main'], ['lib']):
            rel = []
        mods['::'.join(rel)] = os.path.join(dp, f)

def strip(src):
    src = re.sub(r'/\*.*?\*/', '', src, flags=re.S)
    return re.sub(r'//[^\n]*', '', src)

def resolve(base, parts):
    """Longest known module prefix of base+parts."""
    path = base[:]
    best = '::'.join(path)
    for p in parts:
        path.append(p)
        if '::'.join(path) in mods:
            best = '::'.join(path)
        else:
            break
    return best

def leaves(tree):
    """Paths named by a use tree: 'a::{b, c::{d}}' -> [[a,b],[a,c,d]]."""
    tree = tree.strip()
    m = re.match(r'^([\w:]*?)(::)?\{(.*)\}$', tree, re.S)
    if m:
        prefix = [p for p in m.group(1).split('::') if p]
        body, depth, cur, out = m.group(3), 0, '', []
        for ch in body + ',':
            if ch == ',' and depth == 0:
                if cur.strip():
                    out += [prefix + l for l in leaves(cur)]
                cur = ''
                continue
            depth += ch == '{'
            depth -= ch == '}'
            cur += ch
        return out
    tree = re.sub(r'\s+as\s+\w+$', '', tree)
    return [[p for p in tree.split('::') if p]]

edges = {m: set() for m in mods}
for mod, f in mods.items():
    me = mod.split('::') if mod else []
    src = strip(open(f).read())
    refs = []
    for u in re.finditer(r'\buse\s+([^;]+);', src):
        refs += leaves(u.group(1))
    for p in re.finditer(r'\b((?:crate|super|self)(?:::\w+)+)', src):
        refs.append(p.group(1).split('::'))
    # A bare path through a child module (`syn_stash::keep` in nat/mod.rs).
    for p in re.finditer(r'(?<![\w:])(\w+)::\w', src):
        if '::'.join(me + [p.group(1)]) in mods:
            refs.append(['self', p.group(1)])
    own_file_is_dir = f.endswith('mod.rs') or mod == ''
    for r in refs:
        if not r or r[0] not in ('crate', 'super', 'self'):
            continue
        if r[0] == 'crate':
            base, rest = [], r[1:]
        else:
            base = me[:]
            rest = r
            while rest and rest[0] in ('super', 'self'):
                if rest[0] == 'super':
                    base = base[:-1]
                rest = rest[1:]
        t = resolve(base, rest)
        if t != mod and t in mods:
            edges[mod].add(t)

# Tarjan's SCC
idx, low, on, st, sccs, n = {}, {}, set(), [], [], [0]
def visit(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in sorted(edges[v]):
        if w not in idx:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        sccs.append(c)
sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in idx: visit(v)
name = lambda m: m or 'crate (main.rs)'
for m in sorted(edges):
    print(f"{name(m):24} -> {', '.join(sorted(edges[m])) or '-'}")
# Layers: the crate root's `mod` lines, in order; a module may only use
# modules declared before it (children count as their top-level module).
order = re.findall(r'^mod (\w+);', open(mods['']).read(), re.M)
rank = {m: i for i, m in enumerate(order)}
up = []
for m, ts in edges.items():
    for t in ts:
        a, b = m.split('::')[0], t.split('::')[0]
        if a in rank and b in rank and a != b and rank[b] > rank[a]:
            up.append(f"{m} -> {t}")
for u in sorted(up):
    print(f"UPWARD: {u} (declared later in main.rs)")
cycles = [c for c in sccs if len(c) > 1]
if cycles or up:
    for c in cycles:
        print(f"CYCLE ({len(c)} modules): {', '.join(sorted(c))}")
    sys.exit(1)
print(f"no cycles among {len(mods)} modules; every import points at a module declared earlier in main.rs")
