#!/usr/bin/env bash
# testssl (Debian package testssl.sh) against gatekeeper's HTTPS listener.
# Passes when only TLS 1.2 and 1.3 are offered, only AEAD suites (testssl's
# NULL, aNULL, EXPORT, LOW, 3DES/IDEA and AVERAGE lists all "not offered"), and
# no HIGH or CRITICAL finding remains other than those about the certificate
# itself (cert_*), which is a self-signed one made for this run.
#
#   tests/hostile/testssl.sh [path/to/gatekeeper]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/gatekeeper}")
command -v testssl >/dev/null || { echo "testssl is not installed (apt-get install testssl.sh)"; exit 1; }

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
    -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/gatekeeper.toml" <<TOML
[server]
https = "127.0.0.1:$port"
[tls]
cert = "cert.pem"
key = "key.pem"
[upstream]
url = "http://127.0.0.1:9"
TOML
"$bin" run -c "$work/gatekeeper.toml" >"$work/gatekeeper.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

testssl --quiet --color 0 --warnings off --jsonfile "$work/testssl.json" "https://127.0.0.1:$port" >"$work/testssl.txt" 2>&1 || true

python3 - "$work/testssl.json" <<'PY'
import json, sys
findings = {f["id"]: f for f in json.load(open(sys.argv[1]))}
problems = []
def expect(fid, words):
    f = findings.get(fid)
    if not f or not f["finding"].startswith(words):
        problems.append(f"{fid}: expected '{words}', got {f['finding'] if f else 'nothing'}")
for fid in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]:
    expect(fid, "not offered")
expect("TLS1_2", "offered")
expect("TLS1_3", "offered")
for fid in ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"]:
    expect(fid, "not offered")
expect("cipherlist_STRONG", "offered")
severe = [f"{f['id']} ({f['severity']}): {f['finding']}" for f in findings.values()
          if f.get("severity") in ("HIGH", "CRITICAL") and not f["id"].startswith("cert")]
problems += [f"finding {s}" for s in severe]
certs = sorted(f["id"] for f in findings.values() if f.get("severity") in ("HIGH", "CRITICAL") and f["id"].startswith("cert"))
print("protocols: TLS 1.2 and 1.3 only; ciphers: AEAD (testssl STRONG) only")
print(f"HIGH/CRITICAL findings outside the test certificate: {len(severe)}")
print(f"(about the self-signed test certificate, not counted: {', '.join(certs) or 'none'})")
for p in problems:
    print("FAIL:", p)
sys.exit(1 if problems else 0)
PY
