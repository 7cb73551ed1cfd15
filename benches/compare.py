#!/usr/bin/env python3
"""gatekeeper against nginx (and against the upstream directly), in one run.

    python3 benches/compare.py            # builds the release binary first
    python3 benches/compare.py --quick    # 3 s per measurement instead of 10
    python3 benches/compare.py --binary PATH   # measure another build (A/B)

Starts a fast fixed-response upstream (nginx, 1 KiB answers), nginx as the
proxy to compare with (same certificate and TLS versions, HTTP/2, keep-alive
pool to the upstream, one worker per core), the GeeTest simulator, and
gatekeeper; then measures each scenario against each target alternately and
prints a table of figures and ratios, also written to target/bench/compare.md.
Needs Debian's nginx, wrk and nghttp2-client (h2load).
"""
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import http.client
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
BINARY = sys.argv[sys.argv.index("--binary") + 1] if "--binary" in sys.argv else None
DURATION = 3 if QUICK else 10
CAPTCHA_ID = "647f5ed2ed8acb4be36784e01556bb71"
CAPTCHA_KEY = "b09a7aafbfd83f73b35a9b530d0337bf"


# Each wrk thread keeps its own half of the minted proofs (one per line), so
# no proof is sent twice until they run out (then replays show up as non-2xx).
GATED_LUA = """
local form = "FORM"
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
local proofs = {}
local n = 0
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  local i = 0
  for line in io.lines("PROOFS") do
    if i % 2 == id then proofs[#proofs + 1] = line end
    i = i + 1
  end
end
function request()
  n = n + 1
  return wrk.format("POST", "/gated", headers, form .. "&" .. proofs[(n - 1) % #proofs + 1])
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on {port}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def wrk(url, script=None, conns=64):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{DURATION}s", "--latency", url]
    if script:
        cmd[1:1] = ["-s", script]
    out = run(cmd).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = parse_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_ms": p99, "non2xx": int(bad.group(1)) if bad else 0,
            "requests": int(total.group(1)) if total else 0, "errors": errors.group(1) if errors else ""}


def h2load(url):
    n = 20000 if QUICK else 100000
    out = run(["h2load", "-n", str(n), "-c", "8", "-m", "8", url]).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    ok = re.search(r"status codes: (\d+) 2xx", out)
    return {"rps": rps, "ok": int(ok.group(1)) if ok else 0}


def parse_ms(text):
    value = float(re.match(r"[\d.]+", text).group(0))
    unit = text[len(re.match(r"[\d.]+", text).group(0)):]
    return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def child_pids(pid):
    out = run(["pgrep", "-P", str(pid)]).stdout.split()
    return [pid] + [int(p) for p in out]


def latency(host, port, tls, path="/", n=1000, rate=200):
    """p50/p99 in ms of sequential keep-alive requests at a fixed low rate."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port)
    samples = []
    interval = 1.0 / rate
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        samples.append((time.perf_counter() - start) * 1000)
        rest = interval - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main():
    for tool in ["nginx", "wrk", "h2load"]:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is needed: apt-get install nginx-light wrk nghttp2-client")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if BINARY:
        gk_bin = os.path.abspath(BINARY)
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        gk_bin = os.path.join(ROOT, "target/release/gatekeeper")
    work = tempfile.mkdtemp(prefix="gk-bench-")
    procs = []
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        up, ngx, gk, sim = free_port(), free_port(), free_port(), free_port()
        body = "x" * 1024
        with open(f"{work}/nginx.conf", "w") as f:
            f.write(f"""
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log crit;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    keepalive_requests 1000000;
    upstream app {{ server 127.0.0.1:{up}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{up};
        location / {{ return 200 "{body}"; }}
    }}
    server {{
        listen 127.0.0.1:{ngx} ssl http2;
        ssl_certificate {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
""")
        with open(f"{work}/gatekeeper.toml", "w") as f:
            f.write(f"""
[server]
https = "127.0.0.1:{gk}"
[tls]
cert = "cert.pem"
key = "key.pem"
[upstream]
url = "http://127.0.0.1:{up}"
[limits]
max_connections = 20000
[geetest]
api_server = "http://127.0.0.1:{sim}"
[captcha.login]
id = "{CAPTCHA_ID}"
key = "{CAPTCHA_KEY}"
[replay]
max_entries = 5000000
[[route]]
path = "/gated"
""")
        start = time.perf_counter()
        procs.append(subprocess.Popen([nginx, "-c", f"{work}/nginx.conf", "-p", work]))
        procs.append(subprocess.Popen([gk_bin, "sim", "--listen", f"127.0.0.1:{sim}", "--captcha", f"{CAPTCHA_ID}:{CAPTCHA_KEY}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        gk_start = time.perf_counter()
        gk_proc = subprocess.Popen([gk_bin, "run", "-c", f"{work}/gatekeeper.toml"], env={**os.environ, "RUST_LOG": "warn"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gk_proc)
        wait_for(gk)
        startup_ms = (time.perf_counter() - gk_start) * 1000
        for p in (up, ngx, sim):
            wait_for(p)

        rows = []
        targets = {"gatekeeper": gk, "nginx": ngx}

        # 1. HTTPS HTTP/1.1 GET, 1 KiB, 64 keep-alive connections.
        r1 = {name: wrk(f"https://127.0.0.1:{port}/") for name, port in targets.items()}
        r1["direct"] = wrk(f"http://127.0.0.1:{up}/")
        rows.append(("1. HTTPS h1 GET 1 KiB, 64 conns (req/s)", r1["gatekeeper"]["rps"], r1["nginx"]["rps"], r1["direct"]["rps"]))
        rows.append(("1. p99 latency (ms)", r1["gatekeeper"]["p99_ms"], r1["nginx"]["p99_ms"], r1["direct"]["p99_ms"]))

        # 2. HTTPS HTTP/2 GET, 64 streams over 8 connections.
        r2 = {name: h2load(f"https://127.0.0.1:{port}/") for name, port in targets.items()}
        rows.append(("2. HTTPS h2 GET, 8 conns x 8 streams (req/s)", r2["gatekeeper"]["rps"], r2["nginx"]["rps"], None))

        # 3. HTTPS POST of a 2 KiB form, ungated.
        form = urllib.parse.urlencode({"user": "alice", "text": "y" * 2000})
        post_lua = f"{work}/post.lua"
        with open(post_lua, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = "{form}"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
        r3 = {name: wrk(f"https://127.0.0.1:{port}/form", post_lua) for name, port in targets.items()}
        rows.append(("3. HTTPS POST 2 KiB form, ungated (req/s)", r3["gatekeeper"]["rps"], r3["nginx"]["rps"], None))

        # 4. Gated POSTs, each with a fresh valid proof minted ahead of the run.
        conn = http.client.HTTPConnection("127.0.0.1", sim)
        def mint(count=None):
            more = f"&count={count}" if count else ""
            conn.request("POST", f"/_sim/mint?captcha_id={CAPTCHA_ID}{more}")
            return json.loads(conn.getresponse().read())
        # Enough that none runs out: scenario 4 is not faster than scenario 3.
        wanted = int(r3["gatekeeper"]["rps"] * DURATION * 1.5) + 1000
        proofs = f"{work}/proofs.txt"
        with open(proofs, "w") as f:
            while wanted > 0:
                batch = min(wanted, 50000)
                for proof in mint(batch):
                    f.write(urllib.parse.urlencode(proof) + "\n")
                wanted -= batch
        gated_lua = f"{work}/gated.lua"
        with open(gated_lua, "w") as f:
            f.write(GATED_LUA.replace("PROOFS", proofs).replace("FORM", form))
        conn.request("GET", "/_sim/stats")
        before = json.loads(conn.getresponse().read())
        r4 = wrk(f"https://127.0.0.1:{gk}/gated", gated_lua)
        conn.request("GET", "/_sim/stats")
        after = json.loads(conn.getresponse().read())
        validations = after["validations"] - before["validations"]
        new_conns = after["connections"] - before["connections"]
        passed = r4["rps"] * (1 - r4["non2xx"] / max(1, r4["requests"]))
        rows.append(("4. gated POST, fresh proof each (passed req/s)", passed, None, None))
        rows.append(("4. ratio to gatekeeper's scenario 3", passed / r3["gatekeeper"]["rps"], None, None))
        rows.append(("4. new validate connections per 1,000 validations", 1000 * new_conns / max(1, validations), None, None))

        # 5. Gated POSTs that are refused (replays of one used proof).
        proof = mint()
        replay = form + "&" + urllib.parse.urlencode(proof)
        replay_lua = f"{work}/replay.lua"
        with open(replay_lua, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = "{replay}"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
        r5 = wrk(f"https://127.0.0.1:{gk}/gated", replay_lua)
        rows.append(("5. gated POST, refused as replays (req/s)", r5["rps"], None, None))
        rows.append(("5. ratio to gatekeeper's scenario 3", r5["rps"] / r3["gatekeeper"]["rps"], None, None))

        # 6. Latency added at 200 req/s: p50 and p99 (ms), keep-alive.
        l_gk = latency("127.0.0.1", gk, True)
        l_ngx = latency("127.0.0.1", ngx, True)
        l_up = latency("127.0.0.1", up, False)
        rows.append(("6. p50 latency at 200 req/s (ms)", l_gk[0], l_ngx[0], l_up[0]))
        rows.append(("6. p99 latency at 200 req/s (ms)", l_gk[1], l_ngx[1], l_up[1]))

        # 7. Startup, binary size, idle resident memory.
        rows.append(("7. startup until listening (ms)", startup_ms, None, None))
        rows.append(("7. binary size (MB)", os.path.getsize(gk_bin) / 1e6, None, None))
        rows.append(("7. resident memory after the runs (MB)", rss_kb([gk_proc.pid]) / 1024,
                     rss_kb(child_pids(procs[0].pid)) / 1024, None))

        lines = [f"| scenario | gatekeeper | nginx | direct | gatekeeper / nginx |", "|---|---|---|---|---|"]
        for name, g, n, d in rows:
            fmt = lambda v: "" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")
            ratio = f"{g / n:.2f}" if (g is not None and n) else ""
            lines.append(f"| {name} | {fmt(g)} | {fmt(n)} | {fmt(d)} | {ratio} |")
        notes = [f"errors: gatekeeper {r1['gatekeeper']['errors'] or 'none'}, nginx {r1['nginx']['errors'] or 'none'}; "
                 f"scenario 5 non-2xx {r5['non2xx']} (all refusals expected)"]
        table = "\n".join(lines + [""] + notes)
        print(table)
        os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
        with open(os.path.join(ROOT, "target/bench/compare.md"), "w") as f:
            f.write(table + "\n")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
