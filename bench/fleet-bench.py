#!/usr/bin/env python3
"""Wall time of a fleet rollout: releasectl.fleet.rollout against the
ansistrano-style play most users run, on the same hosts, in interleaved
rounds.

The hosts, the inventory, the Ansible config and the installed collection
come from the caller (normally the ignored test `fleet::bench`, which boots
three systemd-nspawn hosts and runs this script):

    cargo test --test it fleet::bench -- --ignored --nocapture

Competitors, each round in alternating order:

  rollout   ansible-playbook releasectl.fleet.rollout with a new release id:
            copy the artifact, stage it on every host (phase 1), then switch
            batch by batch [1, 30%, 100%] with releasectl's reload and health
            check (phase 2).
  baseline  serial: 1, ansible.builtin.file state=link of `current` to a
            release directory copied there beforehand (not timed), then
            ansible.builtin.systemd name=nginx state=reloaded. Its own root
            (/srv/plain), so it never disturbs releasectl's.

Printed: the median wall time of each (and the spread), the ratio
rollout / baseline, and the per-host overhead (the difference divided by
the number of hosts). Numbers only; nothing is asserted.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

BASELINE = """\
- name: Ansistrano-style switch
  hosts: all
  gather_facts: false
  serial: 1
  tasks:
    - name: Point current at the copied release
      ansible.builtin.file:
        src: "/srv/plain/releases/{{ release }}"
        dest: /srv/plain/current
        state: link
        force: true
    - name: Reload nginx
      ansible.builtin.systemd:
        name: nginx
        state: reloaded
"""

PRECOPY = """\
- name: Copy a release for the baseline (not timed)
  hosts: all
  gather_facts: false
  tasks:
    - name: Release directory
      ansible.builtin.file:
        path: "/srv/plain/releases/{{ release }}"
        state: directory
        mode: "0755"
    - name: Unpack the artifact
      ansible.builtin.unarchive:
        src: "{{ artifact }}"
        dest: "/srv/plain/releases/{{ release }}"
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", required=True, help="venv holding ansible-playbook")
    p.add_argument("--config", required=True, help="ansible.cfg (names the inventory)")
    p.add_argument("--app", default="web")
    p.add_argument("--hosts", type=int, default=3, help="hosts in the inventory")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="fleet-bench-")
    env = {
        "PATH": os.path.join(args.venv, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": work,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_CONFIG": os.path.abspath(args.config),
    }
    playbook = os.path.join(args.venv, "bin", "ansible-playbook")
    for name, text in (("baseline.yml", BASELINE), ("precopy.yml", PRECOPY)):
        with open(os.path.join(work, name), "w") as f:
            f.write(text)

    def artifact(release):
        path = os.path.join(work, release + ".tar.gz")
        src = os.path.join(work, "src-" + release)
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "index.html"), "w") as f:
            f.write("release %s;\n" % release)
        with tarfile.open(path, "w:gz") as t:
            t.add(os.path.join(src, "index.html"), arcname="index.html")
        return path

    def play(argv):
        start = time.monotonic()
        r = subprocess.run([playbook] + argv, env=env, cwd=work,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        took = time.monotonic() - start
        if r.returncode != 0:
            sys.exit("ansible-playbook %s failed (%d):\n%s" % (" ".join(argv), r.returncode, r.stdout[-4000:]))
        return took

    def rollout(release):
        vars_file = os.path.join(work, "vars-%s.json" % release)
        with open(vars_file, "w") as f:
            json.dump({"releasectl_app": args.app, "releasectl_artifact": artifact(release),
                       "releasectl_release": release}, f)
        return play(["releasectl.fleet.rollout", "-e", "@" + vars_file])

    def baseline(release):
        extra = ["-e", "release=%s" % release, "-e", "artifact=%s" % artifact(release)]
        play([os.path.join(work, "precopy.yml")] + extra)
        return play([os.path.join(work, "baseline.yml")] + extra)

    # Warm-up: the first release on every host, ssh control masters, caches.
    rollout("bench-warm")
    baseline("bench-warm")

    times = {"rollout": [], "baseline": []}
    stamp = time.strftime("%H%M%S")
    for i in range(args.rounds):
        order = [("rollout", rollout), ("baseline", baseline)]
        if i % 2:
            order.reverse()
        for name, fn in order:
            t = fn("bench-%s-%d" % (stamp, i))
            times[name].append(t)
            print("round %d %-8s %6.2f s" % (i + 1, name, t), flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["rollout"] / med["baseline"]
    per_host = (med["rollout"] - med["baseline"]) / args.hosts
    print()
    print("%d hosts, %d rounds (median, min-max):" % (args.hosts, args.rounds))
    for k in ("rollout", "baseline"):
        print("  %-8s %6.2f s  (%.2f-%.2f)" % (k, med[k], min(times[k]), max(times[k])))
    print("  ratio rollout/baseline   %.2fx" % ratio)
    print("  overhead per host        %.2f s" % per_host)
    if args.json:
        print(json.dumps({"hosts": args.hosts, "rounds": args.rounds, "times": times,
                          "median": med, "ratio": ratio, "per_host_overhead": per_host}))


if __name__ == "__main__":
    main()
