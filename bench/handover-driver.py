#!/usr/bin/env python3
"""Inside a booted container: switch an app N times under load, per mode,
and print failed/total and latency per mode. Run by handover-bench.sh.

Load: CLIENTS paced clients, each a new connection per request every
PACE seconds, a 2 s timeout; an answer counts as good only with status 200
and a body naming a release that is staged (never one that is not).
Failures are counted by kind: refused, reset, timeout, non-200, wrong body.
"""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

SWITCHES = int(os.environ.get("SWITCHES", "10"))
CLIENTS = int(os.environ.get("CLIENTS", "4"))
PACE = float(os.environ.get("PACE", "0.01"))


class Load:
    def __init__(self, port, releases):
        self.port = port
        self.releases = {f"release {r}" for r in releases}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies = []
        self.failures = {}
        self.total = 0
        self.threads = [threading.Thread(target=self.client) for _ in range(CLIENTS)]

    def fail(self, kind):
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1

    def client(self):
        while not self.stop.is_set():
            start = time.monotonic()
            with self.lock:
                self.total += 1
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode().strip()
                conn.close()
                if resp.status != 200:
                    self.fail(f"status {resp.status}")
                elif body not in self.releases:
                    self.fail("wrong body")
                else:
                    with self.lock:
                        self.latencies.append(time.monotonic() - start)
            except ConnectionRefusedError:
                self.fail("refused")
            except ConnectionResetError:
                self.fail("reset")
            except (socket.timeout, TimeoutError):
                self.fail("timeout")
            except Exception as e:  # anything else is a failure too
                self.fail(type(e).__name__)
            left = PACE - (time.monotonic() - start)
            if left > 0:
                time.sleep(left)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def report(self, name):
        failed = sum(self.failures.values())
        lat = sorted(self.latencies) or [0.0]
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "-"
        print(f"{name:<28} failed {failed:>5} of {self.total:>6}  p50 {p(0.5):7.1f} ms  "
              f"p99 {p(0.99):7.1f} ms  max {lat[-1]*1000:7.1f} ms  ({kinds})", flush=True)
        return failed, self.total, p(0.5), p(0.99)


def run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def mode(name, port, switch):
    releases = [f"v{i}" for i in range(0, SWITCHES + 1)]
    took = []
    time.sleep(1)
    with Load(port, releases) as load:
        time.sleep(1)  # steady state first
        for i in range(1, SWITCHES + 1):
            start = time.monotonic()
            switch(f"v{i}")
            took.append(time.monotonic() - start)
            time.sleep(0.5)
        time.sleep(1)
    result = load.report(name)
    # How long a switch takes to return (for blue/green: start, gate,
    # front, drain, stop), the median over the switches.
    took.sort()
    median = took[len(took) // 2]
    print(f"{'':28} a switch takes {median:.2f} s (median)", flush=True)
    return result + (median,)


def plain(rel):
    run(["sh", "-c", f"ln -sfn releases/{rel} /srv/plain/.tmp && mv -T /srv/plain/.tmp /srv/plain/current"])
    run(["systemctl", "restart", "plain.service"])


def releasectl(app):
    """Odd switches from the command line, even ones as `systemctl start
    deploy@APP:REL`: the handover must hold through both entry points."""
    def switch(rel):
        if int(rel[1:]) % 2:
            run(["releasectl", "-q", "activate", f"{app}:{rel}"])
        else:
            run(["systemctl", "start", f"deploy@{app}:{rel}"])
    return switch


if __name__ == "__main__":
    which = sys.argv[1:] or ["plain", "restart", "socket", "bluegreen"]
    print(f"{SWITCHES} switches per mode; {CLIENTS} clients, a new connection every "
          f"{PACE*1000:.0f} ms each, 2 s timeout", flush=True)
    results = {}
    if "plain" in which:
        results["plain"] = mode("systemctl restart (baseline)", 9401, plain)
    if "restart" in which:
        results["restart"] = mode("releasectl, action=restart", 9402, releasectl("restart"))
    if "socket" in which:
        results["socket"] = mode("releasectl, socket handover", 9403, releasectl("socket"))
    if "bluegreen" in which:
        results["steady"] = mode("blue/green, no switch (steady)", 9410, lambda rel: None)
        results["bluegreen"] = mode("releasectl, blue/green", 9410, releasectl("bg"))
    # For the system test that runs this driver: one line per mode.
    for key, (failed, total, p50, p99, switch) in results.items():
        print(f"RESULT {key} failed={failed} total={total} p50_ms={p50:.1f} p99_ms={p99:.1f} "
              f"switch_s={switch:.2f}")
