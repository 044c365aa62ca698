#!/usr/bin/env python3
"""A tiny HTTP app that takes part in a zero-downtime switch.

What any app (Go, Node, Python, Rust, JVM) must do, shown in ~80 lines:

1. Take its listening socket from systemd when it is given one
   (socket activation: LISTEN_PID is our pid, LISTEN_FDS >= 1, the socket
   is fd 3), and bind its own address only otherwise. A socket held by a
   .socket unit outlives every restart: connections that arrive while the
   new process starts wait in its backlog instead of being refused.
2. Tell systemd when it is ready (Type=notify, READY=1), so a restart or
   start job ends only once it answers, and a health gate does not race it.
3. On SIGTERM, stop accepting, finish the requests in flight, then exit:
   the old process of a blue/green switch drains instead of dropping them.

It answers every GET with "release ID", ID being the release directory it
runs from (its working directory, e.g. /srv/app/current -> releases/v2), so
a load test can tell which release answered. Without a socket from
systemd it listens on 127.0.0.1:PORT (or DEMO_PORT, or its first argument,
or 8080). DEMO_START_DELAY (seconds) makes it slow to start, like a real
app loading its code.
"""
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SD_LISTEN_FDS_START = 3


def inherited_socket():
    """The listener systemd passed (socket activation), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def notify(state):
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall(state.encode())


RELEASE = os.path.basename(os.path.realpath(os.getcwd()))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"release {RELEASE}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the requests in flight
    block_on_close = True


def main():
    sock = inherited_socket()
    time.sleep(float(os.environ.get("DEMO_START_DELAY", "0")))
    if sock is not None:
        server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    else:
        host = os.environ.get("DEMO_HOST", "127.0.0.1")
        default = sys.argv[1] if len(sys.argv) > 1 else "8080"
        port = int(os.environ.get("PORT") or os.environ.get("DEMO_PORT", default))
        server = Server((host, port), Handler)

    def drain(signum, frame):
        notify("STOPPING=1")
        # shutdown() waits for serve_forever to return: not from its thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, drain)
    notify(f"READY=1\nSTATUS=serving release {RELEASE}")
    server.serve_forever(poll_interval=0.05)
    # Joins the requests in flight. Closing our copy of an inherited
    # listener is harmless: the .socket unit keeps its own.
    server.server_close()


if __name__ == "__main__":
    main()
