#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: an A/B that load cannot skew.

    python3 benches/instructions.py target/release/gatekeeper [OTHER_BINARY ...]

Requests per second and CPU time follow whatever else the machine is doing;
valgrind's instruction count does not (the same binary, inputs and
environment give the same count). Each binary runs under
`valgrind --tool=callgrind` in front of a small fixed-response upstream and is
sent HTTPS HTTP/1.1 GETs (h2load --h1, 4 connections) to an ungated path, a
path that needs normalising, and HTTP/2 GETs; then HTTPS HTTP/1.1 POSTs of a
2 KiB form (4 keep-alive connections), ungated and gated, each gated one with
a fresh proof from the binary's own simulator (not under valgrind: GeeTest's
work is not gatekeeper's); then scenario 5's three answers to a gated POST
that will not pass: the same proof replayed (403), no proof from a script
(403 JSON), and no proof from a browser (the challenge page, its request
kept). Two request counts are run and the difference
divided, so start-up and TLS handshakes cancel out. Prints one row per binary
and scenario. Needs valgrind, h2load (nghttp2-client), openssl.
"""
import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

LOW, HIGH = 300, 1300
SCENARIOS = [
    ("h1 GET /page", ["--h1"], "/page"),
    ("h1 GET //a/./b/%7ec (normalised)", ["--h1"], "//a/./b/%7ec"),
    ("h2 GET /page", [], "/page"),
]
FORM = urllib.parse.urlencode({"user": "alice", "text": "y" * 2000})
POSTS = [
    ("h1 POST 2 KiB form, ungated", "/form"),
    ("h1 POST 2 KiB form, gated, a fresh proof each", "/login"),
]
BROWSER = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
SCRIPT = {"Accept": "application/json"}
# Scenario 5: (name, headers, whether the form carries a proof already spent).
REFUSED = [
    ("h1 POST 2 KiB form, gated, refused as a replay", SCRIPT, True),
    ("h1 POST 2 KiB form, no proof, from a script: 403 JSON", SCRIPT, False),
    ("h1 POST 2 KiB form, no proof, from a browser: challenge page", BROWSER, False),
]
CAPTCHA_ID = "647f5ed2ed8acb4be36784e01556bb71"
CAPTCHA_KEY = "b09a7aafbfd83f73b35a9b530d0337bf"
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


def upstream(port, answer=ANSWER):
    """A keep-alive upstream answering every request (head and
    Content-Length body) with `answer`, by default 1 KiB of text."""
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
                    head, rest = buf.split(b"\r\n\r\n", 1)
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    length = int(length.group(1)) if length else 0
                    if len(rest) < length:
                        break
                    buf = rest[length:]
                    conn.sendall(answer)

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def h2load(port, args, path, n):
    """Sends n GETs with h2load; returns a failure report or None."""
    result = subprocess.run(
        ["h2load", *args, "-n", str(n), "-c", "4", f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True)
    if f"{n} succeeded" not in result.stdout and f"{n} 2xx" not in result.stdout:
        return result.stdout[-600:]
    return None


def posts(port, path, bodies, conns=4, headers=None, expect=200):
    """POSTs each body as a form over `conns` keep-alive connections; returns
    a failure report (an answer whose status is not `expect`) or None."""
    context = ssl._create_unverified_context()
    statuses = []
    headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}

    def send(share):
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        for body in share:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()

    threads = [threading.Thread(target=send, args=(bodies[i::conns],)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wrong = [s for s in statuses if s != expect]
    return f"{len(wrong)} of {len(bodies)} not {expect}: {sorted(set(wrong))}" if wrong else None


def refused(port, body, n, headers, spend=False):
    """POSTs `body` (a list of one) to /login n times, each to be refused with
    a 403; with `spend`, passes it once first, so that the n are replays.
    Returns a failure report or None."""
    return (spend and posts(port, "/login", body, headers=headers)) or posts(
        port, "/login", body * n, headers=headers, expect=403)


def instructions(binary, config, port, load, out):
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "run", "-c", config],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    failure = load()
    if failure:
        print(failure, file=sys.stderr)
    proc.terminate()
    proc.wait()
    total = 0
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    return total


def minted(sim_port, count):
    """Fresh proofs from the simulator, as form bodies after FORM."""
    conn = http.client.HTTPConnection("127.0.0.1", sim_port)
    conn.request("POST", f"/_sim/mint?captcha_id={CAPTCHA_ID}&count={count}")
    proofs = json.loads(conn.getresponse().read())
    return [FORM + "&" + urllib.parse.urlencode(proof) for proof in proofs]


def workdir(prefix):
    """A scratch directory holding a fresh self-signed certificate."""
    work = tempfile.mkdtemp(prefix=prefix)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem", "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True)
    return work


def simulator(binary):
    """The binary's own simulator, started on a free port: (process, port)."""
    port = free_port()
    proc = subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{port}", "--captcha",
                             f"{CAPTCHA_ID}:{CAPTCHA_KEY}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    return proc, port


def write_config(work, port, up, sim, extra=""):
    """work/gatekeeper.toml: HTTPS on `port` with one worker, upstream `up`,
    the simulator `sim` as GeeTest, /login gated, then `extra`. Its path."""
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
[geetest]
api_server = "http://127.0.0.1:{sim}"
[captcha.login]
id = "{CAPTCHA_ID}"
key = "{CAPTCHA_KEY}"
[[route]]
path = "/login"
{extra}""")
    return config


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    work = workdir("gk-instructions-")
    up = free_port()
    upstream(up)
    print("| binary | scenario | instructions per request |")
    print("|---|---|---|")
    for binary in binaries:
        sim_proc, sim = simulator(binary)
        loads = [(name, lambda port, n, args=args, path=path: h2load(port, args, path, n))
                 for name, args, path in SCENARIOS]
        loads += [(name, lambda port, n, path=path: posts(
            port, path, minted(sim, n) if path == "/login" else [FORM] * n)) for name, path in POSTS]
        loads += [(name, lambda port, n, headers=headers, replay=replay: refused(
            port, minted(sim, 1) if replay else [FORM], n, headers, spend=replay))
            for name, headers, replay in REFUSED]
        for name, load in loads:
            port = free_port()
            config = write_config(work, port, up, sim)
            low = instructions(binary, config, port, lambda: load(port, LOW), f"{work}/low.out")
            high = instructions(binary, config, port, lambda: load(port, HIGH), f"{work}/high.out")
            per_request = (high - low) / (HIGH - LOW)
            print(f"| {binary} | {name} | {per_request:,.0f} |", flush=True)
        sim_proc.terminate()
        sim_proc.wait()


if __name__ == "__main__":
    main()
