#!/usr/bin/env python3
"""The differential suite: real application frameworks behind gatekeeper.

    python3 tests/differential/run.py target/debug/gatekeeper [--apps flask,nginx]
                                      [--only path,method] [-v]

For each app (Flask/Werkzeug, Starlette/uvicorn, Express 4, nginx, PHP's
built-in server) it starts the app, a gatekeeper in front of it and one GeeTest
simulator, then sends every variant (paths, hosts, methods, overrides, upgrades,
framing, hop-by-hop headers, bodies) as raw bytes over HTTP/1.1 on TLS (and on
the cleartext listener for framing) and with the `h2` package over HTTP/2, with
every client-side normalisation off. Each protected handler appends one JSON
line to $DIFF_LOG; the one invariant is that no protected handler ever runs
without `X-Gatekeeper-Captcha: pass`. Controls check that a valid proof still
reaches the handler with the marker. One line per failure, then
`N passed, N failed`; exit 1 on any failure.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTCHA_ID = "3c1e8a0b9d2f4e6a8b0c2d4e6f8a0b1c"
CAPTCHA_KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
PROTECTED = {"login", "admin", "search", "api"}
ADMIN_HOST = "www.example.com"
READ_TIMEOUT = 3.0
# A second response (smuggled, tunnelled, pipelined) that has not come by then never will.
SECOND_READ_TIMEOUT = 1.2

ROUTES = """
[[route]]
path = "/login"
methods = ["POST"]
[[route]]
path = "/admin"
host = "www.example.com"
methods = ["POST"]
[[route]]
path = "/search"
methods = ["GET"]
[[route]]
prefix = "/api/"
methods = ["POST"]
"""


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, proc, what, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what}: nothing listens on {port} after {timeout:.0f}s")


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_cert(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    if shutil.which("openssl"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
             "-addext", f"subjectAltName=DNS:localhost,DNS:{ADMIN_HOST},IP:127.0.0.1"],
            check=True, capture_output=True)
        return cert, key
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(pk.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(hours=1))
           .not_valid_after(now + datetime.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName([
               x509.DNSName("localhost"), x509.DNSName(ADMIN_HOST),
               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
           .sign(pk, hashes.SHA256()))
    with open(cert, "wb") as f:
        f.write(crt.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    return cert, key


def nginx_config(work, port, log):
    def location(match, handler, methods):
        allowed = "|".join(methods)
        return f"""
        location {match} {{
            set $diff_handler {handler};
            if ($request_method !~ ^({allowed})$) {{ return 405; }}
            access_log {log} diff if=$diff_ran;
            return 200 "{'public' if handler == 'public' else 'protected:' + handler}";
        }}"""

    common = "".join([
        location("= /login", "login", ["POST"]),
        location("= /search", "search", ["GET", "HEAD"]),
        location("^~ /api/", "api", ["POST"]),
        location("= /", "public", ["GET", "HEAD"]),
        location("= /public", "public", ["GET", "HEAD"]),
        "\n        location / { return 404; }",
    ])
    fields = {
        "app": "nginx", "handler": "$diff_handler", "method": "$request_method", "path": "$uri",
        "marker": "$http_x_gatekeeper_captcha", "variant": "$http_x_diff_variant",
        "content_type": "$content_type", "request_id": "$http_x_request_id", "host": "$host",
    }
    line = "{" + ",".join(f'"{k}":"{v}"' for k, v in fields.items()) + ',"body":null}'
    temp = "\n".join(f"    {t}_temp_path {work}/{t};" for t in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
{temp}
    access_log off;
    log_format diff escape=json '{line}';
    map $status $diff_ran {{ 200 1; default 0; }}
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name _;{common}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name {ADMIN_HOST};{location("= /admin", "admin", ["POST"])}{common}
    }}
}}
"""


def app_command(app, port, work, log):
    """(argv, cwd) that starts `app` on `port`."""
    apps = os.path.join(HERE, "apps")
    if app == "flask":
        return [sys.executable, os.path.join(apps, "flask_app.py"), str(port)], apps
    if app == "starlette":
        return [sys.executable, os.path.join(apps, "starlette_app.py"), str(port)], apps
    if app == "express":
        return ["node", "app.js", str(port)], os.path.join(HERE, "express")
    if app == "php":
        return ["php", "-S", f"127.0.0.1:{port}", os.path.join(apps, "router.php")], apps
    if app == "nginx":
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_config(work, port, log))
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf, "-p", work], work
    raise ValueError(app)


def gatekeeper_config(cert, key, https, http, app_port, sim_port):
    return f"""
[server]
https = "127.0.0.1:{https}"
http = "127.0.0.1:{http}"
log_level = "warn"
workers = 1

[tls]
cert = "{cert}"
key = "{key}"

[upstream]
url = "http://127.0.0.1:{app_port}"
connect_timeout = "2s"
timeout = "5s"

[limits]
header_read_timeout = "5s"

[geetest]
api_server = "http://127.0.0.1:{sim_port}"
timeout = "2s"
on_error = "deny"

[captcha.login]
id = "{CAPTCHA_ID}"
key = "{CAPTCHA_KEY}"
{ROUTES}"""


# ---------------------------------------------------------------- wire


def read_response(sock, buf, head_request, timeout):
    """One response from `sock` as (status, headers, body, rest of buffer), or
    None if the peer closed or said nothing in time."""
    sock.settimeout(timeout)

    def more():
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            return None
        return chunk or None

    while b"\r\n\r\n" not in buf:
        chunk = more()
        if chunk is None:
            return None
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = parts[1].decode("latin-1") if len(parts) > 1 else "?"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    bodyless = head_request or status.startswith("1") or status in ("204", "304")
    body = b""
    if bodyless:
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            while b"\r\n" not in buf:
                chunk = more()
                if chunk is None:
                    return status, headers, body, b""
                buf += chunk
            size_line, buf = buf.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                return status, headers, body, b""
            while len(buf) < size + 2:
                chunk = more()
                if chunk is None:
                    return status, headers, body, b""
                buf += chunk
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            length = 0
        while len(buf) < length:
            chunk = more()
            if chunk is None:
                break
            buf += chunk
        body, buf = buf[:length], buf[length:]
    else:
        while True:
            chunk = more()
            if chunk is None:
                break
            buf += chunk
        body, buf = buf, b""
    return status, headers, body, buf


def h1_exchange(port, steps, tls=True):
    """Runs `steps` on one connection: ("send", bytes) or ("read", n, head).
    Returns what was answered, e.g. ["403"], ["101", "200"], ["-"] (nothing)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
    else:
        sock = raw
    statuses, buf, answered = [], b"", 0
    try:
        for step in steps:
            if step[0] == "send":
                try:
                    sock.sendall(step[1])
                except OSError:
                    statuses.append("closed")
                    break
            else:
                _, count, head = step
                done = False
                for i in range(count):
                    timeout = READ_TIMEOUT if answered == 0 else SECOND_READ_TIMEOUT
                    got = read_response(sock, buf, head, timeout)
                    if got is None:
                        statuses.append("-")
                        done = True
                        break
                    status, _, _, buf = got
                    statuses.append(status)
                    while status.startswith("1") and status != "101":
                        # An interim answer: the final one follows.
                        got = read_response(sock, buf, head, READ_TIMEOUT)
                        if got is None:
                            statuses.append("-")
                            break
                        status, _, _, buf = got
                        statuses.append(status)
                    answered += 1
                if done:
                    break
    finally:
        sock.close()
    return statuses


def h2_exchange(port, headers, body):
    """One HTTP/2 request with nothing normalised or validated on our side.
    Returns [status] or ["RST"], ["GOAWAY"], ["-"]."""
    import h2.config
    import h2.connection
    import h2.events

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT),
                           server_hostname="localhost")
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False, normalize_inbound_headers=False, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    result = "-"
    try:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.time() + READ_TIMEOUT
        done = False
        while not done and time.time() < deadline:
            try:
                data = sock.recv(65536)
            except (socket.timeout, OSError):
                break
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    for name, value in event.headers:
                        if name in (b":status", ":status"):
                            result = value.decode() if isinstance(value, bytes) else value
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    done = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    result, done = (result if result != "-" else "RST"), True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    result, done = (result if result != "-" else "GOAWAY"), True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except Exception as e:  # the h2 state machine refusing what the server sent
        if result == "-":
            result = f"error:{type(e).__name__}"
        if os.environ.get("DIFF_DEBUG"):
            print(f"    h2 client error: {e!r}", file=sys.stderr)
    finally:
        sock.close()
    return [result]


# ---------------------------------------------------------------- variants


class Sim:
    def __init__(self, port):
        self.port = port

    def proof(self):
        url = f"http://127.0.0.1:{self.port}/_sim/mint?captcha_id={CAPTCHA_ID}"
        with urllib.request.urlopen(url, timeout=5) as r:
            fields = json.load(r)
        return {k: fields[k] for k in
                ("lot_number", "captcha_output", "pass_token", "gen_time", "captcha_id")}


class Variant:
    """A request in neutral form: rendered to raw HTTP/1.1 bytes and to h2 frames.

    proof: None, "body" (form body) or "query". expect: "none" (the invariant
    only), "pass" (a control: `handler` must run with the marker), "refused"
    (the handler must not run). check(lines) -> error text or None, for more.
    """

    def __init__(self, cls, name, method="POST", target="/login", headers=(), body=b"",
                 host="localhost", proof=None, expect="none", handler=None, h1=True, h2=True,
                 check=None, raw=None, clear=False):
        self.cls, self.name, self.method, self.target = cls, name, method, target
        self.headers, self.body, self.host, self.proof = list(headers), body, host, proof
        self.expect, self.handler, self.h1, self.h2 = expect, handler, h1, h2
        self.check, self.raw, self.clear = check, raw, clear

    def materialise(self, sim):
        """(target, headers, body) with a fresh proof where one is wanted."""
        target, headers, body = self.target, list(self.headers), self.body
        if callable(body):
            body, content_type = body(sim)
            if content_type is not None:
                headers.append(("Content-Type", content_type))
        if self.proof == "query":
            sep = "&" if "?" in target else "?"
            target += sep + urllib.parse.urlencode(sim.proof())
        elif self.proof == "body":
            body = urllib.parse.urlencode({**sim.proof(), "user": "alice"}).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        return target, headers, body

    def h1_bytes(self, vid, sim):
        target, headers, body = self.materialise(sim)
        lines = [f"{self.method} {target} HTTP/1.1"]
        names = {n.lower() for n, _ in headers}
        if self.host is not None and "host" not in names:
            lines.append(f"Host: {self.host}")
        lines += [f"{n}: {v}" for n, v in headers]
        lines.append(f"X-Diff-Variant: {vid}")
        if (body or self.method.upper() == "POST") and "content-length" not in names \
                and "transfer-encoding" not in names:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def h2_frames(self, vid, sim):
        target, headers, body = self.materialise(sim)
        out = [(b":method", self.method.encode()), (b":scheme", b"https")]
        names = {n.lower() for n, _ in headers}
        if self.host is not None and ":authority" not in names:
            out.append((b":authority", self.host.encode()))
        if ":path" not in names:
            out.append((b":path", target.encode("latin-1")))
        out += [(n.lower().encode(), v.encode("latin-1")) for n, v in headers]
        out.append((b"x-diff-variant", vid.encode()))
        if body and "content-length" not in names:
            out.append((b"content-length", str(len(body)).encode()))
        return out, body


def chunked(body, size=40):
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def smuggle(vid, carrier_head, carrier_body, hidden_path="/login", eol="\r\n"):
    """A carrier request whose framing hides `POST hidden_path` in its body or after it."""
    hidden = (f"POST {hidden_path} HTTP/1.1{eol}Host: localhost{eol}X-Diff-Variant: {vid}{eol}"
              f"Content-Length: 0{eol}{eol}").encode()
    head = carrier_head.replace("\r\n", eol).format(vid=vid, hlen=len(hidden) + len(carrier_body))
    return head.encode("latin-1") + carrier_body + hidden


def variants():
    out = []
    V = out.append

    # Controls: the plain routes with a valid proof reach the handler, marked.
    V(Variant("control", "POST /login + proof", proof="body", expect="pass", handler="login"))
    V(Variant("control", "POST /admin + proof on www.example.com", target="/admin", host=ADMIN_HOST,
              proof="body", expect="pass", handler="admin"))
    V(Variant("control", "GET /search + proof in query", method="GET", target="/search?q=x",
              proof="query", expect="pass", handler="search"))
    V(Variant("control", "POST /api/x + proof", target="/api/x", proof="body", expect="pass",
              handler="api"))
    V(Variant("control", "POST /login + proof, chunked body", h2=False, expect="pass",
              handler="login", headers=[("Transfer-Encoding", "chunked")],
              body=lambda sim: (chunked(urllib.parse.urlencode({**sim.proof(), "user": "alice"})
                                        .encode()), "application/x-www-form-urlencoded")))
    V(Variant("control", "POST /login + proof, Expect: 100-continue", proof="body", h2=False,
              headers=[("Expect", "100-continue")], expect="pass", handler="login"))
    V(Variant("control", "POST /login without proof", expect="none"))
    V(Variant("control", "GET /public reaches the app unmarked", method="GET", target="/public",
              expect="pass-public", handler="public"))

    # Paths. Each spelling without a proof (the invariant), and on h1 with a proof.
    login_paths = [
        "//login", "///login", "/%6cogin", "/%6Cogin", "/lo%67in", "/x/../login", "/./login",
        "/login/.", "/login/", "/LOGIN", "/Login", "/login;jsessionid=1", "/login;",
        "/%2e%2e/login", "/x/%2e%2e/login", "/login%2f", "/x/..%2flogin", "/%2flogin",
        "\\login", "/login%00", "/login%20", "/login%09", "/%c0%aflogin", "/lo%c0%adgin",
        "/api/../login", "/login?", "/login#x", "/login/..;/login",
        # of our own
        "/login%2F", "/login%5c", "/%4c%4f%47%49%4e", "/login/./", "/./login/.", "/login//",
        "/login;a=b/", "/x;/../login", "/%2e/login", "/.%2e/login", "/login%3b", "/LOGIN/",
        "/login\t", "/lo\\gin", "/x/..\\login", "/login%ef%bc%8f", "/login/%2e",
        "/api/..%2f..%2flogin", "/login%23x",
    ]
    api_paths = ["/api%2fx", "/api%2Fx", "/API/x", "//api/x", "/api/./x", "/Api/x", "/api/",
                 "/%61pi/x", "/api;x/y", "/x/../api/x", "/api%5cx"]
    search_paths = ["//search", "/SEARCH", "/search/", "/%73earch", "/search;x", "/search?",
                    "/x/../search", "/search%2f"]
    for p in login_paths:
        V(Variant("path", f"POST {p}", target=p, h2="#" not in p and "\t" not in p))
        V(Variant("path", f"POST {p} + proof", target=p, proof="body", h2=False))
    for p in api_paths:
        V(Variant("path", f"POST {p}", target=p))
        V(Variant("path", f"POST {p} + proof", target=p, proof="body", h2=False))
    for p in search_paths:
        V(Variant("path", f"GET {p}", method="GET", target=p))
        V(Variant("path", f"GET {p} + proof", method="GET", target=p, proof="query", h2=False))
    V(Variant("path", "absolute-form POST https://127.0.0.1:PORT/login",
              target="https://127.0.0.1:{port}/login", h2=False))
    V(Variant("path", "absolute-form POST https://localhost/LOGIN", target="https://localhost/LOGIN",
              h2=False))
    V(Variant("path", "absolute-form POST http://localhost//login", target="http://localhost//login",
              h2=False))
    V(Variant("path", "absolute-form POST https://x@localhost/login",
              target="https://x@localhost/login", h2=False))

    # Hosts, for the host-bound /admin route.
    for host in ["www.example.com.", "WWW.EXAMPLE.COM", "www.example.com:443",
                 "www.example.com:{port}", "Www.Example.Com.", "www.example.com.:443",
                 "www.example.com:0443"]:
        V(Variant("host", f"POST /admin Host: {host}", target="/admin", host=host))
    V(Variant("host", "absolute-form www.example.com, Host: other.example",
              target="https://www.example.com/admin", host="other.example", h2=False))
    V(Variant("host", "absolute-form other.example, Host: www.example.com",
              target="https://other.example/admin", host=ADMIN_HOST, h2=False))
    V(Variant("host", "two Host headers (other first)", target="/admin", host=None,
              headers=[("Host", "other.example"), ("Host", ADMIN_HOST)], h2=False))
    V(Variant("host", "two Host headers (www first)", target="/admin", host=None,
              headers=[("Host", ADMIN_HOST), ("Host", "other.example")], h2=False))
    V(Variant("host", "h2 :authority other, host www.example.com", target="/admin",
              host="other.example", headers=[("host", ADMIN_HOST)], h1=False))
    V(Variant("host", "h2 :authority www.example.com, host other", target="/admin",
              host=ADMIN_HOST, headers=[("host", "other.example")], h1=False))
    V(Variant("host", "h2 two host fields", target="/admin", host=None,
              headers=[("host", "other.example"), ("host", ADMIN_HOST)], h1=False))
    V(Variant("host", "h2 no :authority, host www.example.com", target="/admin", host=None,
              headers=[("host", ADMIN_HOST)], h1=False))
    V(Variant("host", "POST /admin + proof on Host www.example.com.", target="/admin",
              host="www.example.com.", proof="body"))

    # Methods and overrides.
    for m in ["post", "Post", "pOST"]:
        V(Variant("method", f"{m} /login", method=m))
        V(Variant("method", f"{m} /login + proof", method=m, proof="body", h2=False))
    V(Variant("method", "HEAD /search", method="HEAD", target="/search"))
    V(Variant("method", "head /search", method="head", target="/search"))
    V(Variant("method", "HEAD /search + proof", method="HEAD", target="/search", proof="query",
              h2=False))
    for header in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]:
        V(Variant("method", f"GET /login {header}: POST", method="GET",
                  headers=[(header, "POST")]))
    V(Variant("method", "GET /login X-HTTP-Method-Override: post", method="GET",
              headers=[("X-HTTP-Method-Override", "post")]))
    V(Variant("method", "GET /login?_method=POST", method="GET", target="/login?_method=POST"))
    V(Variant("method", "PUT /login X-HTTP-Method-Override: POST", method="PUT",
              headers=[("X-HTTP-Method-Override", "POST")], body=b"user=alice"))
    V(Variant("method", "GET /login two overrides GET, POST", method="GET",
              headers=[("X-HTTP-Method-Override", "GET"), ("X-HTTP-Method-Override", "POST")]))
    V(Variant("method", "POST /search X-HTTP-Method-Override: GET", target="/search",
              headers=[("X-HTTP-Method-Override", "GET")]))
    V(Variant("method", "POST /search _method=GET in the form", target="/search",
              headers=[("Content-Type", "application/x-www-form-urlencoded")],
              body=b"_method=GET"))
    V(Variant("method", "POST /search?_method=GET", target="/search?_method=GET"))
    V(Variant("method", "GET /api/x X-HTTP-Method-Override: POST", method="GET",
              target="/api/x", headers=[("X-HTTP-Method-Override", "POST")]))
    # CGI-style servers (PHP) read `_` and `-` in a header name alike.
    V(Variant("method", "POST /search X_HTTP_Method_Override: GET", target="/search",
              headers=[("X_HTTP_Method_Override", "GET")]))
    V(Variant("method", "GET /login X_HTTP_Method_Override: POST", method="GET",
              headers=[("X_HTTP_Method_Override", "POST")]))
    V(Variant("method", "GET /login X-HTTP-Method-Override: POST + proof", method="GET",
              headers=[("X-HTTP-Method-Override", "POST")], proof="query"))

    # Upgrades: a tunnel must open only for a real WebSocket handshake.
    ws_good = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
               ("Sec-WebSocket-Version", "13"),
               ("Sec-WebSocket-Key", base64.b64encode(b"0123456789abcdef").decode())]
    ws_bogus = ws_good[:3] + [("Sec-WebSocket-Key", "x")]
    ws_nokey = ws_good[:3]

    def then_login(head_variant, carrier_reads=1):
        def steps(vid, sim, port):
            first = head_variant.h1_bytes(vid, sim)
            hidden = (f"POST /login HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                      f"Content-Length: 0\r\n\r\n").encode()
            return [("send", first), ("read", carrier_reads, False), ("send", hidden),
                    ("read", 1, False)]
        return steps

    for name, hdrs in [("bogus key", ws_bogus), ("no key", ws_nokey),
                       ("valid-looking key", ws_good)]:
        for path in ["/ws", "/public"]:
            carrier = Variant("upgrade", "", method="GET", target=path, headers=hdrs)
            V(Variant("upgrade", f"GET {path} websocket ({name}), then POST /login",
                      raw=then_login(carrier), h2=False))
    V(Variant("upgrade", "GET /ws websocket with POST /login in the same write", h2=False,
              raw=lambda vid, sim, port: [
                  ("send", Variant("upgrade", "", method="GET", target="/ws", headers=ws_good)
                   .h1_bytes(vid, sim) + f"POST /login HTTP/1.1\r\nHost: localhost\r\n"
                   f"X-Diff-Variant: {vid}\r\nContent-Length: 0\r\n\r\n".encode()),
                  ("read", 2, False)]))
    V(Variant("upgrade", "POST /ws Upgrade: websocket, then POST /login", h2=False,
              raw=then_login(Variant("upgrade", "", target="/ws", headers=ws_good))))
    V(Variant("upgrade", "GET /ws Upgrade: h2c, then POST /login", h2=False,
              raw=then_login(Variant("upgrade", "", method="GET", target="/ws", headers=[
                  ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                  ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]))))

    # Framing: the hidden request is always POST /login without a proof.
    shapes = [
        ("CL+TE", "POST /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                  "Content-Length: {hlen}\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"),
        ("TE+CL", "POST /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                  "Transfer-Encoding: chunked\r\nContent-Length: {hlen}\r\n\r\n", b"0\r\n\r\n"),
        ("two CL", "POST /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                   "Content-Length: 0\r\nContent-Length: {hlen}\r\n\r\n", b""),
        ("two Host", "POST /public HTTP/1.1\r\nHost: localhost\r\nHost: other\r\n"
                     "X-Diff-Variant: {vid}\r\nContent-Length: 0\r\n\r\n", b""),
        ("TE chunked<TAB> + CL", "POST /public HTTP/1.1\r\nHost: localhost\r\n"
                                 "X-Diff-Variant: {vid}\r\nTransfer-Encoding: chunked\t\r\n"
                                 "Content-Length: {hlen}\r\n\r\n", b"0\r\n\r\n"),
        ("TE xchunked + CL", "POST /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                             "Transfer-Encoding: xchunked\r\nContent-Length: {hlen}\r\n\r\n",
         b"0\r\n\r\n"),
        ("TE ' chunked' + CL", "POST /public HTTP/1.1\r\nHost: localhost\r\n"
                               "X-Diff-Variant: {vid}\r\nTransfer-Encoding:  chunked\r\n"
                               "Content-Length: {hlen}\r\n\r\n", b"0\r\n\r\n"),
        ("TE folded + CL", "POST /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                           "Transfer-Encoding:\r\n chunked\r\nContent-Length: {hlen}\r\n\r\n",
         b"0\r\n\r\n"),
        ("TE chunked, identity", "POST /public HTTP/1.1\r\nHost: localhost\r\n"
                                 "X-Diff-Variant: {vid}\r\nTransfer-Encoding: chunked, identity\r\n"
                                 "Content-Length: {hlen}\r\n\r\n", b"0\r\n\r\n"),
        ("TE identity, chunked", "POST /public HTTP/1.1\r\nHost: localhost\r\n"
                                 "X-Diff-Variant: {vid}\r\nTransfer-Encoding: identity, chunked\r\n"
                                 "\r\n", b"0\r\n\r\n"),
        ("CL with a sign", "POST /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}\r\n"
                           "Content-Length: +0\r\n\r\n", b""),
        ("chunk size with junk", "POST /public HTTP/1.1\r\nHost: localhost\r\n"
                                 "X-Diff-Variant: {vid}\r\nTransfer-Encoding: chunked\r\n\r\n",
         b"0x0\r\n\r\n"),
    ]
    # An upgrade the app declines (gatekeeper may refuse `foo` itself; the app
    # answers the websocket one without switching: Express switches, so there
    # the rest goes into its "tunnel").
    declined = [("Upgrade: foo", "Upgrade: foo"),
                ("Upgrade: websocket", "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==")]
    for clear in (False, True):
        for name, head, body in shapes:
            V(Variant("framing", f"{name} hiding POST /login", h2=False, clear=clear,
                      raw=lambda vid, sim, port, head=head, body=body: [
                          ("send", smuggle(vid, head, body)), ("read", 2, False)]))
            for label, upgrade in declined:
                V(Variant("framing", f"{label} declined, then {name} hiding POST /login",
                          h2=False, clear=clear,
                          raw=lambda vid, sim, port, head=head, body=body, upgrade=upgrade: [
                              ("send", f"GET /public HTTP/1.1\r\nHost: localhost\r\n"
                                       f"Connection: Upgrade\r\n{upgrade}\r\n"
                                       f"X-Diff-Variant: {vid}\r\n\r\n".encode()),
                              ("read", 1, False),
                              ("send", smuggle(vid, head, body)), ("read", 2, False)]))
        V(Variant("framing", "bare-LF POST /login", h2=False, clear=clear,
                  raw=lambda vid, sim, port: [
                      ("send", f"POST /login HTTP/1.1\nHost: localhost\nX-Diff-Variant: {vid}\n"
                               f"Content-Length: 0\n\n".encode()), ("read", 1, False)]))
        for name, head, body in shapes[:4]:
            V(Variant("framing", f"bare-LF {name} hiding POST /login", h2=False, clear=clear,
                      raw=lambda vid, sim, port, head=head, body=body: [
                          ("send", smuggle(vid, head, body.replace(b"\r\n", b"\n"), eol="\n")),
                          ("read", 2, False)]))
        V(Variant("framing", "mixed CRLF/LF head, CL+TE hiding POST /login", h2=False, clear=clear,
                  raw=lambda vid, sim, port: [
                      ("send", smuggle(vid, "POST /public HTTP/1.1\r\nHost: localhost\n"
                                            "X-Diff-Variant: {vid}\r\nContent-Length: {hlen}\n"
                                            "Transfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n")),
                      ("read", 2, False)]))

        V(Variant("framing", "GET /public and POST /login pipelined in one write", h2=False,
                  clear=clear, raw=lambda vid, sim, port: [
                      ("send", f"GET /public HTTP/1.1\r\nHost: localhost\r\nX-Diff-Variant: {vid}"
                               f"\r\n\r\nPOST /login HTTP/1.1\r\nHost: localhost\r\n"
                               f"X-Diff-Variant: {vid}\r\nContent-Length: 0\r\n\r\n".encode()),
                      ("read", 2, False)]))

    # Hop-by-hop: a client's Connection header must not remove what gatekeeper sets.
    def needs(field, test, what):
        def check(lines):
            for line in lines:
                if field == "body" and line.get("app") == "nginx":
                    continue  # nginx answers without reading the body
                if line.get("handler") == "login" and not test(line.get(field)):
                    return f"the app saw {field}={line.get(field)!r}, wanted {what}"
            return None
        return check

    def body_ok(value):
        return value is not None and "user=alice" in value and "lot_number" not in value

    hop = [
        ("X-Gatekeeper-Captcha", None),
        ("close, X-Gatekeeper-Captcha", None),
        ("Content-Type", needs("content_type", lambda v: bool(v) and "urlencoded" in v,
                               "the form's Content-Type")),
        ("X-Request-Id", needs("request_id", bool, "gatekeeper's X-Request-Id")),
        ("Host", needs("host", bool, "a Host")),
        ("Content-Length", needs("body", body_ok, "the body without the captcha fields")),
        ("X-Forwarded-For", None),
    ]
    for conn, check in hop:
        V(Variant("hop", f"POST /login + proof, Connection: {conn}", proof="body",
                  headers=[("Connection", conn)], expect="pass", handler="login", check=check,
                  h2=False))
    V(Variant("hop", "POST /login + proof, the app gets the body without the fields",
              proof="body", expect="pass", handler="login",
              check=needs("body", body_ok, "the body without the captcha fields")))
    V(Variant("hop", "POST /login + proof, h2 connection: X-Gatekeeper-Captcha", proof="body",
              headers=[("connection", "x-gatekeeper-captcha")], h1=False))
    V(Variant("hop", "GET /public X-Gatekeeper-Captcha: pass never reaches the app", method="GET",
              target="/public", headers=[("X-Gatekeeper-Captcha", "pass")], expect="pass-public",
              handler="public"))
    V(Variant("hop", "GET /public X_Gatekeeper_Captcha: pass never reaches the app", method="GET",
              target="/public", headers=[("X_Gatekeeper_Captcha", "pass")], expect="pass-public",
              handler="public"))
    V(Variant("hop", "GET /public x-gatekeeper-captcha: pass, Connection: close", method="GET",
              target="/public", headers=[("x-gatekeeper-captcha", "pass"), ("Connection", "close")],
              expect="pass-public", handler="public", h2=False))
    V(Variant("hop", "POST /login X-Gatekeeper-Captcha: pass without proof",
              headers=[("X-Gatekeeper-Captcha", "pass")]))

    # Bodies the app could read differently: with a valid proof, gatekeeper should refuse.
    def mp(parts, boundary="AAA"):
        out = b""
        for hdrs, value in parts:
            out += b"--" + boundary.encode() + b"\r\n"
            out += b"".join(h.encode() + b"\r\n" for h in hdrs) + b"\r\n" + value.encode() + b"\r\n"
        return out + b"--" + boundary.encode() + b"--\r\n"

    def proof_parts(proof, skip=()):
        return [([f'Content-Disposition: form-data; name="{k}"'], v)
                for k, v in proof.items() if k not in skip]

    user = ([f'Content-Disposition: form-data; name="user"'], "alice")

    def body(fn):
        return lambda sim: fn(sim.proof(), sim)

    B = [
        ("multipart (control)", "pass",
         body(lambda p, s: (mp(proof_parts(p) + [user]), "multipart/form-data; boundary=AAA"))),
        ("JSON (control)", "pass",
         body(lambda p, s: (json.dumps({**p, "user": "alice"}).encode(), "application/json"))),
        ("multipart name*=UTF-8''lot_number", "refused",
         body(lambda p, s: (mp(proof_parts(p) + [(["Content-Disposition: form-data; "
                                                   "name*=UTF-8''lot_number"],
                                                  s.proof()["lot_number"]), user]),
                            "multipart/form-data; boundary=AAA"))),
        ("multipart, the only lot_number as name*=", "refused",
         body(lambda p, s: (mp(proof_parts(p, {"lot_number"}) + [
             (["Content-Disposition: form-data; name*=UTF-8''lot_number"], p["lot_number"]),
             user]), "multipart/form-data; boundary=AAA"))),
        ("two boundary parameters", "refused",
         body(lambda p, s: (mp(proof_parts(p) + [user], "AAA"),
                            "multipart/form-data; boundary=AAA; boundary=BBB"))),
        ("two boundary parameters, the second one used", "refused",
         body(lambda p, s: (mp(proof_parts(p) + [user], "BBB"),
                            "multipart/form-data; boundary=AAA; boundary=BBB"))),
        ("two Content-Disposition in a part", "refused",
         body(lambda p, s: (mp(proof_parts(p) + [(["Content-Disposition: form-data; name=\"note\"",
                                                    "Content-Disposition: form-data; "
                                                    "name=\"lot_number\""],
                                                   s.proof()["lot_number"]), user]),
                            "multipart/form-data; boundary=AAA"))),
        ("two name parameters in a part", "refused",
         body(lambda p, s: (mp(proof_parts(p) + [(["Content-Disposition: form-data; "
                                                   "name=\"note\"; name=\"lot_number\""],
                                                  s.proof()["lot_number"]), user]),
                            "multipart/form-data; boundary=AAA"))),
        ("filename*= in a part", "refused",
         body(lambda p, s: (mp(proof_parts(p) + [(["Content-Disposition: form-data; "
                                                   "name=\"f\"; filename*=UTF-8''a.txt"], "x"),
                                                 user]),
                            "multipart/form-data; boundary=AAA"))),
        ("form lot%5Fnumber beside lot_number", "refused",
         body(lambda p, s: (urllib.parse.urlencode({**p, "user": "alice"}).encode()
                            + b"&lot%5Fnumber=" + s.proof()["lot_number"].encode(),
                            "application/x-www-form-urlencoded"))),
        ("form lot_number twice", "refused",
         body(lambda p, s: (urllib.parse.urlencode({**p, "user": "alice"}).encode()
                            + b"&lot_number=" + s.proof()["lot_number"].encode(),
                            "application/x-www-form-urlencoded"))),
        ("JSON duplicate key", "refused",
         body(lambda p, s: (json.dumps({**p, "user": "alice"})[:-1].encode()
                            + b', "lot_number": "' + s.proof()["lot_number"].encode() + b'"}',
                            "application/json"))),
        ("JSON escaped duplicate key", "refused",
         body(lambda p, s: (json.dumps({**p, "user": "alice"})[:-1].encode()
                            + b', "lot\\u005fnumber": "' + s.proof()["lot_number"].encode() + b'"}',
                            "application/json"))),
        ("form proof, then a second Content-Type: application/json", "refused",
         lambda s: (urllib.parse.urlencode({**s.proof(), "user": "alice"}).encode(), None)),
        ("proof in the query and another in the body", "refused",
         body(lambda p, s: (urllib.parse.urlencode({**s.proof(), "user": "alice"}).encode(),
                            "application/x-www-form-urlencoded"))),
    ]
    for name, expect, make in B:
        headers, target = [], "/login"
        if name.startswith("form proof, then"):
            headers = [("Content-Type", "application/x-www-form-urlencoded"),
                       ("Content-Type", "application/json")]
        if name.startswith("proof in the query"):
            V(Variant("body", name, body=make, proof="query", expect=expect, handler="login"))
            continue
        V(Variant("body", name, target=target, headers=headers, body=make, expect=expect,
                  handler="login"))
    return out


# ---------------------------------------------------------------- verdicts


def read_log(path):
    lines = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                for k, v in line.items():
                    if v == "":
                        line[k] = None
                lines.append(line)
    except FileNotFoundError:
        pass
    return lines


def judge(variant, lines, statuses):
    """The failures of one variant, from what the app logged and what was answered."""
    problems = []
    for line in lines:
        if line.get("handler") in PROTECTED and line.get("marker") != "pass":
            problems.append(f"protected handler {line['handler']} ran without the marker "
                            f"(app saw {line.get('method')} {line.get('path')}, "
                            f"marker={line.get('marker')!r})")
        if line.get("handler") == "public" and line.get("marker") is not None:
            problems.append(f"the app saw X-Gatekeeper-Captcha={line.get('marker')!r} "
                            f"on an ungated request")
    if any(s.startswith("error:InvalidBodyLength") for s in statuses):
        problems.append("gatekeeper's HTTP/2 answer carried more body than its content-length "
                        "allows (a body in answer to HEAD?)")
    ran = [ln for ln in lines if ln.get("handler") == variant.handler]
    if variant.expect == "pass" and not any(ln.get("marker") == "pass" for ln in ran):
        problems.append(f"control: a valid proof did not reach {variant.handler} with the "
                        f"marker (answered {','.join(statuses)})")
    if variant.expect == "pass-public" and not ran:
        problems.append(f"control: {variant.handler} did not run (answered {','.join(statuses)})")
    if variant.expect == "refused" and ran:
        problems.append(f"the ambiguous body reached {variant.handler} "
                        f"(answered {','.join(statuses)}; expected 400)")
    if variant.check and not problems:
        error = variant.check(lines)
        if error:
            problems.append(error)
    return problems


def run_app(app, gatekeeper, sim, cert, key, args, tally):
    work = tempfile.mkdtemp(prefix=f"gk-diff-{app}-")
    log = os.path.join(work, "handlers.jsonl")
    app_port, https, http = free_port(), free_port(), free_port()
    env = {**os.environ, "DIFF_LOG": log}
    app_proc = gk_proc = None
    sent = []
    try:
        argv, cwd = app_command(app, app_port, work, log)
        app_out = open(os.path.join(work, "app.out"), "w")
        app_proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=app_out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(app_port, app_proc, app)
        conf = os.path.join(work, "gatekeeper.toml")
        with open(conf, "w") as f:
            f.write(gatekeeper_config(cert, key, https, http, app_port, sim.port))
        check = subprocess.run([gatekeeper, "check", "-c", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"gatekeeper check failed:\n{check.stdout}{check.stderr}")
        gk_out = open(os.path.join(work, "gatekeeper.out"), "w")
        gk_proc = subprocess.Popen([gatekeeper, "run", "-c", conf], stdout=gk_out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(https, gk_proc, "gatekeeper")
        wait_for(http, gk_proc, "gatekeeper")

        n = 0
        for variant in variants():
            if args.only and variant.cls not in args.only:
                continue
            protocols = []
            if variant.raw is not None:
                protocols.append("h1c" if variant.clear else "h1")
            else:
                if variant.h1:
                    protocols.append("h1")
                if variant.h2:
                    protocols.append("h2")
            for proto in protocols:
                n += 1
                vid = f"v{n}"
                try:
                    if variant.raw is not None:
                        port = http if proto == "h1c" else https
                        statuses = h1_exchange(port, variant.raw(vid, sim, port),
                                               tls=proto == "h1")
                    elif proto == "h1":
                        v = variant
                        if "{port}" in v.target or (v.host and "{port}" in v.host):
                            v = Variant(**{**v.__dict__, "target": v.target.format(port=https),
                                           "host": v.host.format(port=https) if v.host else None})
                        wire = v.h1_bytes(vid, sim)
                        statuses = h1_exchange(https, [("send", wire),
                                                       ("read", 1, v.method.upper() == "HEAD")])
                    else:
                        v = variant
                        if v.host and "{port}" in v.host:
                            v = Variant(**{**v.__dict__, "host": v.host.format(port=https)})
                        frames, body = v.h2_frames(vid, sim)
                        statuses = h2_exchange(https, frames, body)
                except (OSError, ssl.SSLError) as e:
                    statuses = [f"error:{type(e).__name__}"]
                sent.append((vid, variant, proto, statuses))
                if args.verbose:
                    print(f"  {app:9} {proto:3} {','.join(statuses):10} {variant.cls:8} "
                          f"{variant.name}", flush=True)

        # Handlers may run after their answer was read (nginx logs last; a
        # smuggled request may be served late): judge once everything settled.
        time.sleep(0.7)
        by_variant = {}
        for line in read_log(log):
            by_variant.setdefault(line.get("variant"), []).append(line)
        for vid, variant, proto, statuses in sent:
            lines = by_variant.pop(vid, [])
            if variant.cls not in ("control", "hop") and any(
                    ln.get("handler") in PROTECTED and ln.get("marker") == "pass" for ln in lines):
                tally.marked[app] = tally.marked.get(app, 0) + 1
            problems = judge(variant, lines, statuses)
            tally.record(app, proto, variant, statuses, problems)
        for vid, lines in by_variant.items():
            problems = [f"handler {ln.get('handler')} ran ({ln.get('method')} {ln.get('path')}, "
                        f"marker={ln.get('marker')!r})" for ln in lines
                        if ln.get("handler") in PROTECTED and ln.get("marker") != "pass"]
            if problems:
                tally.record(app, "?", Variant("unknown", f"request tagged {vid!r}"), ["?"],
                             problems)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        tally.record(app, "-", Variant("setup", "start the app and gatekeeper"), ["-"], [str(e)])
    finally:
        stop(gk_proc)
        stop(app_proc)
        if args.keep:
            print(f"  {app}: files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


class Tally:
    def __init__(self):
        self.passed = self.failed = 0
        self.by_class = {}
        # Variant spellings (beyond the controls) that reached a handler with a proof, marked.
        self.marked = {}

    def record(self, app, proto, variant, statuses, problems):
        key = (app, variant.cls)
        ok, bad = self.by_class.get(key, (0, 0))
        if problems:
            self.failed += 1
            self.by_class[key] = (ok, bad + 1)
            for p in problems:
                print(f"FAIL {app} {proto} [{variant.cls}] {variant.name}: {p} "
                      f"(gatekeeper answered {','.join(statuses)})", flush=True)
        else:
            self.passed += 1
            self.by_class[key] = (ok + 1, bad)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gatekeeper", nargs="?", default="target/debug/gatekeeper")
    parser.add_argument("--apps", default="flask,starlette,express,nginx,php")
    parser.add_argument("--only", default="", help="variant classes, comma-separated")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per exchange")
    parser.add_argument("--keep", action="store_true", help="keep the logs and configs")
    args = parser.parse_args()
    args.only = {c for c in args.only.split(",") if c}
    gatekeeper = os.path.abspath(args.gatekeeper)
    if not os.access(gatekeeper, os.X_OK):
        sys.exit(f"no gatekeeper binary at {gatekeeper}")

    started = time.time()
    work = tempfile.mkdtemp(prefix="gk-diff-")
    tally = Tally()
    sim_proc = None
    try:
        cert, key = make_cert(work)
        sim_port = free_port()
        sim_proc = subprocess.Popen(
            [gatekeeper, "sim", "--listen", f"127.0.0.1:{sim_port}", "--captcha",
             f"{CAPTCHA_ID}:{CAPTCHA_KEY}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL)
        wait_for(sim_port, sim_proc, "gatekeeper sim")
        sim = Sim(sim_port)
        for app in [a for a in args.apps.split(",") if a]:
            t = time.time()
            run_app(app, gatekeeper, sim, cert, key, args, tally)
            ok = sum(v[0] for k, v in tally.by_class.items() if k[0] == app)
            bad = sum(v[1] for k, v in tally.by_class.items() if k[0] == app)
            print(f"-- {app}: {ok} passed, {bad} failed in {time.time() - t:.1f}s; "
                  f"{tally.marked.get(app, 0)} other spellings reached a handler with a proof, "
                  f"marked", flush=True)
    finally:
        stop(sim_proc)
        shutil.rmtree(work, ignore_errors=True)
    classes = sorted({k[1] for k in tally.by_class})
    apps = sorted({k[0] for k in tally.by_class})
    print("\nfailed/total by app and class:")
    print(f"  {'':10}" + "".join(f"{c:>10}" for c in classes))
    for app in apps:
        cells = []
        for c in classes:
            ok, bad = tally.by_class.get((app, c), (0, 0))
            cells.append(f"{bad}/{ok + bad}" if ok + bad else "-")
        print(f"  {app:10}" + "".join(f"{x:>10}" for x in cells))
    print(f"({time.time() - started:.0f}s)")
    print(f"{tally.passed} passed, {tally.failed} failed")
    sys.exit(1 if tally.failed else 0)


if __name__ == "__main__":
    main()
