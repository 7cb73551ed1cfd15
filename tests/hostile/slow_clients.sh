#!/usr/bin/env bash
# Slow clients against gatekeeper: slowhttptest (Debian package) in
# slow-headers, slow-body and slow-read modes, each while a normal client keeps
# making requests. Passes when, near the end of each attack, gatekeeper holds
# no attack connection open any more (counted on the server's side with ss:
# a slow reader learns of the reset only after draining its own buffer) and
# the normal client succeeded on every request.
#
#   tests/hostile/slow_clients.sh [path/to/gatekeeper]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/gatekeeper}")
command -v slowhttptest >/dev/null || { echo "slowhttptest is not installed (apt-get install slowhttptest)"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); gk=$(port)
mkdir -p "$work/www"
echo "upstream ok" > "$work/www/index.html"
head -c $((8 * 1024 * 1024)) /dev/zero > "$work/www/big.bin"
# The upstream: a static file server with a listen backlog that is not the
# bottleneck (Python's default of 5 refuses connections under this load).
python3 - "$up" "$work/www" >/dev/null 2>&1 <<'PY' &
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
Server(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
PY
pids+=($!)

cat > "$work/gatekeeper.toml" <<TOML
[server]
http = "127.0.0.1:$gk"
[upstream]
url = "http://127.0.0.1:$up"
[limits]
header_read_timeout = "3s"
idle_timeout = "5s"
[geetest]
api_server = "http://127.0.0.1:9"
[captcha.login]
id = "647f5ed2ed8acb4be36784e01556bb71"
key = "b09a7aafbfd83f73b35a9b530d0337bf"
[[route]]
path = "/login"
TOML
"$bin" run -c "$work/gatekeeper.toml" >"$work/gatekeeper.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$gk") 2>/dev/null && break; sleep 0.1; done

# Long enough for the slowest defence with margin on a loaded machine: a slow
# reader is judged once per idle_timeout (5 s) window, and the first window
# rarely counts (socket buffers take megabytes before writes block), so it
# goes within about three windows of connecting.
duration=26
failed=0
attack() {
    local name=$1 url=$2; shift 2
    # The normal client: a request every 200 ms on a fresh connection.
    python3 - "http://127.0.0.1:$gk/" "$((duration + 5))" >"$work/normal-$name.txt" <<'PY' &
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
ok = failed = 0
end = time.time() + seconds
while time.time() < end:
    try:
        urllib.request.urlopen(url, timeout=3).read()
        ok += 1
    except Exception as e:
        failed += 1
        print("failed:", e)
    time.sleep(0.2)
print(ok, failed)
PY
    local normal=$!
    slowhttptest -c 200 -r 100 -l "$duration" -p 3 -g -o "$work/$name" -u "$url" "$@" >"$work/$name.out" 2>&1 &
    local attacker=$!
    sleep $((duration - 3))
    # Connections gatekeeper still holds; the normal client may own one.
    local held
    held=$(ss -Htn state established "( sport = :$gk )" | wc -l)
    wait "$attacker" || true
    wait "$normal"
    local exit_status ended closed ok bad
    # slowhttptest's own verdict; its CSV's last sample can lag the end by a second.
    exit_status=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$name.out" | grep -a 'Exit status' | sed 's/.*Exit status: *//' | tail -n 1)
    ended=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$name.out" | grep -a 'Test ended on' | grep -o '[0-9]*' | tail -n 1)
    closed=$(tail -n 1 "$work/$name.csv" | cut -d, -f2)
    read -r ok bad < <(tail -n 1 "$work/normal-$name.txt")
    printf '%-13s 200 attack connections; held by gatekeeper at %ss: %s | slowhttptest: "%s" at %ss | normal client: %s ok, %s failed\n' \
        "$name" "$((duration - 3))" "$held" "$exit_status" "${ended:-?}" "$ok" "$bad"
    if [ "$held" -gt 2 ]; then
        echo "  FAIL: attack connections were not all closed by a timeout"; failed=1
    fi
    if [ "$bad" != 0 ] || [ "$ok" = 0 ]; then
        echo "  FAIL: the normal client was not served on every request"; grep failed: "$work/normal-$name.txt" | head -3; failed=1
    fi
}

attack slow-headers "http://127.0.0.1:$gk/" -H -i 2 -t GET
# A gated route: its body is read whole, within header_read_timeout.
attack slow-body "http://127.0.0.1:$gk/login" -B -i 2 -s 8192 -t POST
# A large response read through a tiny window: writes stall.
# A large response read through a tiny window, 128 bytes a second (the floor
# is 1 KiB/s over each idle_timeout window).
attack slow-read "http://127.0.0.1:$gk/big.bin" -X -k 2 -n 1 -w 1 -y 64 -z 128
exit "$failed"
