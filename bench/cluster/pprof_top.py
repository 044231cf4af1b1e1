"""Read a Go CPU profile (pprof protobuf, gzipped) without Go's pprof tool: flat and cumulative top functions.

    python bench/cluster/pprof_top.py PROFILE [PROFILE ...] [--top 25] [--cum crypto/tls. --cum encoding/json.]

Why here: `go tool pprof` is not prebuilt in the Go toolchain (it would be compiled on first use), and
the storm profiles only need sums per function. Several profiles are added up (e.g. the 3 storms of a
mode). ``--cum`` prints the CPU seconds of samples with any function whose name contains the string
on the stack (each sample counted once per string).

The format (github.com/google/pprof, proto/profile.proto): Profile{2: samples {1: location ids,
2: values}, 4: locations {1: id, 4: lines {1: function id}}, 5: functions {1: id, 2: name}, 6: strings}.
The last sample value of a CPU profile is nanoseconds.
"""

from __future__ import annotations

import argparse
import gzip
from collections import Counter
from pathlib import Path


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; value is an int or bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _ints(wire: int, value) -> list[int]:
    """A repeated integer field: packed (bytes) or one value."""
    if wire != 2:
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(v)
    return out


def read_profile(path: Path) -> list[tuple[list[str], int]]:
    """Samples as (stack of function names, leaf first; CPU nanoseconds)."""
    raw = path.read_bytes()
    buf = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    strings: list[str] = []
    functions: dict[int, int] = {}
    locations: dict[int, list[int]] = {}
    samples: list[tuple[list[int], int]] = []
    for field, wire, value in _fields(buf):
        if field == 6:
            strings.append(value.decode(errors="replace"))
        elif field == 5:
            f = {k: v for k, _, v in _fields(value)}
            functions[f.get(1, 0)] = f.get(2, 0)
        elif field == 4:
            loc_id, funcs = 0, []
            for k, _, v in _fields(value):
                if k == 1:
                    loc_id = v
                elif k == 4:
                    funcs.append(next((fv for fk, _, fv in _fields(v) if fk == 1), 0))
            locations[loc_id] = funcs  # inlined frames: innermost first
        elif field == 2:
            locs, values = [], []
            for k, w, v in _fields(value):
                if k == 1:
                    locs += _ints(w, v)
                elif k == 2:
                    values += _ints(w, v)
            samples.append((locs, values[-1] if values else 0))
    out = []
    for locs, ns in samples:
        stack = [strings[functions[f]] for loc in locs for f in locations.get(loc, []) if f in functions]
        out.append((stack, ns))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cum", action="append", default=[], help="substring of function names (repeat)")
    args = parser.parse_args()
    samples = [s for p in args.profiles for s in read_profile(p)]
    total = sum(ns for _, ns in samples) or 1
    flat: Counter[str] = Counter()
    for stack, ns in samples:
        if stack:
            flat[stack[0]] += ns
    print(f"total {total / 1e9:.2f} CPU-s in {len(args.profiles)} profile(s)")
    print("flat:")
    for name, ns in flat.most_common(args.top):
        print(f"  {ns / 1e9:6.2f} s {ns / total * 100:5.1f} %  {name}")
    if args.cum:
        print("cumulative (samples with the string anywhere on the stack):")
        for needle in args.cum:
            ns = sum(n for stack, n in samples if any(needle in f for f in stack))
            print(f"  {ns / 1e9:6.2f} s {ns / total * 100:5.1f} %  {needle}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
