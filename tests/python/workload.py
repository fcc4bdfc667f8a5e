"""Python under LD_PRELOAD=libdomalloc.so: threads build and drop large dicts, lists, sets and
strings, pass objects between threads (cross-thread frees), and check results. Exit 0 = pass."""
import ctypes
import gc
import os
import queue
import sys
import threading


def preloaded():
    with open("/proc/self/maps") as f:
        mapped = "libdomalloc" in f.read()
    lib = ctypes.CDLL(None)
    try:
        node_of = lib.domalloc_node_of
    except AttributeError:
        return False
    node_of.argtypes = [ctypes.c_void_p]
    node_of.restype = ctypes.c_int
    # A buffer from ctypes is malloc'd memory: domalloc must own it.
    buf = ctypes.create_string_buffer(100000)
    return mapped and node_of(ctypes.addressof(buf)) >= 0


def build(seed, n):
    d = {f"key-{seed}-{i}": [i] * (i % 17) for i in range(n)}
    s = {i * seed for i in range(n)}
    text = "".join(chr(65 + (i * seed) % 26) for i in range(n))
    return d, s, text


def check(seed, n, d, s, text):
    assert len(d) == n
    assert sum(len(v) for v in d.values()) == sum(i % 17 for i in range(n))
    assert len(s) == (n if seed else 1)
    assert text[:3] == "".join(chr(65 + (i * seed) % 26) for i in range(3))


def worker(tid, rounds, q_out, q_in, errors):
    try:
        for r in range(rounds):
            seed = tid * 1000 + r
            n = 20000 + (r * 7919) % 30000
            d, s, text = build(seed, n)
            check(seed, n, d, s, text)
            # Hand it to another thread, which checks and drops it.
            q_out.put((seed, n, d, s, text))
            del d, s, text
            try:
                item = q_in.get(timeout=10)
            except queue.Empty:
                continue
            check(*item)
            del item
            big = list(range(200000))
            big.reverse()
            assert big[0] == 199999
            b = bytearray(3_000_000)
            b[-1] = 1
            assert sum(b) == 1
            del big, b
            gc.collect(0)
    except Exception as e:  # noqa: BLE001 - report anything
        errors.append(f"thread {tid}: {e!r}")


def main():
    if not os.environ.get("DM_BASELINE") and not preloaded():
        print("workload: libdomalloc is not the process's malloc")
        return 2
    threads = 8
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    queues = [queue.Queue() for _ in range(threads)]
    errors = []
    ts = [
        threading.Thread(target=worker, args=(t, rounds, queues[t], queues[(t + 1) % threads], errors))
        for t in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        print("workload: FAILED:", *errors, sep="\n  ")
        return 1
    print(f"workload: ok ({threads} threads x {rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
