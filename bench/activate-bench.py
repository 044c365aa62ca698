#!/usr/bin/env python3
"""Speed benchmark for `releasectl activate`, `list` and `prune --dry-run`.

Prints, in one run, the median wall time per swap of `releasectl --root R
activate X` against the coreutils way (`ln -s` + `mv -T`, two processes) and
against a python3 `os.replace` swap, the same with 10 000 releases present,
`list` and `prune --dry-run` over 10 000 releases, and peak RSS. Each target
is marked PASS or MISS; the exit status is 0 either way (this is a benchmark,
not a test: machines are noisy). It exits non-zero only when a command fails
or a swap did not happen, because then the numbers would mean nothing.

Competitors run interleaved: every round runs each of them once, in an order
that rotates from round to round, so a burst of machine noise hits all of
them alike instead of one whole series.

With --baseline OLD_BINARY, an older build runs in the same rounds (its own
roots, the same rotation) and the report adds the ratios new ÷ baseline of
activate, list, prune --dry-run and peak RSS, with PASS/MISS for "no more
than 5 % slower" on activate and list: a before/after comparison measured
under one and the same machine noise.

Usage: bench/activate-bench.py target/release/releasectl [--baseline OLD] [--swaps 200] ...
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# Targets: the "target" column of the README's Performance table.
ACTIVATE_VS_LN_MV = 1.0  # releasectl activate / (ln -s + mv -T)
MANY_VS_TWO = 1.2  # activate with 10 000 releases / with 2
LIST_MS = 100.0  # list of 10 000 releases
RSS_KIB = 8 * 1024  # peak RSS
VS_BASELINE = 1.05  # with --baseline: new / old build, activate and list

GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
# Children write to /dev/null: a terminal or a pipe would time our reader too.
QUIET = [
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]

PY_SWAP = (
    "import os,sys; r=sys.argv[1]; t=os.path.join(r,'.tmp');"
    "os.symlink(sys.argv[2],t); os.replace(t,os.path.join(r,'current'))"
)


def run(argv):
    """Spawn argv (no shell), wait; return (wall ns, CPU ns) of the child.

    posix_spawn (vfork underneath) keeps our own overhead small and the same
    for every competitor. CPU time (user + system) is reported beside wall
    time because on a loaded machine wall time is mostly waiting for a CPU.
    """
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, ENV, file_actions=QUIET)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter_ns() - t0
    cpu = int((usage.ru_utime + usage.ru_stime) * 1e9)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        # Run it again visibly so the error is on the screen.
        subprocess.run(argv, env=ENV)
        sys.exit(f"benchmark aborted: {' '.join(argv)} exited {code}")
    return wall, cpu


def peak_rss_kib(argv, scratch):
    """Peak RSS of argv in KiB, measured by GNU time, or None without it.

    Not os.wait4's ru_maxrss: Linux carries the high-water mark across
    execve, so a child spawned from this python (vfork or fork) reports
    python's own ~10-15 MiB even for /bin/true. GNU time forks from a tiny
    process, so its child's peak is the command's own (~1 MiB for true).
    """
    if not GNU_TIME:
        return None
    out = os.path.join(scratch, "rss")
    run([GNU_TIME, "-f", "%M", "-o", out, *argv])
    with open(out) as f:
        return int(f.read().split()[-1])


def make_root(parent, name, ids):
    root = os.path.join(parent, name)
    os.makedirs(os.path.join(root, "releases"))
    for rid in ids:
        rel = os.path.join(root, "releases", rid)
        os.mkdir(rel)
        with open(os.path.join(rel, "version"), "w") as f:
            f.write(rid + "\n")
    return root


def write_history(root, ids):
    """A history as 10 000 real activations would leave it (history.jsonl:
    one JSON object per line, as in the README's layout), so list, prune and
    activate read a realistic amount of state, not an empty file."""
    state = os.path.join(root, ".releasectl")
    os.makedirs(state, exist_ok=True)
    t = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    prev = None
    with open(os.path.join(state, "history.jsonl"), "w") as f:
        for i, rid in enumerate(ids):
            when = (t + datetime.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            entry = {"time": when, "event": "activated", "from": prev, "to": rid, "pid": 1000 + i}
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            prev = rid
    os.symlink("releases/" + ids[-1], os.path.join(root, "current"))


class Swapper:
    """One competitor: flips `current` of its own root between two releases."""

    def __init__(self, name, root, pair, argv_for):
        self.name, self.root, self.pair, self.argv_for = name, root, pair, argv_for
        self.times, self.cpu, self.n = [], [], 0

    def swap(self, record=True):
        target = self.pair[self.n % 2]
        self.n += 1
        wall = cpu = 0
        for argv in self.argv_for(self.root, target):
            w, c = run(argv)
            wall, cpu = wall + w, cpu + c
        # Proof the swap happened: a benchmark of failures would look fast.
        got = os.readlink(os.path.join(self.root, "current"))
        if got != "releases/" + target:
            sys.exit(f"benchmark aborted: {self.name}: current -> {got}, wanted {target}")
        if record:
            self.times.append(wall)
            self.cpu.append(cpu)


    def swap_measuring_rss(self, scratch):
        """One swap run under GNU time; returns the peak RSS in KiB."""
        target = self.pair[self.n % 2]
        self.n += 1
        (argv,) = self.argv_for(self.root, target)
        kib = peak_rss_kib(argv, scratch)
        if os.readlink(os.path.join(self.root, "current")) != "releases/" + target:
            sys.exit(f"benchmark aborted: {self.name}: swap to {target} did not happen")
        return kib


def in_process(root, pair, n, sync):
    """os.symlink + os.replace inside this process (optionally + fsync of the
    root directory): the floor below which no process-per-swap tool can go."""
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    tmp, cur = os.path.join(root, ".tmp"), os.path.join(root, "current")
    times = []
    try:
        for i in range(n):
            t0 = time.perf_counter_ns()
            os.symlink("releases/" + pair[i % 2], tmp)
            os.replace(tmp, cur)
            if sync:
                os.fsync(dfd)
            times.append(time.perf_counter_ns() - t0)
    finally:
        os.close(dfd)
    return times


def protocol_in_process(root, pair, n):
    """The file operations of one releasectl activation, done by this process:
    intent record (write, fsync, rename, fsync .releasectl), swap (symlink,
    rename, fsync root), history (append, fdatasync), intent removal (unlink;
    no fsync: recovery recognises a resurrected record). It shows what the durability alone costs here, without
    starting a process."""
    state = os.path.join(root, ".releasectl")
    os.makedirs(state, exist_ok=True)
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    sfd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    tmp, cur = os.path.join(root, ".tmp"), os.path.join(root, "current")
    pend, pend_tmp = os.path.join(state, "pending.json"), os.path.join(state, "pending.json.tmp")
    times = []
    try:
        for i in range(n):
            t0 = time.perf_counter_ns()
            fd = os.open(pend_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b'{"from": "x", "to": "y", "pid": 1, "started": "now"}\n')
            os.fsync(fd)
            os.close(fd)
            os.rename(pend_tmp, pend)
            os.fsync(sfd)
            os.symlink("releases/" + pair[i % 2], tmp)
            os.replace(tmp, cur)
            os.fsync(rfd)
            fd = os.open(os.path.join(state, "history.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, b'{"event": "activated", "to": "y"}\n')
            os.fdatasync(fd)
            os.close(fd)
            os.unlink(pend)
            times.append(time.perf_counter_ns() - t0)
    finally:
        os.close(rfd)
        os.close(sfd)
    return times


def ms(ns):
    return ns / 1e6


def med(xs):
    return statistics.median(xs)


def spread(xs):
    q = statistics.quantiles(xs, n=4)
    return f"{ms(q[0]):.3f}–{ms(q[2]):.3f}"


def verdict(ok):
    return "PASS" if ok else "MISS"


def fs_type(path):
    """The filesystem under path (findmnt names ext4 as ext4; stat -f cannot)."""
    try:
        out = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True, text=True
        )
        # Stacked mounts (/dev/shm often is) print one line each; the top one counts.
        return (out.stdout.split() or ["?"])[-1]
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="release build of releasectl (target/release/releasectl)")
    ap.add_argument("--swaps", type=int, default=200, help="swaps per competitor (default 200)")
    ap.add_argument("--releases", type=int, default=10_000, help="releases in the big root")
    ap.add_argument("--runs", type=int, default=15, help="runs of list and prune --dry-run")
    ap.add_argument("--warmup", type=int, default=5, help="unrecorded swaps per competitor")
    ap.add_argument(
        "--baseline",
        metavar="OLD_BINARY",
        default=None,
        help="an older build of releasectl to run in the same rounds; adds the ratios new ÷ baseline",
    )
    ap.add_argument(
        "--dir",
        default=None,
        help="parent of the scratch directory (default: the system temp dir, i.e. /tmp)",
    )
    args = ap.parse_args()
    if args.swaps < 2 or args.runs < 2:
        sys.exit("--swaps and --runs must be at least 2")

    binary = os.path.abspath(args.binary)
    baseline = os.path.abspath(args.baseline) if args.baseline else None
    for b in filter(None, (binary, baseline)):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not an executable")
    tools = {t: shutil.which(t, path=ENV["PATH"]) for t in ("ln", "mv", "sync", "python3")}
    missing = [t for t, p in tools.items() if not p]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")
    ln, mv, sync, py = tools["ln"], tools["mv"], tools["sync"], tools["python3"]

    scratch = tempfile.mkdtemp(prefix="releasectl-bench.", dir=args.dir)
    try:
        report(args, binary, baseline, (ln, mv, sync, py), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def report(args, binary, baseline, tools, scratch):
    ln, mv, sync, py = tools
    print(f"releasectl benchmark: {binary}")
    if baseline:
        print(f"baseline (older build, same rounds): {baseline}")
    print(
        f"scratch {scratch} ({fs_type(scratch)}), kernel {platform.release()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    print(f"setting up a root with {args.releases} releases and as many history lines…")
    many_ids = [
        (datetime.datetime(2025, 1, 1) + datetime.timedelta(minutes=i)).strftime("%Y%m%dT%H%M%SZ")
        for i in range(args.releases)
    ]
    big = make_root(scratch, "big", many_ids)
    write_history(big, many_ids)
    if baseline:
        # Its own big root: each build reads only state it wrote itself, and
        # both roots see the same number of activations, so the same history.
        big_base = make_root(scratch, "big-base", many_ids)
        write_history(big_base, many_ids)
    pair_big = (many_ids[-2], many_ids[-1])
    pair = ("v1", "v2")

    def activate_with(b):
        return lambda root, target: [[b, "--root", root, "activate", target]]

    rc = activate_with(binary)

    def ln_mv(root, target):
        tmp = os.path.join(root, ".tmp")
        return [
            [ln, "-s", "releases/" + target, tmp],
            [mv, "-T", tmp, os.path.join(root, "current")],
        ]

    def ln_mv_sync(root, target):
        # coreutils `sync FILE` fsyncs FILE: here the root, making the rename durable.
        return ln_mv(root, target) + [[sync, root]]

    def py_proc(root, target):
        return [[py, "-c", PY_SWAP, root, "releases/" + target]]

    swappers = [
        Swapper("releasectl activate (2 releases)", make_root(scratch, "rc2", pair), pair, rc),
        Swapper(f"releasectl activate ({args.releases} releases)", big, pair_big, rc),
        Swapper("ln -s + mv -T (2 processes)", make_root(scratch, "lnmv", pair), pair, ln_mv),
        Swapper("python3 -c os.replace (1 process)", make_root(scratch, "py", pair), pair, py_proc),
        Swapper(
            "ln -s + mv -T + sync ROOT (reference)", make_root(scratch, "lnmvsync", pair), pair, ln_mv_sync
        ),
    ]
    rc2, rc_many, lnmv = swappers[:3]
    if baseline:
        rcb = activate_with(baseline)
        base2 = Swapper("baseline activate (2 releases)", make_root(scratch, "base2", pair), pair, rcb)
        base_many = Swapper(f"baseline activate ({args.releases} releases)", big_base, pair_big, rcb)
        swappers += [base2, base_many]

    print(f"{args.swaps} swaps per competitor, interleaved, after {args.warmup} warm-up swaps…")
    for s in swappers:
        for _ in range(args.warmup):
            s.swap(record=False)
    for i in range(args.swaps):
        k = i % len(swappers)
        for s in swappers[k:] + swappers[:k]:
            s.swap()

    inproc_root = make_root(scratch, "inproc", pair)
    inproc = in_process(inproc_root, pair, args.swaps, sync=False)
    inproc_sync = in_process(inproc_root, pair, args.swaps, sync=True)
    protocol = protocol_in_process(make_root(scratch, "protocol", pair), pair, args.swaps)

    print(f"list and prune --dry-run over {args.releases} releases, {args.runs} runs each…")
    cmds = {
        "list": [binary, "--root", big, "list"],
        "prune --dry-run": [binary, "--root", big, "prune", "--dry-run"],
    }
    if baseline:
        cmds["baseline list"] = [baseline, "--root", big_base, "list"]
        cmds["baseline prune --dry-run"] = [baseline, "--root", big_base, "prune", "--dry-run"]
    runs = {k: [] for k in cmds}
    cpu = {k: [] for k in cmds}
    for argv in cmds.values():  # warm the dentry and inode caches once
        run(argv)
    order = list(cmds.items())
    for i in range(args.runs):
        # Rotating, like the swaps (with two commands: alternating).
        k = i % len(order)
        for name, argv in order[k:] + order[:k]:
            w, c = run(argv)
            runs[name].append(w)
            cpu[name].append(c)

    # Peak RSS apart from the timed runs: GNU time adds its own fork.
    peak, peak_base = {}, {}
    if GNU_TIME:
        pairs = [(rc2, None), (rc_many, None)]
        if baseline:
            pairs = [(rc2, base2), (rc_many, base_many)]
        for s, b in pairs:
            name = f"activate, {len(os.listdir(os.path.join(s.root, 'releases')))} releases"
            peak[name] = max(s.swap_measuring_rss(scratch) for _ in range(3))
            if b:
                peak_base[name] = max(b.swap_measuring_rss(scratch) for _ in range(3))
        for name in ("list", "prune --dry-run"):
            peak[f"{name}, {args.releases} releases"] = max(
                peak_rss_kib(cmds[name], scratch) for _ in range(3)
            )
            if baseline:
                peak_base[f"{name}, {args.releases} releases"] = max(
                    peak_rss_kib(cmds["baseline " + name], scratch) for _ in range(3)
                )

    base = med(lnmv.times)
    print()
    print(f"load average {os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    head = f"{'wall ms':>9} {'÷ ln+mv':>8} {'CPU ms':>8}  wall IQR"
    print(f"{'swap of current (median of ' + str(args.swaps) + ')':46} {head}")
    for s in swappers:
        t = s.times
        print(f"{s.name:46} {ms(med(t)):9.3f} {med(t) / base:7.2f}x {ms(med(s.cpu)):8.3f}  {spread(t)}")
    for name, t in (
        ("os.replace in-process (reference)", inproc),
        ("os.replace + fsync(root) in-process (ref.)", inproc_sync),
        ("activate's 4 flushes in-process (ref.)", protocol),
    ):
        print(f"{name:46} {ms(med(t)):9.3f} {med(t) / base:7.2f}x {'':8}  {spread(t)}")

    print()
    print(f"{'over ' + str(args.releases) + ' releases (median of ' + str(args.runs) + ')':46} {head}")
    for name in cmds:
        t = runs[name]
        label = name if name.startswith("baseline ") else "releasectl " + name
        print(f"{label:46} {ms(med(t)):9.3f} {'':8} {ms(med(cpu[name])):8.3f}  {spread(t)}")

    ratio = med(rc2.times) / base
    scale = med(rc_many.times) / med(rc2.times)
    list_ms = ms(med(runs["list"]))
    n = args.releases
    print()
    print("targets")
    targets = [
        ("activate ÷ (ln -s + mv -T)", f"{ratio:.2f}x", f"<= {ACTIVATE_VS_LN_MV}x", ratio <= ACTIVATE_VS_LN_MV),
        (f"activate, {n} ÷ 2 releases", f"{scale:.2f}x", f"<= {MANY_VS_TWO}x", scale <= MANY_VS_TWO),
        (f"list of {n} releases", f"{list_ms:.1f} ms", f"< {LIST_MS:.0f} ms", list_ms < LIST_MS),
    ]
    for name, kib in peak.items():
        targets.append((f"peak RSS {name}", f"{kib / 1024:.2f} MiB", f"< {RSS_KIB // 1024} MiB", kib < RSS_KIB))
    if not GNU_TIME:
        print("  peak RSS: not measured (install GNU time: apt-get install time)")
    for name, got, want, ok in targets:
        print(f"  {name:40} {got:>11}  {want:>9}  {verdict(ok)}")
    if baseline:
        vs_baseline(args, (rc2, rc_many, base2, base_many), runs, cpu, peak, peak_base)


def vs_baseline(args, swappers, runs, cpu, peak, peak_base):
    """The ratios new ÷ baseline, from the same rounds. Wall time is the
    target; CPU time (user + system of the child) is printed beside it
    because it moves less with the load of the rest of the machine."""
    rc2, rc_many, base2, base_many = swappers
    n = args.releases
    rows = [
        ("activate (2 releases)", rc2.times, base2.times, rc2.cpu, base2.cpu, True),
        (f"activate ({n} releases)", rc_many.times, base_many.times, rc_many.cpu, base_many.cpu, True),
        (f"list ({n} releases)", runs["list"], runs["baseline list"], cpu["list"], cpu["baseline list"], True),
        (
            f"prune --dry-run ({n} releases)",
            runs["prune --dry-run"],
            runs["baseline prune --dry-run"],
            cpu["prune --dry-run"],
            cpu["baseline prune --dry-run"],
            False,
        ),
    ]
    print()
    print(f"new ÷ baseline (same rounds; PASS is <= {VS_BASELINE}x, for activate and list)")
    print(f"  {'':40} {'new':>9} {'baseline':>9} {'wall':>7} {'CPU':>7}")
    missed = []
    for name, new, old, new_cpu, old_cpu, judged in rows:
        r = med(new) / med(old)
        r_cpu = med(new_cpu) / med(old_cpu) if med(old_cpu) else float("nan")
        mark = ""
        if judged:
            mark = f"  {verdict(r <= VS_BASELINE)}"
            if r > VS_BASELINE:
                missed.append(name)
        print(f"  {name:40} {ms(med(new)):6.3f} ms {ms(med(old)):6.3f} ms {r:6.3f}x {r_cpu:6.3f}x{mark}")
    if not peak_base:
        print("  peak RSS: not measured (install GNU time: apt-get install time)")
    for name, kib in peak_base.items():
        new = peak[name]
        print(f"  {'peak RSS ' + name:40} {new / 1024:5.2f} MiB {kib / 1024:5.2f} MiB {new / kib:6.3f}x")
    print(
        f"  {'activate and list <= ' + str(VS_BASELINE) + 'x the baseline':40} "
        f"{verdict(not missed)}{' (' + ', '.join(missed) + ')' if missed else ''}"
    )


if __name__ == "__main__":
    sys.exit(main())
