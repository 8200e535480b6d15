#!/usr/bin/env python3
"""Local simulator of OpenAI's moderation endpoint (`POST /v1/moderations`).

Verdicts come from marker words in the input (`[mod:violence]`, `[mod:down]`, image URLs
containing `mod-flag-sexual`, data-URI images whose bytes contain it, ...), never from a real
classifier. Standard library only.
See README.md for configuration, markers and the test-only `/_sim` controls.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

DEFAULT_API_KEY = "sk-moderation-sim"
DEFAULT_MODEL = "omni-moderation-latest"
OMNI_MODELS = frozenset({"omni-moderation-latest", "omni-moderation-2024-09-26"})
TEXT_MODELS = frozenset({"text-moderation-latest", "text-moderation-stable"})  # legacy: text only
MODELS = OMNI_MODELS | TEXT_MODELS
BODY_FIELDS = frozenset({"model", "input"})

# The 13 categories of omni-moderation, in OpenAI's order.
CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors",
    "violence", "violence/graphic",
)
# Categories omni-moderation also scores for images; the others are text only.
IMAGE_CATEGORIES = frozenset({
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence", "violence/graphic",
})
# Marker spellings accepted for each category: "sexual/minors" and the library's "sexual_minors".
CATEGORY_NAMES = {
    **{category: category for category in CATEGORIES},
    **{category.replace("/", "_").replace("-", "_"): category for category in CATEGORIES},
}

FLAGGED_SCORE = 0.97
MIN_SCORE, MAX_SCORE = 0.0001, 0.01  # range of the deterministic scores of unflagged categories
MAX_SLOW_MS = 120_000
MARKER = re.compile(r"\[mod:([^\]]*)\]", re.IGNORECASE)
SLOW = re.compile(r"slow=(\d+)")
# `mod-flag-<category>` in an image URL; "/" may also be written "_" (`mod-flag-violence_graphic`).
IMAGE_FLAGS = [
    (category, re.compile("mod-flag-" + re.escape(category).replace("/", "[/_]") + r"(?![a-z/_])"))
    for category in sorted(IMAGE_CATEGORIES, key=len, reverse=True)
]
# The same patterns for the decoded bytes of a `data:` image (e.g. a PNG `tEXt` chunk holding the marker).
IMAGE_BYTE_FLAGS = [(category, re.compile(pattern.pattern.encode())) for category, pattern in IMAGE_FLAGS]
ID_ALPHABET = string.ascii_letters + string.digits

_log_lock = threading.Lock()


def log(message: str) -> None:
    """Write one timestamped line to stderr."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with _log_lock:
        sys.stderr.write(f"{stamp} {message}\n")
        sys.stderr.flush()


def new_id(prefix: str, length: int = 29) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5120
    api_key: str = DEFAULT_API_KEY


def parse_config(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Build the configuration from environment variables, overridden by CLI flags."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description="OpenAI moderation endpoint simulator")
    parser.add_argument("--host", default=env.get("MODERATION_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env.get("MODERATION_SIM_PORT", "5120"))
    args = parser.parse_args(argv)
    return Config(host=args.host, port=args.port, api_key=env.get("MODERATION_SIM_API_KEY") or DEFAULT_API_KEY)


# --------------------------------------------------------------------------- errors


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def missing_key() -> OpenAIError:
    return OpenAIError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                       code="invalid_api_key")


def wrong_key(key: str) -> OpenAIError:
    return OpenAIError(401, f"Incorrect API key provided: {redact(key)}. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.", code="invalid_api_key")


def model_not_found(model: Any) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       code="model_not_found")


def overloaded() -> OpenAIError:
    return OpenAIError(503, "The server is overloaded or not ready yet.", kind="server_error")


def invalid_url(method: str, path: str) -> OpenAIError:
    return OpenAIError(404, f"Invalid URL ({method} {path})")


def redact(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 3) + key[-4:] if len(key) > 8 else "*" * len(key)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Item:
    """One unit that gets one result: its text parts and image URLs."""

    texts: tuple[str, ...]
    images: tuple[str, ...]


@dataclass(frozen=True)
class ModerationRequest:
    model: str
    items: tuple[Item, ...]

    @property
    def texts(self) -> list[str]:
        return [text for item in self.items for text in item.texts]


def parse_request(body: Any) -> ModerationRequest:
    """Validate a `POST /v1/moderations` body; raises OpenAIError."""
    if not isinstance(body, dict):
        raise invalid("Invalid type for request body: expected an object.")
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    model = body.get("model")
    if model is None:
        model = DEFAULT_MODEL
    elif not isinstance(model, str):
        raise invalid("Invalid type for 'model': expected a string.", "model", "invalid_type")
    elif model not in MODELS:
        raise model_not_found(model)
    if "input" not in body:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    items = parse_input(body["input"])
    if model in TEXT_MODELS and any(item.images for item in items):
        raise invalid(f"Model {model} does not support image inputs; use an omni-moderation model.",
                      "input", "invalid_value")
    return ModerationRequest(model, items)


def parse_input(value: Any) -> tuple[Item, ...]:
    """A string or an array of strings: one item each; an array of objects: one item in all."""
    if isinstance(value, str):
        return (Item((value,), ()),)
    if not isinstance(value, list):
        raise invalid("Invalid type for 'input': expected a string, an array of strings or an array of objects.",
                      "input", "invalid_type")
    if not value:
        raise invalid("Invalid 'input': empty array. Expected an array with minimum length 1.",
                      "input", "empty_array")
    if all(isinstance(entry, str) for entry in value):
        return tuple(Item((entry,), ()) for entry in value)
    if not all(isinstance(entry, dict) for entry in value):
        raise invalid("Invalid 'input': an array must hold only strings or only objects.", "input", "invalid_type")
    texts, images = [], []
    for index, entry in enumerate(value):
        param = f"input[{index}]"
        kind = entry.get("type")
        if kind == "text":
            if set(entry) != {"type", "text"} or not isinstance(entry["text"], str):
                raise invalid(f"Invalid '{param}': a text input is {{\"type\": \"text\", \"text\": <string>}}.",
                              param, "invalid_value")
            texts.append(entry["text"])
        elif kind == "image_url":
            image = entry.get("image_url")
            if set(entry) != {"type", "image_url"} or not isinstance(image, dict) or set(image) != {"url"} \
                    or not isinstance(image["url"], str) or not image["url"]:
                raise invalid(f"Invalid '{param}': an image input is "
                              f"{{\"type\": \"image_url\", \"image_url\": {{\"url\": <string>}}}}.",
                              param, "invalid_value")
            images.append(image["url"])
        else:
            raise invalid(f"Invalid value for '{param}.type': expected one of 'text' or 'image_url'.",
                          f"{param}.type", "invalid_value")
    return (Item(tuple(texts), tuple(images)),)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Controls:
    """Request-wide markers: `[mod:down]` and `[mod:slow=MS]`, from any text."""

    down: bool
    slow_ms: int

    @classmethod
    def parse(cls, texts: list[str]) -> Controls:
        down, slow_ms = False, 0
        for text in texts:
            for marker in MARKER.findall(text):
                marker = marker.strip().lower()
                down = down or marker == "down"
                match = SLOW.fullmatch(marker)
                if match:
                    slow_ms = max(slow_ms, min(int(match.group(1)), MAX_SLOW_MS))
        return cls(down, slow_ms)


def text_flags(text: str) -> set[str]:
    """Categories named by `[mod:<category>]` markers (case-insensitive)."""
    flags = set()
    for marker in MARKER.findall(text):
        name = marker.strip().lower()
        if name in CATEGORY_NAMES:
            flags.add(CATEGORY_NAMES[name])
        elif name != "down" and not SLOW.fullmatch(name):
            log(f"unknown marker [mod:{marker}] ignored")
    return flags


def image_flags(url: str) -> set[str]:
    """Image categories named by `mod-flag-<category>` in an image URL or, for a `data:` URI,
    in its decoded bytes."""
    lowered = url.lower()
    flags = {category for category, pattern in IMAGE_FLAGS if pattern.search(lowered)}
    payload = data_uri_bytes(url)
    if payload:
        payload = payload.lower()
        flags |= {category for category, pattern in IMAGE_BYTE_FLAGS if pattern.search(payload)}
    return flags


def data_uri_bytes(url: str) -> bytes | None:
    """Payload of a `data:[<mime>][;base64],<data>` URI; None for other URLs or a malformed one."""
    if url[:5].lower() != "data:":
        return None
    header, comma, payload = url[5:].partition(",")
    if not comma:
        log("data URI image without a comma: not inspected")
        return None
    if not header.lower().endswith(";base64"):
        return unquote_to_bytes(payload)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        log("data URI image with invalid base64: not inspected")
        return None


def score(category: str, material: str) -> float:
    """A small deterministic score in [MIN_SCORE, MAX_SCORE) for an unflagged category."""
    digest = hashlib.sha256(f"{category}\0{material}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2 ** 64
    return round(MIN_SCORE + fraction * (MAX_SCORE - MIN_SCORE), 8)


def moderate(item: Item) -> dict[str, Any]:
    """One result object, exactly in OpenAI's shape."""
    flags = set().union(*(text_flags(text) for text in item.texts), *(image_flags(url) for url in item.images))
    material = "\0".join((*item.texts, *item.images))
    categories, scores, applied = {}, {}, {}
    for category in CATEGORIES:
        types = []
        if item.texts:
            types.append("text")
        if item.images and category in IMAGE_CATEGORIES:
            types.append("image")
        categories[category] = category in flags
        scores[category] = FLAGGED_SCORE if category in flags else (score(category, material) if types else 0.0)
        applied[category] = types
    return {
        "flagged": bool(flags),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


# --------------------------------------------------------------------------- state


class Simulator:
    """Records the moderation bodies received, for tests."""

    def __init__(self, config: Config, public_url: str):
        self.config = config
        self.public_url = public_url.rstrip("/")
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []  # oldest first

    def record(self, body: Any) -> dict[str, Any]:
        """Store a received body; the caller fills in `status` once it is answered."""
        entry = {"received_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "body": body, "status": None}
        with self.lock:
            self.received.append(entry)
        return entry

    def answered(self, entry: dict[str, Any], status: int) -> None:
        with self.lock:
            entry["status"] = status

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in reversed(self.received)]

    def reset(self) -> None:
        with self.lock:
            self.received.clear()


# --------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, **headers: str) -> Response:
    return Response(status, json.dumps(payload, indent=2).encode(), headers=headers)


class Handler(BaseHTTPRequestHandler):
    """Routes requests to `route_*` methods; every route returns a Response."""

    server_version = "moderation-sim"
    # (method, path, handler name, requires API key)
    ROUTES = [
        ("GET", "/health", "route_health", False),
        ("GET", "/_sim/requests", "route_sim_requests", False),
        ("POST", "/_sim/reset", "route_sim_reset", False),
        ("POST", "/v1/moderations", "route_moderations", True),
    ]

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log(f"{self.client_address[0]} {format % args}")

    def dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        headers = {"x-request-id": "req_" + secrets.token_hex(16)} if path.startswith("/v1/") else {}
        try:
            self.raw_body = self.read_body()
            response = self.route(method, path)
        except OpenAIError as exc:
            response = json_response(exc.status, exc.body)
        response.headers = {**headers, **response.headers}
        self.send(response)

    def route(self, method: str, path: str) -> Response:
        for route_method, route_path, name, needs_auth in self.ROUTES:
            if route_path == path and route_method == method:
                if needs_auth:
                    self.authenticate()
                return getattr(self, name)()
        raise invalid_url(method, path)

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise invalid("Invalid Content-Length header.") from None
        return self.rfile.read(length)

    def authenticate(self) -> None:
        scheme, _, credentials = self.headers.get("Authorization", "").strip().partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise missing_key()
        if not hmac.compare_digest(key.encode(), self.sim.config.api_key.encode()):
            raise wrong_key(key)

    def send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    # ---- routes

    def route_health(self) -> Response:
        return json_response(200, {"ok": True})

    def route_sim_requests(self) -> Response:
        return json_response(200, {"data": self.sim.requests()})

    def route_sim_reset(self) -> Response:
        self.sim.reset()
        return json_response(200, {"reset": True})

    def route_moderations(self) -> Response:
        try:
            body = json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError):
            entry = self.sim.record(self.raw_body.decode("utf-8", "replace"))
            self.sim.answered(entry, 400)
            raise invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                          "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                          "sent was not valid JSON.)") from None
        entry = self.sim.record(body)
        started = time.monotonic()
        try:
            request = parse_request(body)
            controls = Controls.parse(request.texts)
            if controls.slow_ms:
                time.sleep(controls.slow_ms / 1000)
            if controls.down:
                raise overloaded()
            results = [moderate(item) for item in request.items]
        except OpenAIError as exc:
            self.sim.answered(entry, exc.status)
            log(f"moderation -> {exc.status} {exc.body['error']['message']}")
            raise
        self.sim.answered(entry, 200)
        answer = {"id": new_id("modr-"), "model": request.model, "results": results}
        flagged = [sorted(c for c, on in result["categories"].items() if on) for result in results]
        log(f"moderation {answer['id']} model={request.model} results={len(results)} flagged={flagged}")
        elapsed_ms = str(int((time.monotonic() - started) * 1000))
        return json_response(200, answer, **{"openai-model": request.model, "openai-processing-ms": elapsed_ms})


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    sim: Simulator


def make_server(config: Config) -> SimServer:
    """Bind the HTTP server (port 0 picks a free port) and attach a fresh simulator."""
    server = SimServer((config.host, config.port), Handler)
    server.sim = Simulator(config, f"http://{config.host}:{server.server_address[1]}")
    return server


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    server = make_server(config)
    # shutdown() blocks until serve_forever() returns, so call it from another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"moderation-sim listening on http://{config.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log("moderation-sim stopped")


if __name__ == "__main__":
    main()
