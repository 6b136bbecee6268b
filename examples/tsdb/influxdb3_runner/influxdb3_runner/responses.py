"""What `process_request` returns, as InfluxDB 3 answers it over HTTP: a str as 200
text/html, a dict or list as JSON, `(body, status)`, `(body, headers)` or `(body,
status, headers)`, a Flask-style response object, or an iterable of str or bytes."""

import json
from typing import Any, Dict, Tuple

HTML = "text/html; charset=utf-8"
JSON = "application/json"


class ResponseError(TypeError):
    """A return value that is none of the conventions."""


def _headers(value) -> Dict[str, str]:
    if isinstance(value, dict):
        items = value.items()
    else:
        try:
            items = list(value)
        except TypeError:
            raise ResponseError(f"response headers: {type(value).__name__} is not a dict or a list of pairs") from None
    out = {}
    for pair in items:
        try:
            k, v = pair
        except (TypeError, ValueError):
            raise ResponseError(f"response headers: {pair!r} is not a (name, value) pair") from None
        out[str(k).lower()] = str(v)
    return out


def _body(value) -> Tuple[bytes, str]:
    if isinstance(value, str):
        return value.encode(), HTML
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), HTML
    if isinstance(value, (dict, list)):
        return json.dumps(value).encode(), JSON
    if value is None:
        raise ResponseError("process_request returned None; return a str, dict, list, tuple or iterable")
    try:
        pieces = iter(value)
    except TypeError:
        raise ResponseError(f"process_request returned a {type(value).__name__}, which is no response") from None
    out = bytearray()
    for piece in pieces:
        if isinstance(piece, str):
            out += piece.encode()
        elif isinstance(piece, (bytes, bytearray)):
            out += piece
        else:
            raise ResponseError(f"a streamed response piece is a {type(piece).__name__}, not str or bytes")
    return bytes(out), HTML


def _status(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ResponseError(f"response status {value!r} is not an HTTP status (100 to 599)")
    return value


def http_response(result: Any) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers, body) for `result`."""
    if hasattr(result, "status_code") and callable(getattr(result, "get_data", None)):
        body = result.get_data()
        body = body.encode() if isinstance(body, str) else bytes(body)
        return _status(result.status_code), _headers(getattr(result, "headers", {})), body
    status, headers = 200, {}
    if isinstance(result, tuple):
        if len(result) == 3:
            result, status, extra = result
            status, headers = _status(status), _headers(extra)
        elif len(result) == 2:
            result, second = result
            if isinstance(second, int) and not isinstance(second, bool):
                status = _status(second)
            else:
                headers = _headers(second)
        else:
            raise ResponseError(f"a response tuple has 2 or 3 items (body, status, headers), not {len(result)}")
    body, content_type = _body(result)
    headers.setdefault("content-type", content_type)
    return status, headers, body


def error_response(error: BaseException) -> Tuple[int, Dict[str, str], bytes]:
    """InfluxDB's answer to a plugin that raised: 500 and `{"error": ...}`."""
    text = f"{type(error).__name__}: {error}"
    return 500, {"content-type": JSON}, json.dumps({"error": text}).encode()
