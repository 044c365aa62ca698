"""The attacker of tests/it/attack.rs: runs as the unprivileged owner of the
app root and swaps, as fast as it can, what root is working on.

One JSON argument describes the attack:
  seconds, iterations  bounds: the loop stops at whichever comes first
  links   [[path, target], ...]  symlinks to plant first (an existing
          non-symlink at `path` is moved aside)
  pairs   [[a, b], ...]  each iteration exchanges a and b atomically
          (renameat2 RENAME_EXCHANGE): a name root checked now names
          something else, and back on the next iteration
  watch   [{"dir", "prefix", "link"}, ...]  each iteration exchanges every
          entry of dir whose name starts with prefix (root's temp names)
          with dir/link
  inner   [{"dir", "prefix", "names", "link"}, ...]  for every entry of dir
          starting with prefix, exchanges entry/NAME (one of names, in
          turn) with entry/link
  trigger {"path", "pairs"}  once `path` exists (say, a marker root's hook
          writes), exchanges each of its pairs once: a targeted swap right
          after root has checked and started using a directory
  ready   a path to create once the links are planted and the race begins
On SIGTERM or at a bound it prints {"iterations", "exchanges", "seen"} as
JSON on stdout and exits 0.
"""

import ctypes
import json
import os
import signal
import sys
import time

AT_FDCWD = -100
RENAME_EXCHANGE = 2

libc = ctypes.CDLL(None, use_errno=True)
try:
    _renameat2 = libc.renameat2
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int

    def exchange(a, b):
        return _renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0
except AttributeError:  # glibc < 2.28: the raw system call (x86_64: 316)
    _syscall = libc.syscall

    def exchange(a, b):
        return _syscall(316, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0


stop = False


def on_term(_sig, _frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def plant(path, target):
    try:
        if os.path.islink(path):
            os.unlink(path)
        elif os.path.lexists(path):
            os.rename(path, path + b".aside.%d.%d" % (os.getpid(), time.monotonic_ns()))
        os.symlink(target, path)
    except OSError as e:
        print("racer: cannot plant %s: %s" % (path, e), file=sys.stderr)


def main():
    spec = json.loads(sys.argv[1])
    end = time.monotonic() + float(spec.get("seconds", 2))
    max_iter = int(spec.get("iterations", 1000000))
    for path, target in spec.get("links", []):
        plant(path.encode(), target.encode())
    if spec.get("ready"):
        open(spec["ready"], "w").close()
    pairs = [(a.encode(), b.encode()) for a, b in spec.get("pairs", [])]
    watch = [(w["dir"].encode(), w["prefix"].encode(), w["link"].encode()) for w in spec.get("watch", [])]
    inner = [
        (w["dir"].encode(), w["prefix"].encode(), [n.encode() for n in w["names"]], w["link"].encode())
        for w in spec.get("inner", [])
    ]
    trigger = spec.get("trigger")
    if trigger:
        trigger_path = trigger["path"].encode()
        trigger_pairs = [(a.encode(), b.encode()) for a, b in trigger["pairs"]]
    n = exchanges = seen = 0
    while not stop and n < max_iter and time.monotonic() < end:
        n += 1
        if trigger and os.path.lexists(trigger_path):
            for a, b in trigger_pairs:
                exchanges += exchange(a, b)
            seen += 1
            trigger = None
        for a, b in pairs:
            exchanges += exchange(a, b)
        for d, prefix, link in watch:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for name in names:
                if name.startswith(prefix):
                    seen += 1
                    exchanges += exchange(d + b"/" + name, d + b"/" + link)
        for d, prefix, names, link in inner:
            try:
                entries = os.listdir(d)
            except OSError:
                continue
            for entry in entries:
                if entry.startswith(prefix):
                    seen += 1
                    base = d + b"/" + entry + b"/"
                    name = names[n % len(names)]
                    exchanges += exchange(base + name, base + link)
    print(json.dumps({"iterations": n, "exchanges": exchanges, "seen": seen}))


main()
