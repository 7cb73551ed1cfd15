"""Flask on Werkzeug's own server, with Flask's documented X-HTTP-Method-Override
middleware (the "HTTP Method Overrides" pattern), so that override is a real attack.

    DIFF_LOG=/tmp/log python3 flask_app.py PORT
"""
import json
import os
import sys

from flask import Flask, request
from werkzeug.serving import run_simple

app = Flask(__name__)


class HTTPMethodOverrideMiddleware:
    """Flask docs, Patterns, "Adding HTTP Method Overrides"."""

    allowed_methods = frozenset(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"])
    bodyless_methods = frozenset(["GET", "HEAD", "OPTIONS", "DELETE"])

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        method = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
        if method in self.allowed_methods:
            environ["REQUEST_METHOD"] = method
        if method in self.bodyless_methods:
            environ["CONTENT_LENGTH"] = "0"
        return self.app(environ, start_response)


def record(handler):
    body = request.get_data(cache=True)
    line = {
        "app": "flask",
        "handler": handler,
        "method": request.method,
        "path": request.path,
        "marker": request.headers.get("X-Gatekeeper-Captcha"),
        "variant": request.headers.get("X-Diff-Variant"),
        "content_type": request.headers.get("Content-Type"),
        "request_id": request.headers.get("X-Request-Id"),
        "host": request.headers.get("Host"),
        "body": body.decode("utf-8", "replace")[:2000],
    }
    with open(os.environ["DIFF_LOG"], "a") as f:
        f.write(json.dumps(line) + "\n")
    return f"protected:{handler}" if handler != "public" else "public"


@app.post("/login")
def login():
    return record("login")


@app.post("/admin")
def admin():
    return record("admin")


@app.get("/search")
def search():
    return record("search")


@app.post("/api/<path:rest>")
def api(rest):
    return record("api")


@app.get("/")
@app.get("/public")
def public():
    return record("public")


if __name__ == "__main__":
    app.wsgi_app = HTTPMethodOverrideMiddleware(app.wsgi_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
