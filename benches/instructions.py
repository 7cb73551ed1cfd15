#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: an A/B that load cannot skew.

    python3 benches/instructions.py target/release/gatekeeper [OTHER_BINARY ...]

Requests per second and CPU time follow whatever else the machine is doing;
valgrind's instruction count does not (the same binary, inputs and
environment give the same count). Each binary runs under
`valgrind --tool=callgrind` in front of a small fixed-response upstream and is
sent HTTPS HTTP/1.1 GETs (h2load --h1, 4 connections) to an ungated path, a
path that needs normalising, and HTTP/2 GETs; two request counts are run and
the difference divided, so start-up and TLS handshakes cancel out. Prints one
row per binary and scenario. Needs valgrind, h2load (nghttp2-client), openssl.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

LOW, HIGH = 300, 1300
SCENARIOS = [
    ("h1 GET /page", ["--h1"], "/page"),
    ("h1 GET //a/./b/%7ec (normalised)", ["--h1"], "//a/./b/%7ec"),
    ("h2 GET /page", [], "/page"),
]
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def upstream(port):
    """A keep-alive upstream answering every request head with 1 KiB."""
    server = socket.create_server(("127.0.0.1", port))

    def serve(conn):
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(ANSWER)

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def instructions(binary, config, port, h2load_args, path, n, out):
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "run", "-c", config],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    result = subprocess.run(
        ["h2load", *h2load_args, "-n", str(n), "-c", "4", f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True)
    if f"{n} succeeded" not in result.stdout and f"{n} 2xx" not in result.stdout:
        print(result.stdout[-600:], file=sys.stderr)
    proc.terminate()
    proc.wait()
    total = 0
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    return total


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    work = tempfile.mkdtemp(prefix="gk-instructions-")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem", "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True)
    up = free_port()
    upstream(up)
    print("| binary | scenario | instructions per request |")
    print("|---|---|---|")
    for binary in binaries:
        for name, args, path in SCENARIOS:
            port = free_port()
            config = f"{work}/gatekeeper.toml"
            with open(config, "w") as f:
                f.write(f"""
[server]
https = "127.0.0.1:{port}"
workers = 1
log_level = "warn"
[tls]
cert = "{work}/cert.pem"
key = "{work}/key.pem"
[upstream]
url = "http://127.0.0.1:{up}"
[captcha.login]
id = "647f5ed2ed8acb4be36784e01556bb71"
key = "b09a7aafbfd83f73b35a9b530d0337bf"
[[route]]
path = "/login"
""")
            low = instructions(binary, config, port, args, path, LOW, f"{work}/low.out")
            high = instructions(binary, config, port, args, path, HIGH, f"{work}/high.out")
            per_request = (high - low) / (HIGH - LOW)
            print(f"| {binary} | {name} | {per_request:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
