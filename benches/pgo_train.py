#!/usr/bin/env python3
"""The traffic a profile-guided build learns from (see scripts/build-pgo).

    python3 benches/pgo_train.py INSTRUMENTED_BINARY   # GK_TRAIN_REQUESTS=20000

Runs the binary (built with -Cprofile-generate) in front of the same small
upstream and simulator as benches/instructions.py and sends it what an edge
sees most: HTTPS HTTP/1.1 and HTTP/2 GETs (one by a path that needs
normalising), form POSTs ungated and gated with fresh proofs, replays,
unproven posts from a script (403) and from a browser (the challenge page),
and a 30 KB HTML page proxied as it is and with the widget injected.
Each scenario runs the binary afresh and stops it with SIGTERM, so that it
writes its profile as it exits.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from instructions import (BROWSER, FORM, SCRIPT, free_port, h2load, minted, posts,  # noqa: E402
                          simulator, upstream, wait_for, workdir, write_config)

# A 30 KB tag-dense page whose form comes last, for [[inject]] to parse through.
PAGE = ("<!doctype html><html><head><title>Comments</title></head><body>"
        + '<div class="row"><span>item</span> <a href="/item">more</a></div>' * 450
        + '<form action="/login" method="post"><input name="user"></form></body></html>').encode()
HTML = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(PAGE), PAGE)

# Requests of the largest scenario; CI sends fewer, to check the script runs.
REQUESTS = int(os.environ.get("GK_TRAIN_REQUESTS", "20000"))
INJECT = """[[inject]]
prefix = "/inject/"
form = 'form[action="/login"]'
"""


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    work = workdir("gk-pgo-")
    up, html_up = free_port(), free_port()
    upstream(up)
    upstream(html_up, HTML)
    sim_proc, sim = simulator(binary)
    n = REQUESTS
    replayed = minted(sim, 1) * (n // 10)
    # (what is sent, the upstream that answers it, how)
    loads = [
        ("HTTPS h1 GETs", up, lambda port: h2load(port, ["--h1"], "/page", n)),
        ("HTTPS h2 GETs", up, lambda port: h2load(port, ["-m", "8"], "/page", n)),
        ("GETs by a path normalised first", up, lambda port: h2load(port, ["--h1"], "//a/./b/%7ec", n // 4)),
        ("form POSTs, ungated", up, lambda port: posts(port, "/form", [FORM] * (n // 2))),
        ("form POSTs, gated, a fresh proof each", up, lambda port: posts(port, "/login", minted(sim, n // 4))),
        ("gated POSTs replayed", up, lambda port: posts(port, "/login", replayed)),
        ("unproven POSTs from a script", up,
         lambda port: posts(port, "/login", [FORM] * (n // 10), headers=SCRIPT)),
        ("unproven POSTs from a browser", up,
         lambda port: posts(port, "/login", [FORM] * (n // 20), headers=BROWSER)),
        ("HTML pages, proxied", html_up, lambda port: h2load(port, ["--h1"], "/page.html", n // 10)),
        ("HTML pages, the widget injected", html_up,
         lambda port: h2load(port, ["--h1"], "/inject/page.html", n // 10)),
    ]
    for name, answering, load in loads:
        port = free_port()
        config = write_config(work, port, answering, sim, INJECT)
        proc = subprocess.Popen([binary, "run", "-c", config],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(port)
        load(port)
        proc.terminate()
        if proc.wait() != 0:
            sys.exit(f"{binary} exited with {proc.returncode} after {name}: no profile written")
        print(f"trained: {name}", flush=True)
    sim_proc.terminate()
    sim_proc.wait()


if __name__ == "__main__":
    main()
