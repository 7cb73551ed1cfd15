"""Starlette on uvicorn (h11). `/api/{rest:path}` decodes %2f, as Starlette does.

    DIFF_LOG=/tmp/log python3 starlette_app.py PORT
"""
import json
import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def handler(name):
    async def endpoint(request):
        body = await request.body()
        line = {
            "app": "starlette",
            "handler": name,
            "method": request.method,
            "path": request.url.path,
            "marker": request.headers.get("x-gatekeeper-captcha"),
            "variant": request.headers.get("x-diff-variant"),
            "content_type": request.headers.get("content-type"),
            "request_id": request.headers.get("x-request-id"),
            "host": request.headers.get("host"),
            "body": body.decode("utf-8", "replace")[:2000],
        }
        with open(os.environ["DIFF_LOG"], "a") as f:
            f.write(json.dumps(line) + "\n")
        return PlainTextResponse(f"protected:{name}" if name != "public" else "public")

    return endpoint


app = Starlette(
    routes=[
        Route("/login", handler("login"), methods=["POST"]),
        Route("/admin", handler("admin"), methods=["POST"]),
        # Starlette adds HEAD to every GET route.
        Route("/search", handler("search"), methods=["GET"]),
        Route("/api/{rest:path}", handler("api"), methods=["POST"]),
        Route("/", handler("public"), methods=["GET"]),
        Route("/public", handler("public"), methods=["GET"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="h11", ws="none",
                log_level="warning", access_log=False)
