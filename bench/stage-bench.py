#!/usr/bin/env python3
"""Speed benchmark for `releasectl stage`.

Generates a tree like a real app (default 30 000 files, ~280 MB: many small
files and a few large ones, incompressible content), packs it as .tar.zst,
then measures in interleaved rounds (the order rotates each round, so
machine noise hits every competitor alike):

  stage .tar.zst   vs  tar --zstd -xf ARCHIVE && sync -f   (same archive)
  stage DIRECTORY  vs  cp -a DIR NEW && sync -f

Every competitor writes a new tree on the same file system and is made
durable the way releasectl makes it durable (one flush of the file
system); the page cache holds the source for all of them alike. Prints the
median wall time of each, the ratios releasectl / baseline, and the peak
RSS of staging. Exit status is 0 unless a command fails.

Then, as root with mkfs.xfs (else skipped, saying why), the dedup case on
an XFS image with reflink, loop-mounted: a release differing from the
current one in 1 % of its files (same sizes, one byte changed in each),
staged with `--dedup auto` (reflinks) vs `--dedup off` (a full stage of
the same tree), from the directory and from .tar.zst, and with `--dedup
hardlink` from the directory: medians of wall and CPU time, the ratios
dedup / full, and the new blocks each stage took (statvfs before and after,
flushed) as a share of the tree's size, with what they are made of.

Usage: bench/stage-bench.py target/release/releasectl [--files 30000] [--rounds 5] [--dir /var/tmp] [--dedup-only]
"""

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def make_tree(top, files, seed=7):
    """`files` files in directories of 50; sizes: mostly 1-16 KiB, every
    100th 1 MiB. Returns the total size in bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        d = os.path.join(top, f"d{i // 2500}", f"s{(i // 50) % 50}")
        os.makedirs(d, exist_ok=True)
        size = 1 << 20 if i % 100 == 99 else rng.randint(1024, 16384)
        with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
            f.write(os.urandom(size))
        total += size
    return total


def timed(argv, rss=False):
    """Wall seconds of argv, and with `rss` its peak RSS in KiB (GNU time)."""
    out = None
    if rss:
        out = tempfile.NamedTemporaryFile(mode="r", delete=False)
        argv = ["/usr/bin/time", "-f", "%M", "-o", out.name] + argv
    t = time.monotonic()
    subprocess.run(argv, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.monotonic() - t
    kib = 0
    if out is not None:
        kib = int(open(out.name).read().split()[-1])
        os.unlink(out.name)
    return wall, kib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--files", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--dedup-only", action="store_true",
                    help="skip the comparison with tar and cp on --dir; run only the dedup case")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    work = tempfile.mkdtemp(prefix="rctl-stage-bench-", dir=a.dir)
    try:
        src = os.path.join(work, "src")
        os.mkdir(src)
        size = make_tree(src, a.files)
        archive = os.path.join(work, "app.tar.zst")
        subprocess.run(["tar", "--zstd", "-cf", archive, "-C", src, "."], check=True, env=ENV)
        root = os.path.join(work, "root")
        out = os.path.join(work, "out")
        os.makedirs(root)
        os.makedirs(out)
        print(f"tree: {a.files} files, {size / 1e6:.0f} MB; archive {os.path.getsize(archive) / 1e6:.0f} MB; "
              f"{a.rounds} rounds on {a.dir}")
        results = {k: [] for k in ["stage_zst", "tar_sync", "stage_dir", "cp_sync"]}
        rss = []
        n = 0

        def run_one(kind):
            nonlocal n
            n += 1
            if kind == "stage_zst":
                w, r = timed([binary, "-q", "--root", root, "stage", archive, "--id", f"z{n}"], True)
                rss.append(r)
            elif kind == "stage_dir":
                w, r = timed([binary, "-q", "--root", root, "stage", src, "--id", f"d{n}"], True)
                rss.append(r)
            elif kind == "tar_sync":
                dst = os.path.join(out, f"t{n}")
                os.mkdir(dst)
                w, _ = timed(["sh", "-c", 'tar --zstd -xf "$1" -C "$2" && sync -f "$2"', "-", archive, dst])
            else:
                dst = os.path.join(out, f"c{n}")
                w, _ = timed(["sh", "-c", 'cp -a "$1" "$2" && sync -f "$2"', "-", src, dst])
            results[kind].append(w)

        kinds = list(results)
        if a.dedup_only:
            dedup_case(binary, work, src, size, a)
            return
        run_one("tar_sync")  # warm the caches once, unmeasured
        results["tar_sync"].clear()
        for rnd in range(a.rounds):
            order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]
            for k in order:
                run_one(k)
            # Keep the disk from filling: remove this round's trees.
            for d in (os.path.join(root, "releases"), out):
                shutil.rmtree(d, ignore_errors=True)
            os.makedirs(out, exist_ok=True)
            subprocess.run(["sync", "-f", work], check=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        for k, v in med.items():
            print(f"  {k:10} median {v:6.2f} s   ({', '.join(f'{x:.2f}' for x in results[k])})")
        print(f"stage .tar.zst / (tar --zstd -xf && sync -f): {med['stage_zst'] / med['tar_sync']:.2f}x")
        print(f"stage DIR      / (cp -a && sync -f):          {med['stage_dir'] / med['cp_sync']:.2f}x")
        print(f"peak RSS of staging: {max(rss) / 1024:.1f} MiB")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        dedup_case(binary, work, src, size, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fs_usage(path):
    """Bytes and inodes in use on the file system of `path`, flushed."""
    subprocess.run(["sync", "-f", path], check=True)
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree


def quiesce(mnt):
    """Flush the file system and let it finish deferred work (XFS frees a
    removed file's inode and extents in the background, after `rm` has
    returned): freezing it drains that, so the removal of one round's
    release is not billed to the next stage measured."""
    subprocess.run(["sync", "-f", mnt], check=True)
    if shutil.which("fsfreeze"):
        frozen = subprocess.run(["fsfreeze", "-f", mnt], stderr=subprocess.DEVNULL).returncode == 0
        if frozen:
            subprocess.run(["fsfreeze", "-u", mnt], check=True)


def cpu_of(argv):
    """Wall seconds, CPU seconds (user + system, children) and peak RSS of argv."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, kib = timed(argv, True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, kib


def dedup_case(binary, work, src, size, a):
    """1 % of the files changed, staged with reflinks vs in full, on XFS."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        print("dedup case skipped: needs root and mkfs.xfs (xfsprogs) for an XFS loop image")
        return
    src2 = os.path.join(work, "src2")
    subprocess.run(["cp", "-a", src, src2], check=True)
    names = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(src2) for f in fs)
    rng = random.Random(11)
    changed = rng.sample(names, max(1, len(names) // 100))
    changed_bytes = 0
    for p in changed:
        with open(p, "r+b") as f:
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 0xFF]))
        changed_bytes += -(-os.path.getsize(p) // 4096) * 4096
    archive2 = os.path.join(work, "app2.tar.zst")
    subprocess.run(["tar", "--zstd", "-cf", archive2, "-C", src2, "."], check=True, env=ENV)
    img, mnt = os.path.join(work, "xfs.img"), os.path.join(work, "xfs")
    os.mkdir(mnt)
    with open(img, "wb") as f:
        f.truncate(max(2 << 30, 4 * size))
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", img], check=True)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    info = subprocess.run(["xfs_info", mnt], capture_output=True, text=True).stdout
    isize = int(info.split("isize=")[1].split()[0]) if "isize=" in info else 0
    try:
        root = os.path.join(mnt, "root")
        os.mkdir(root)
        q = [binary, "-q", "--root", root]
        subprocess.run(q + ["stage", src, "--id", "base"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(q + ["activate", "base", "--no-reload", "--no-health"], check=True)
        # full_*: --dedup off, the same tree written in full; dedup_*:
        # --dedup auto (reflinks here); link_dir: --dedup hardlink, which
        # creates no inode for an unchanged file (the floor of per-file work).
        modes = {"full_dir": "off", "dedup_dir": "auto", "link_dir": "hardlink",
                 "full_zst": "off", "dedup_zst": "auto"}
        res = {k: [] for k in modes}
        cpu = {k: [] for k in modes}
        grew = {k: [] for k in modes}
        inodes = {k: [] for k in modes}
        record = {k: [] for k in modes}
        rss = []
        kinds = list(modes)
        for rnd in range(max(3, a.rounds)):
            # Rotate, and reverse every other round, so that no kind always
            # follows the same one.
            order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]
            if rnd % 2:
                order.reverse()
            for k in order:
                id_ = f"{k}-{rnd}"
                source = src2 if k.endswith("dir") else archive2
                quiesce(mnt)
                before, ino_before = fs_usage(mnt)
                w, c, r = cpu_of(q + ["stage", source, "--id", id_, "--dedup", modes[k]])
                res[k].append(w)
                cpu[k].append(c)
                after, ino_after = fs_usage(mnt)
                grew[k].append((after - before) / size)
                inodes[k].append(ino_after - ino_before)
                record[k].append(os.path.getsize(os.path.join(root, "releases", ".staged", id_)))
                if modes[k] != "off":
                    rss.append(r)
                shutil.rmtree(os.path.join(root, "releases", id_))
                os.unlink(os.path.join(root, "releases", ".staged", id_))
        med = {k: statistics.median(v) for k, v in res.items()}
        mcpu = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"dedup: {len(changed)} of {len(names)} files changed (1 %), XFS reflink=1 loop image")
        for k, v in med.items():
            print(f"  {k:10} median {v:6.2f} s  CPU {mcpu[k]:5.2f} s  new blocks "
                  f"{100 * statistics.median(grew[k]):6.2f} %   ({', '.join(f'{x:.2f}' for x in res[k])})")
        for what, full, ded in (("DIR, reflink", "full_dir", "dedup_dir"),
                                ("DIR, hardlink", "full_dir", "link_dir"),
                                (".tar.zst, reflink", "full_zst", "dedup_zst")):
            print(f"stage {what:18} / full: {med[ded] / med[full]:.2f}x wall, "
                  f"{mcpu[ded] / mcpu[full]:.2f}x CPU")
        g = grew["dedup_dir"]
        print(f"new blocks of a dedup (reflink) stage: median {100 * statistics.median(g):.2f} % "
              f"of the tree (max {100 * max(g):.2f} %)")
        n_ino = statistics.median(inodes["dedup_dir"])
        print(f"  of which: changed files' data {100 * changed_bytes / size:.2f} %, "
              f"{n_ino:.0f} new inodes x {isize} B = {100 * n_ino * isize / size:.2f} %, "
              f"staging record (manifest) {100 * statistics.median(record['dedup_dir']) / size:.2f} %, "
              f"the rest (directories' blocks, btrees) "
              f"{100 * (statistics.median(g) - (changed_bytes + n_ino * isize + statistics.median(record['dedup_dir'])) / size):.2f} %")
        print(f"new blocks of a hardlink stage: median {100 * statistics.median(grew['link_dir']):.2f} %")
        print(f"peak RSS of dedup staging: {max(rss) / 1024:.1f} MiB")
    finally:
        subprocess.run(["umount", mnt], check=False)


if __name__ == "__main__":
    sys.exit(main())
