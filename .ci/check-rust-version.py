#!/usr/bin/env python3
"""Cargo.toml's rust-version must be at least what every locked dependency
of the build declares: otherwise the promise is false for anyone building
with that toolchain. (clippy's incompatible_msrv lint covers our own code.)"""
import json
import subprocess
import sys


def version(v):
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.check_output(
        ["cargo", "metadata", "--locked", "--format-version", "1"], text=True
    )
)
ours = next(p for p in meta["packages"] if p["name"] == "releasectl")
declared = ours.get("rust_version")
if not declared:
    sys.exit("Cargo.toml declares no rust-version")
# Only what a build of the package pulls in (normal and build dependencies).
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
seen, todo = set(), [ours["id"]]
while todo:
    pid = todo.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in nodes[pid]["deps"]:
        if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
            todo.append(dep["pkg"])
packages = {p["id"]: p for p in meta["packages"]}
needs = max(
    ((version(packages[i]["rust_version"]), packages[i]["name"]) for i in seen
     if packages[i].get("rust_version")),
    default=((0,), "none"),
)
print(f"rust-version {declared}; the locked build dependencies need {'.'.join(map(str, needs[0]))} ({needs[1]})")
if version(declared) < needs[0]:
    sys.exit(f"rust-version {declared} is older than {needs[1]} allows")
