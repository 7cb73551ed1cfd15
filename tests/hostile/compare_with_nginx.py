#!/usr/bin/env python3
"""Sends each request-smuggling shape as raw bytes to nginx (1.22, Debian's)
and to gatekeeper, both proxying to the same upstream, and fails if gatekeeper
is ever less strict: where nginx refuses, gatekeeper must refuse too, and a
request pipelined behind a refused one must never be served.

    python3 tests/hostile/compare_with_nginx.py target/debug/gatekeeper
"""
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

CASES = [
    ("CL+TE", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE+CL", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("double CL, different", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    ("double CL, equal", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"),
    ("TE: chunked, chunked", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("TE twice", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("space before colon", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("chunked + trailing space", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n"),
    ("chunked + trailing tab", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n"),
    ("TE gzip", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("TE gzip, chunked", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("HTTP/1.0 with TE", b"POST /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate Host", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("no Host", b"GET /a HTTP/1.1\r\n\r\n"),
    ("oversized header", b"GET /a HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 100_000 + b"\r\n\r\n"),
    ("NUL in header", b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
    ("bare CR in header", b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
    ("absolute-form, same host", b"GET http://a/a HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute-form, other host", b"GET http://b/a HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
    ("Upgrade: h2c", b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
    ("bare LF line endings", b"GET /a HTTP/1.1\nHost: a\n\n"),
    ("one bare LF", b"GET /a HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n"),
    ("CL+TE with bare LFs", b"POST /a HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n"),
    ("CL as a list", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab"),
    ("websocket without a key", b"GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
]
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def answer(self):
        Upstream.seen.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def exchange(port, wire):
    """The status codes answered, in order ('-' for none before close)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(2)
    try:
        s.sendall(wire + SMUGGLED)
    except OSError:
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    statuses = [line.split()[1].decode() for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.") and len(line.split()) > 1]
    return statuses or ["-"]


def refused(statuses):
    return statuses[0] == "-" or not statuses[0].startswith("2")


def main():
    gatekeeper = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/gatekeeper")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = tempfile.mkdtemp(prefix="gk-nginx-")
    up_port, nginx_port, gk_port = free_port(), free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream app {{ server 127.0.0.1:{up_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    with open(os.path.join(work, "gatekeeper.toml"), "w") as f:
        f.write(f'[server]\nhttp = "127.0.0.1:{gk_port}"\n[upstream]\nurl = "http://127.0.0.1:{up_port}"\n')
    procs = [
        subprocess.Popen([nginx, "-c", os.path.join(work, "nginx.conf"), "-p", work], stderr=subprocess.DEVNULL),
        subprocess.Popen([gatekeeper, "run", "-c", os.path.join(work, "gatekeeper.toml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_for(nginx_port)
        wait_for(gk_port)
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        print(f"{'case':28} {'nginx':12} {'gatekeeper':12} verdict   ({version})")
        worse = []
        for name, wire in CASES:
            n = exchange(nginx_port, wire)
            g = exchange(gk_port, wire)
            smuggled = len(g) > 1 and refused(g)
            if (refused(n) and not refused(g)) or smuggled:
                verdict = "LESS STRICT"
                worse.append(name)
            elif refused(g) and not refused(n):
                verdict = "stricter"
            else:
                verdict = "same"
            print(f"{name:28} {','.join(n):12} {','.join(g):12} {verdict}")
        if worse:
            sys.exit(f"gatekeeper is less strict than nginx on: {', '.join(worse)}")
        print("gatekeeper is at least as strict as nginx on every case")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
