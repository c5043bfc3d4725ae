"""The presign baseline: a bare Starlette route that reads the body and returns the same JSON."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

URL = "http://127.0.0.1/links/small?expires=1700000000&signature=" + "x" * 43


async def download(request: Request) -> Response:
    body = await request.json()
    data = {"download_url": f"{URL}&id={body.get('document_id')}"}
    payload = json.dumps(
        {"statusCode": 200, "data": data, "message": "OKAY"}, separators=(",", ":")
    ).encode()
    return Response(payload, media_type="application/json")


app = Starlette(routes=[Route("/download", download, methods=["POST"])])
