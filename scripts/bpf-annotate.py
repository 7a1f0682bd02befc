#!/usr/bin/env python3
"""Per-source-line profile of loaded XDP programs, from `perf record -a`.

perf can annotate BPF programs only when it is built with libopcodes (Debian's
is not), and bpftool can dump JIT images only with libbfd. This needs neither:
while the programs are loaded it asks the kernel for each program's JIT
symbols and its BTF line info (`BPF_OBJ_GET_INFO_BY_FD`: which JIT address
starts which source line), then attributes perf's samples to source lines.

    scripts/bpf-annotate.py record OUT.json SECONDS [NAME...]
        # while the programs run: perf record -a for SECONDS, then the
        # programs' line tables (programs named NAME, default veer_xdp and
        # its tail-called programs), into OUT.json
    scripts/bpf-annotate.py report OUT.json [TOP]
        # the source lines that took the most samples, per function

`cargo xtask bench -- --only packet --rows ROW --spin 20` gives a steady
load to record. Needs root.
"""

import bisect
import collections
import ctypes
import json
import os
import struct
import subprocess
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_GET_NEXT_ID = 11
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_GET_FD_BY_ID = 19
DEFAULT_NAMES = ("veer_xdp", "veer_nat", "veer_nat_return", "veer_tunnel_return")

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return r, buf


def prog_ids():
    ids, start = [], 0
    while True:
        try:
            _, buf = bpf(BPF_PROG_GET_NEXT_ID, struct.pack("II", start, 0))
        except OSError:
            return ids
        start = struct.unpack_from("I", buf, 4)[0]
        ids.append(start)


def obj_info(fd, size, fill=None):
    """BPF_OBJ_GET_INFO_BY_FD into a `size`-byte info; `fill` sets pointer fields."""
    info = ctypes.create_string_buffer(fill or b"", size)
    attr = struct.pack("IIQ", fd, size, ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info


def array(n, size):
    return ctypes.create_string_buffer(max(n * size, 1))


def program(prog_id):
    """The program's name, JIT functions (address, length) and line table."""
    fd, _ = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("I", prog_id))
    try:
        info = obj_info(fd, 232)
        name = info.raw[64:80].split(b"\0")[0].decode()
        nr_ksyms, nr_lens = struct.unpack_from("II", info, 104)
        btf_id = struct.unpack_from("I", info, 128)[0]
        nr_line, = struct.unpack_from("I", info, 148)
        nr_jline, line_rec, jline_rec = struct.unpack_from("III", info, 168)
        ksyms, lens = array(nr_ksyms, 8), array(nr_lens, 4)
        lines, jlines = array(nr_line, line_rec or 16), array(nr_jline, jline_rec or 8)
        req = bytearray(232)
        struct.pack_into("II", req, 104, nr_ksyms, nr_lens)
        struct.pack_into("QQ", req, 112, ctypes.addressof(ksyms), ctypes.addressof(lens))
        struct.pack_into("I", req, 148, nr_line)
        struct.pack_into("Q", req, 152, ctypes.addressof(lines))
        struct.pack_into("Q", req, 160, ctypes.addressof(jlines))
        struct.pack_into("III", req, 168, nr_jline, line_rec, jline_rec)
        obj_info(fd, 232, bytes(req))
    finally:
        os.close(fd)
    funcs = [(struct.unpack_from("Q", ksyms, 8 * i)[0], struct.unpack_from("I", lens, 4 * i)[0]) for i in range(nr_ksyms)]
    addrs = [struct.unpack_from("Q", jlines, jline_rec * i)[0] for i in range(nr_jline)]
    recs = [struct.unpack_from("IIII", lines, line_rec * i) for i in range(nr_line)]
    strings = btf_strings(btf_id) if btf_id else b""

    def text(off):
        return strings[off:strings.index(b"\0", off)].decode(errors="replace") if off < len(strings) else "?"

    table = [
        {"addr": a, "file": text(r[1]), "line": r[3] >> 10, "text": text(r[2]).strip()}
        for a, r in zip(addrs, recs)
    ]
    return {"id": prog_id, "name": name, "funcs": funcs, "lines": sorted(table, key=lambda x: x["addr"])}


def btf_strings(btf_id):
    """The string section of BTF object `btf_id` (file names, source lines)."""
    try:
        fd, _ = bpf(BPF_BTF_GET_FD_BY_ID, struct.pack("I", btf_id))
    except OSError:
        return b""
    try:
        info = obj_info(fd, 32)
        size = struct.unpack_from("I", info, 8)[0]
        raw = ctypes.create_string_buffer(size)
        req = bytearray(32)
        struct.pack_into("QI", req, 0, ctypes.addressof(raw), size)
        obj_info(fd, 32, bytes(req))
    finally:
        os.close(fd)
    data = raw.raw
    hdr_len, = struct.unpack_from("I", data, 4)
    _, _, str_off, str_len = struct.unpack_from("IIII", data, 8)
    return data[hdr_len + str_off:hdr_len + str_off + str_len]


def record(out, seconds, names):
    perf_data = out + ".perf"
    subprocess.run(["perf", "record", "-a", "-F", "15000", "-o", perf_data, "--", "sleep", str(seconds)],
                   check=True, stderr=subprocess.DEVNULL)
    progs = []
    for pid in prog_ids():
        try:
            p = program(pid)
        except OSError:
            continue
        if p["name"] in names:
            progs.append(p)
    samples = subprocess.run(["perf", "script", "-i", perf_data, "-F", "ip"], check=True,
                             capture_output=True, text=True).stdout.split()
    json.dump({"progs": progs, "samples": samples}, open(out, "w"))
    print(f"{len(progs)} programs, {len(samples)} samples -> {out}")


def report(path, top):
    d = json.load(open(path))
    spans = []  # (start, end, prog, function index)
    for p in d["progs"]:
        p["starts"] = [x["addr"] for x in p["lines"]]
        for i, (a, n) in enumerate(p["funcs"]):
            spans.append((a, a + n, p, i))
    spans.sort(key=lambda s: s[0])
    starts = [s[0] for s in spans]
    by_line, by_file, total, ours = collections.Counter(), collections.Counter(), 0, 0
    for s in d["samples"]:
        ip = int(s, 16)
        total += 1
        k = bisect.bisect_right(starts, ip) - 1
        if k < 0 or ip >= spans[k][1]:
            continue
        ours += 1
        _, _, p, _ = spans[k]
        lines = p["lines"]
        j = bisect.bisect_right(p["starts"], ip) - 1
        where = lines[j] if j >= 0 else {"file": "?", "line": 0, "text": "?"}
        file = where["file"].split("/src/")[-1]
        by_file[file] += 1
        by_line[(file, where["line"], where["text"][:90])] += 1
    print(f"{ours} of {total} samples in the programs; by source file:")
    for f, n in by_file.most_common(12):
        print(f"{100 * n / max(ours, 1):5.1f}%  {f}")
    print("by source line:")
    for (f, line, text), n in by_line.most_common(top):
        print(f"{100 * n / max(ours, 1):5.1f}%  {f}:{line}  {text}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "record":
        record(sys.argv[2], float(sys.argv[3]), set(sys.argv[4:]) or set(DEFAULT_NAMES))
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 30)
    else:
        print(__doc__)
        sys.exit(2)
