#!/usr/bin/env python3
"""Writes the seed corpus of the alloc_ops fuzz target (corpus/alloc_ops/seed-*).

Deterministic: rerunning it rewrites the same files. See fuzz_targets/alloc_ops.rs for the
input format. Each seed is a small program of operations with a theme (sizes, threads, ops).
"""
import os
import random

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "alloc_ops")

def size(kind, v):
    return bytes([kind, v & 0xFF, (v >> 8) & 0xFF])

def alloc(t, kind, v, align=0, zeroed=False):
    return bytes([1 if zeroed else 0, t]) + size(kind, v) + bytes([align])

def free(t, slot):
    return bytes([2, t, slot])

def realloc(t, slot, kind, v):
    return bytes([3, t, slot]) + size(kind, v)

CHECK = bytes([4])
def respawn(t): return bytes([5, t])
def collect(force): return bytes([6, force])
FAIL_NEXT = bytes([7])

def theme(rng, threads, kinds, ops, n):
    out = bytes([threads - 1])
    for _ in range(n):
        op = rng.choice(ops)
        t = rng.randrange(3)
        kind = rng.choice(kinds)
        v = rng.randrange(1 << 16)
        align = rng.choice([0, 1, 2, 3, 160 + rng.randrange(96)])
        if op == "alloc":
            out += alloc(t, kind, v, align)
        elif op == "zeroed":
            out += alloc(t, kind, v, align, zeroed=True)
        elif op == "free":
            out += free(t, rng.randrange(256))
        elif op == "realloc":
            out += realloc(t, rng.randrange(256), kind, v)
        elif op == "check":
            out += CHECK
        elif op == "respawn":
            out += respawn(t)
        elif op == "collect":
            out += collect(rng.randrange(2))
        elif op == "fail":
            out += FAIL_NEXT
    return out

def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20261126)
    seeds = {}
    all_ops = ["alloc", "alloc", "zeroed", "free", "free", "realloc", "check", "respawn", "collect", "fail"]
    themes = [
        ("tiny-1t", 1, [0, 1, 2, 3], ["alloc", "free", "realloc", "check"]),
        ("tiny-3t", 3, [0, 1, 2, 3], ["alloc", "free", "free", "check"]),
        ("classes", 2, [7], ["alloc", "zeroed", "free", "realloc"]),
        ("small", 2, [3, 4], ["alloc", "free", "realloc", "check"]),
        ("large", 2, [5], ["alloc", "zeroed", "free", "realloc", "collect"]),
        ("huge", 2, [6], ["alloc", "zeroed", "free", "realloc", "collect"]),
        ("mixed", 3, list(range(8)), all_ops),
        ("churn", 3, [0, 3, 4, 7], ["alloc", "alloc", "free", "respawn"]),
        ("faults", 2, [4, 5, 6], ["alloc", "realloc", "fail", "fail", "free", "collect"]),
        ("realloc-walk", 1, list(range(8)), ["alloc", "realloc", "realloc", "realloc"]),
    ]
    for name, threads, kinds, ops in themes:
        for k in range(4):
            seeds[f"seed-{name}-{k}"] = theme(rng, threads, kinds, ops, rng.randrange(8, 64))
    # Hand-written ones: a big-aligned block, a thread dying with blocks, a failed realloc.
    seeds["seed-align-1m"] = bytes([0]) + alloc(0, 6, 40000, 160 + 20) + alloc(0, 4, 100, 160 + 16) + CHECK + free(0, 0) + free(0, 0)
    seeds["seed-exit-with-blocks"] = bytes([1]) + alloc(1, 7, 5, 0) * 8 + respawn(1) + free(0, 0) * 8
    seeds["seed-failed-realloc"] = bytes([0]) + alloc(0, 6, 1000) + FAIL_NEXT + realloc(0, 0, 6, 60000) + CHECK + free(0, 0)
    seeds["seed-cross-free"] = bytes([2]) + alloc(1, 7, 20) * 16 + free(2, 0) * 16 + alloc(2, 7, 20) * 4
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {OUT}")

if __name__ == "__main__":
    main()
