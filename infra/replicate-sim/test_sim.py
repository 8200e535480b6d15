"""Black-box tests of the Replicate simulator over real HTTP.

Run: $HOME/.cache/picture-venv/bin/python -m pytest infra/replicate-sim/test_sim.py
(needs pytest, Pillow and `replicate`, the official client, which the last section drives)
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput
from replicate.pagination import paginate
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

sys.path.insert(0, str(Path(__file__).parent))
import sim  # noqa: E402

TOKEN = "r8_test_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLUX = "black-forest-labs/flux-schnell"
FLUX_VERSION = sim.MODELS[FLUX]


# --------------------------------------------------------------------------- fixtures


def serve_sim():
    """A simulator on a free port, in this process; yields its URL."""
    config = sim.Config(host="127.0.0.1", port=0, api_token=TOKEN, predict_ms=100, retry_delays=(0.05, 0.05, 0.05),
                        fetch_timeout_ms=300)
    server = sim.make_server(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.sim.public_url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def base_url():
    yield from serve_sim()


class Receiver:
    """Webhook receiver; a `?fail=N` query answers 500 to the first N requests on that URL."""

    def __init__(self):
        self.cond = threading.Condition()
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []  # (path, headers, body, arrival)
        self.counts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fail = int(parse_qs(urlsplit(self.path).query).get("fail", ["0"])[0])
                with receiver.cond:
                    seen = receiver.counts.get(self.path, 0)
                    receiver.counts[self.path] = seen + 1
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append((self.path, headers, body, time.monotonic()))
                    receiver.cond.notify_all()
                self.send_response(500 if seen < fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, query: str = "") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/{uuid.uuid4().hex}{query}"

    def wait_for(self, url: str, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.matching(url)) >= count, timeout)
            return [(headers, body) for headers, body, _ in self.matching(url)]

    def arrivals(self, url: str) -> list[float]:
        """Monotonic arrival times of the requests made to `url`."""
        with self.cond:
            return [at for _, _, at in self.matching(url)]

    def matching(self, url: str) -> list[tuple[dict[str, str], bytes, float]]:
        path = url.split(str(self.server.server_address[1]), 1)[1]
        return [(headers, body, at) for p, headers, body, at in self.requests if p == path]


@pytest.fixture(scope="module")
def receiver():
    instance = Receiver()
    yield instance
    instance.server.shutdown()
    instance.server.server_close()


class Origin:
    """Serves input images: `put(path, body)` then GET it; `?status=N` answers N, `?delay=S` sleeps first."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []  # paths (with query) requested, in order
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                origin.requests.append(self.path)
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                time.sleep(float(query.get("delay", 0)))
                status = int(query.get("status", 200))
                body, content_type = origin.files.get(url.path, (b"<Error>NoSuchKey</Error>", "application/xml"))
                if url.path not in origin.files:
                    status = 404
                if status != 200:
                    body, content_type = b"<Error><Code>AccessDenied</Code></Error>", "application/xml"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, body: bytes, content_type: str = "image/png", query: str = "") -> str:
        """Serve `body` at a fresh path; returns its URL (plus `query`)."""
        path = f"/bucket/{uuid.uuid4().hex}"
        self.files[path] = (body, content_type)
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}{query}"


@pytest.fixture(scope="module")
def origin():
    instance = Origin()
    yield instance
    instance.server.shutdown()
    instance.server.server_close()


# --------------------------------------------------------------------------- helpers


def call(method: str, url: str, body=None, headers=None, raw: bytes | None = None):
    """Return (status, headers, parsed JSON or raw bytes)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, payload = exc.code, exc.headers, exc.read()
    if head.get_content_type() in ("application/json", "application/problem+json"):
        payload = json.loads(payload)
    return status, head, payload


def create(base_url, input, prefer=None, cancel_after=None, **fields):
    headers = dict(AUTH, **({"Prefer": prefer} if prefer else {}), **({"Cancel-After": cancel_after} if cancel_after else {}))
    return call("POST", f"{base_url}/v1/predictions", {"version": FLUX, "input": input, **fields}, headers)


def wait_status(base_url, prediction_id, statuses, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, body = call("GET", f"{base_url}/v1/predictions/{prediction_id}", headers=AUTH)
        if body["status"] in statuses:
            return body
        time.sleep(0.02)
    raise AssertionError(f"prediction {prediction_id} did not reach {sorted(statuses)}")


def wait_terminal(base_url, prediction_id, timeout=5.0):
    return wait_status(base_url, prediction_id, sim.TERMINAL, timeout)


def encode_image(size=(64, 48), color=(200, 30, 30), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def input_line(data: bytes, size: str, mime: str) -> str:
    """The log line the simulator prints for a fetched input image."""
    return f"input image: {len(data)} bytes sha256={hashlib.sha256(data).hexdigest()} {size} {mime}"


def mean_color(data: bytes) -> tuple[int, int, int]:
    return Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))


def percentages(logs: str) -> list[int]:
    """Progress percentages of the tqdm lines in `logs`, in order."""
    return [int(value) for value in re.findall(r"^ *(\d+)%\|", logs, re.MULTILINE)]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.split("_")[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    return any(
        hmac.compare_digest(base64.b64decode(sig.split(",", 1)[1]), expected)
        for sig in headers["webhook-signature"].split()
    )


def deliveries(base_url, prediction_id, count=0, timeout=5.0, event=None):
    """Delivery records, waiting until at least `count` exist and, if given, one of `event`
    (records follow the receiver's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        records = call("GET", f"{base_url}/_sim/predictions/{prediction_id}/deliveries")[2]
        done = len(records) >= count and (event is None or event in {r["event"] for r in records})
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


# --------------------------------------------------------------------------- auth and validation


def test_health_needs_no_auth(base_url):
    assert call("GET", f"{base_url}/health")[::2] == (200, {"ok": True})


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_missing_or_wrong_token_is_401(base_url, headers):
    status, head, body = call("GET", f"{base_url}/v1/predictions", headers=headers)
    assert status == 401
    assert head.get_content_type() == "application/problem+json"
    assert body == {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}


def test_token_scheme_is_accepted(base_url):
    assert call("GET", f"{base_url}/v1/predictions", headers={"Authorization": f"Token {TOKEN}"})[0] == 200


@pytest.mark.parametrize("version", [
    "a" * 64,
    "acme/unknown",
    f"{FLUX}:latest",
    f"{FLUX}:{sim.MODELS['google/nano-banana']}",
])
def test_unknown_version_is_422(base_url, version):
    status, _, body = call("POST", f"{base_url}/v1/predictions", {"version": version, "input": {"prompt": "x"}}, AUTH)
    assert status == 422
    assert body["title"] == "Invalid version or not permitted"


def test_input_validation(base_url):
    status, _, body = create(base_url, {"seed": 1})
    assert status == 422 and body["title"] == "Input validation failed"
    assert body["invalid_fields"] == [{"type": "required", "field": "input", "description": "prompt is required"}]
    status, _, body = create(base_url, {"prompt": "x"}, extra=1)
    assert status == 422 and body["invalid_fields"][0]["field"] == "extra"
    status, head, body = call("POST", f"{base_url}/v1/predictions", headers=AUTH, raw=b"{not json")
    assert status == 400 and head.get_content_type() == "application/problem+json"


def test_unknown_prediction_and_file_are_404(base_url):
    assert call("GET", f"{base_url}/v1/predictions/nope", headers=AUTH)[0] == 404
    assert call("GET", f"{base_url}/files/nope.png")[0] == 404


# --------------------------------------------------------------------------- create routes and lifecycle


@pytest.mark.parametrize("version,shown", [(f"{FLUX}:{FLUX_VERSION}", FLUX_VERSION), (FLUX_VERSION, FLUX_VERSION)])
def test_create_by_version_then_poll(base_url, version, shown):
    status, head, body = call("POST", f"{base_url}/v1/predictions", {"version": version, "input": {"prompt": "p"}}, AUTH)
    assert status == 201 and body["status"] == "starting"
    assert head["Location"] == body["urls"]["get"]
    assert len(body["id"]) == 26 and body["model"] == FLUX and body["version"] == shown
    assert body["output"] is None and "metrics" not in body
    final = wait_terminal(base_url, body["id"])
    assert final["status"] == "succeeded" and final["completed_at"].endswith("Z")
    assert set(final["metrics"]) == {"predict_time", "total_time"}


def test_models_route(base_url):
    status, head, body = call("POST", f"{base_url}/v1/models/{FLUX}/predictions", {"input": {"prompt": "p"}}, AUTH)
    assert status == 201 and body["version"] == "hidden" and body["model"] == FLUX
    assert call("POST", f"{base_url}/v1/models/acme/none/predictions", {"input": {"prompt": "p"}}, AUTH)[0] == 404


@pytest.mark.parametrize("input,size,fmt,mime", [
    ({"output_format": "png"}, (1024, 1024), "PNG", "image/png"),
    ({}, (1024, 1024), "WEBP", "image/webp"),
    ({"output_format": "jpg", "width": 640, "height": 480}, (640, 480), "JPEG", "image/jpeg"),
    ({"aspect_ratio": "16:9"}, (1820, 1024), "WEBP", "image/webp"),
    ({"aspect_ratio": "2:3", "output_format": "png"}, (1024, 1536), "PNG", "image/png"),
    ({"size": "512x768"}, (512, 768), "WEBP", "image/webp"),
])
def test_prefer_wait_returns_decodable_output(base_url, input, size, fmt, mime):
    status, head, body = create(base_url, {"prompt": "a lighthouse", **input}, prefer="wait=10")
    assert status == 201 and body["status"] == "succeeded"
    assert head["Preference-Applied"] == "wait=10"
    (url,) = body["output"]
    status, file_head, data = call("GET", url)
    assert status == 200 and file_head["Content-Type"] == mime and int(file_head["Content-Length"]) == len(data)
    image = Image.open(io.BytesIO(data))
    assert (image.size, image.format) == (size, fmt)


def test_images_are_deterministic(base_url):
    def image_bytes(input):
        return call("GET", create(base_url, input, prefer="wait")[2]["output"][0])[2]

    first = image_bytes({"prompt": "same prompt"})
    assert image_bytes({"prompt": "same prompt"}) == first
    assert image_bytes({"prompt": "same prompt", "seed": 7}) != first


def test_fail_marker(base_url):
    body = create(base_url, {"prompt": "boom [sim:fail]"}, prefer="wait")[2]
    assert body["status"] == "failed" and body["error"] == "Simulated failure" and body["output"] is None


def test_nsfw_marker(base_url, receiver):
    hook = receiver.url()
    body = create(base_url, {"prompt": "risky [sim:nsfw]"}, prefer="wait", webhook=hook)[2]
    assert body["status"] == "failed" and body["output"] is None
    assert body["error"] == "All generated images contained NSFW content. Try running it again with a different prompt."
    assert percentages(body["logs"]) == [0, 25, 50, 75, 100]
    assert body["started_at"] and body["metrics"]["predict_time"] > 0 and body["metrics"]["total_time"] > 0
    assert [json.loads(raw) for _, raw in receiver.wait_for(hook, 1)] == [body]
    assert [d["event"] for d in deliveries(base_url, body["id"], 1)] == ["completed"]


def fetch_all(urls: list[str]) -> list[bytes]:
    """The bytes behind each output URL (each must answer 200)."""
    answers = [call("GET", url) for url in urls]
    assert [status for status, _, _ in answers] == [200] * len(urls)
    return [data for _, _, data in answers]


def test_num_outputs_gives_distinct_images(base_url):
    input = {"prompt": "four lighthouses", "num_outputs": 4, "size": "256x192", "output_format": "png"}
    body = create(base_url, input, prefer="wait")[2]
    assert body["status"] == "succeeded" and body["input"]["num_outputs"] == 4
    names = [url.rsplit("/files/", 1)[1] for url in body["output"]]
    assert names == [f"{body['id']}.png"] + [f"{body['id']}-{i}.png" for i in (1, 2, 3)]
    images = fetch_all(body["output"])
    assert len(set(images)) == 4
    decoded = [Image.open(io.BytesIO(data)) for data in images]
    assert {(image.size, image.format) for image in decoded} == {((256, 192), "PNG")}
    assert fetch_all(create(base_url, input, prefer="wait")[2]["output"]) == images

    def first_of(count):  # index 0 is the image a single-output prediction gets
        asked = {**input, "num_outputs": count} if count else {k: v for k, v in input.items() if k != "num_outputs"}
        return fetch_all(create(base_url, asked, prefer="wait")[2]["output"])

    assert first_of(1) == first_of(None) == images[:1]


def test_num_outputs_with_data_uri_svg_and_bad_output(base_url):
    inline = create(base_url, {"prompt": "x [sim:data-uri]", "num_outputs": 3, "size": "64x64"},
                    prefer="wait")[2]["output"]
    assert len(set(inline)) == 3 and all(uri.startswith("data:image/webp;base64,") for uri in inline)
    vectors = create(base_url, {"prompt": "x [sim:svg]", "num_outputs": 2, "size": "64x64"}, prefer="wait")[2]["output"]
    assert [url.endswith(".svg") for url in vectors] == [True, True] and len(set(fetch_all(vectors))) == 2
    body = create(base_url, {"prompt": "x [sim:bad-output]", "num_outputs": 3}, prefer="wait")[2]
    assert body["status"] == "succeeded" and len(body["output"]) == 3 and len(set(body["output"])) == 3
    assert [call("GET", url)[0] for url in body["output"]] == [404] * 3


@pytest.mark.parametrize("asked,marker,kept,dropped", [
    (4, "[sim:outputs=2]", [0, 1], [2, 3]),
    (4, "[sim:outputs=4]", [0, 1, 2, 3], []),
    (2, "[sim:outputs=9]", [0, 1], []),
    (4, "[sim:nsfw-partial]", [0, 2], [1, 3]),
    (3, "[sim:nsfw-partial]", [0, 2], [1]),
    (2, "[sim:nsfw-partial]", [0], [1]),
    (4, "[sim:nsfw-partial] [sim:outputs=1]", [0], [1, 2, 3]),
])
def test_safety_checker_drops_some_outputs(base_url, asked, marker, kept, dropped, capsys):
    body = create(base_url, {"prompt": f"crowd {marker}", "num_outputs": asked, "size": "64x64"}, prefer="wait")[2]
    assert body["status"] == "succeeded" and body["error"] is None
    names = [url.rsplit("/files/", 1)[1] for url in body["output"]]
    assert names == [sim.output_name(body["id"], i, "webp") for i in kept]
    assert len(set(fetch_all(body["output"]))) == len(kept)
    lines = body["logs"].splitlines()
    assert percentages(body["logs"])[-1] == 100
    if dropped:
        assert lines[-len(dropped) - 1:] == [f"NSFW content detected in image {i}" for i in dropped] + [
            f"Total safe images: {len(kept)} out of {asked}"]
    else:
        assert "NSFW" not in body["logs"]
    expected = f"prediction {body['id']} succeeded: {len(kept)} of {asked} outputs delivered"
    assert expected in server_log(capsys, body["id"])


@pytest.mark.parametrize("asked,marker", [(1, "[sim:nsfw-partial]"), (4, "[sim:outputs=0]"), (3, "[sim:nsfw]")])
def test_safety_checker_dropping_every_output_fails(base_url, receiver, asked, marker, capsys):
    hook = receiver.url()
    body = create(base_url, {"prompt": f"all flagged {marker}", "num_outputs": asked}, prefer="wait", webhook=hook)[2]
    assert body["status"] == "failed" and body["output"] is None and body["error"] == sim.NSFW_ERROR
    assert percentages(body["logs"]) == [0, 25, 50, 75, 100] and "NSFW" not in body["logs"]
    assert [json.loads(raw) for _, raw in receiver.wait_for(hook, 1)] == [body]
    assert f"prediction {body['id']} failed: 0 of {asked} outputs delivered" in server_log(capsys, body["id"])


def server_log(capsys, prediction_id: str, timeout: float = 2.0) -> str:
    """The simulator's stderr captured so far, once it has the prediction's outputs line."""
    seen, deadline = "", time.monotonic() + timeout
    while f"prediction {prediction_id} " not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
        seen += capsys.readouterr().err
    return seen


@pytest.mark.parametrize("value,kind", [(0, "range"), (5, "range"), (-1, "range"), (2.5, "type"), (2.0, "type"),
                                        ("2", "type"), (True, "type"), (None, "type"), ([2], "type")])
def test_invalid_num_outputs_is_422(base_url, value, kind):
    for status, head, body in (
        create(base_url, {"prompt": "many", "num_outputs": value}),
        call("POST", f"{base_url}/v1/models/{FLUX}/predictions",
             {"input": {"prompt": "many", "num_outputs": value}}, AUTH),
    ):
        assert status == 422 and head.get_content_type() == "application/problem+json"
        assert body["title"] == "Input validation failed"
        assert body["invalid_fields"] == [
            {"type": kind, "field": "input.num_outputs", "description": "num_outputs must be an integer from 1 to 4"}]
        assert body["detail"] == "- input.num_outputs: num_outputs must be an integer from 1 to 4\n"


def test_other_models_ignore_num_outputs(base_url):
    for value in (3, 9, "many"):
        status, _, body = call("POST", f"{base_url}/v1/models/google/nano-banana/predictions",
                               {"input": {"prompt": "one only", "num_outputs": value}}, dict(AUTH, Prefer="wait"))
        assert status == 201 and body["status"] == "succeeded" and len(body["output"]) == 1


def test_hang_then_cancel(base_url):
    status, _, body = create(base_url, {"prompt": "stuck [sim:hang]"}, prefer="wait=1")
    assert status == 202 and body["status"] == "processing"
    status, _, canceled = call("POST", body["urls"]["cancel"], headers=AUTH)
    assert status == 200 and canceled["status"] == "canceled"
    assert canceled["completed_at"] and "metrics" in canceled
    assert call("POST", body["urls"]["cancel"], headers=AUTH)[::2] == (200, canceled)


def test_bad_output_marker(base_url):
    body = create(base_url, {"prompt": "x [sim:bad-output]"}, prefer="wait")[2]
    assert body["status"] == "succeeded" and f"/files/missing-{body['id']}.png" in body["output"][0]
    assert call("GET", body["output"][0])[0] == 404


def test_data_uri_marker(base_url):
    body = create(base_url, {"prompt": "x [sim:data-uri]", "output_format": "png"}, prefer="wait")[2]
    header, encoded = body["output"][0].split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(encoded))).format == "PNG"


@pytest.mark.parametrize("category,slug", [
    ("violence", "violence"), ("violence/graphic", "violence_graphic"), ("violence_graphic", "violence_graphic"),
    ("Sexual", "sexual"), ("self-harm/intent", "self-harm_intent"),
])
def test_flagged_marker_marks_the_first_output_url(base_url, category, slug):
    input = {"prompt": f"a duel [sim:flagged={category}]", "num_outputs": 3, "size": "64x48", "output_format": "png"}
    body = create(base_url, input, prefer="wait")[2]
    assert body["status"] == "succeeded" and body["error"] is None
    names = [url.rsplit("/files/", 1)[1] for url in body["output"]]
    assert names == [f"{body['id']}-mod-flag-{slug}.png", f"{body['id']}-1.png", f"{body['id']}-2.png"]
    # what the moderation simulator looks for: the category not followed by a letter, "/" or "_"
    marker = re.compile(rf"mod-flag-{re.escape(slug)}(?![a-z/_])".encode())
    assert marker.search(body["output"][0].encode())
    files = fetch_all(body["output"])  # the marked URL is served too
    for data in files:
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.size) == ("PNG", (64, 48))
    assert marker.search(files[0]) and Image.open(io.BytesIO(files[0])).info["Comment"] == sim.flag_note(slug)
    assert all(b"mod-flag-" not in data for data in files[1:])
    plain = create(base_url, {**input, "prompt": "a duel"}, prefer="wait")[2]["output"]
    assert all("mod-flag" not in url for url in plain)


@pytest.mark.parametrize("fmt,pil_format", [("webp", "WEBP"), ("png", "PNG"), ("jpg", "JPEG"), ("svg", None)])
def test_flagged_marker_with_data_uri_marks_the_first_image_bytes(base_url, fmt, pil_format):
    extra = {"prompt": "a duel [sim:flagged=violence/graphic] [sim:data-uri] [sim:svg]"} if fmt == "svg" else {
        "prompt": "a duel [sim:flagged=violence/graphic] [sim:data-uri]", "output_format": fmt}
    body = create(base_url, {"num_outputs": 2, "size": "64x48", **extra}, prefer="wait")[2]
    assert body["status"] == "succeeded" and len(body["output"]) == 2
    payloads = [base64.b64decode(uri.split(",", 1)[1]) for uri in body["output"]]
    assert re.search(rb"mod-flag-violence_graphic(?![a-z/_])", payloads[0])
    assert b"mod-flag-" not in payloads[1] and all("mod-flag" not in uri[:40] for uri in body["output"])
    for data in payloads:
        if pil_format is None:
            assert ElementTree.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
        else:
            image = Image.open(io.BytesIO(data))
            image.load()
            assert (image.format, image.size) == (pil_format, (64, 48))
    if fmt == "svg":
        assert ElementTree.fromstring(payloads[0])[0].text == sim.flag_note("violence_graphic")


def test_svg_marker(base_url):
    input = {"prompt": "a vector fox [sim:svg]", "width": 640, "height": 480}
    body = create(base_url, input, prefer="wait")[2]
    assert body["status"] == "succeeded" and body["output"][0].endswith(".svg")
    status, head, data = call("GET", body["output"][0])
    assert status == 200 and head["Content-Type"] == "image/svg+xml"
    root = ElementTree.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("640", "480", "0 0 640 480")
    assert call("GET", create(base_url, input, prefer="wait")[2]["output"][0])[2] == data
    inline = create(base_url, {"prompt": "inline [sim:svg] [sim:data-uri]"}, prefer="wait")[2]["output"][0]
    assert inline.startswith("data:image/svg+xml;base64,")


def test_slow_marker(base_url):
    status, _, body = create(base_url, {"prompt": "x [sim:slow=1500]"}, prefer="wait=1")
    assert status == 202 and body["status"] in ("starting", "processing")
    assert wait_terminal(base_url, body["id"])["status"] == "succeeded"


def test_progress_in_logs_while_processing(base_url):
    status, _, body = create(base_url, {"prompt": "progress [sim:slow=1000]", "seed": 42})
    assert status == 201 and body["status"] == "starting" and body["logs"] == "" and body["started_at"] is None
    seen = []  # latest percentage of each poll while processing
    while (polled := call("GET", body["urls"]["get"], headers=AUTH)[2])["status"] not in sim.TERMINAL:
        if polled["status"] == "processing":
            assert polled["started_at"] and percentages(polled["logs"])
            seen.append(percentages(polled["logs"])[-1])
        time.sleep(0.02)
    assert seen == sorted(seen) and len({value for value in seen if 0 < value < 100}) >= 2
    assert polled["status"] == "succeeded" and polled["logs"].startswith("Using seed: 42\n")
    assert percentages(polled["logs"]) == [0, 25, 50, 75, 100]
    assert re.fullmatch(r"100%\|█{10}\| 4/4 \[00:0\d<00:00, +\d+\.\d\dit/s\]", polled["logs"].splitlines()[-1])


@pytest.mark.parametrize("steps,total", [(2, 2), (100, 50), (0, 1), ("many", 4)])
def test_num_inference_steps_sets_the_step_count(base_url, steps, total):
    body = create(base_url, {"prompt": "steps", "num_inference_steps": steps}, prefer="wait")[2]
    assert body["status"] == "succeeded"
    assert len(percentages(body["logs"])) == total + 1 and f"| {total}/{total} [" in body["logs"]


def test_hang_and_fail_stop_at_partial_progress(base_url):
    hung = create(base_url, {"prompt": "x [sim:hang]"})[2]
    failed = create(base_url, {"prompt": "x [sim:fail]"}, prefer="wait")[2]
    assert failed["status"] == "failed" and percentages(failed["logs"]) == [0, 25, 50]
    assert percentages(wait_status(base_url, hung["id"], {"processing"})["logs"]) == [0]
    time.sleep(0.2)
    assert percentages(call("POST", hung["urls"]["cancel"], headers=AUTH)[2]["logs"]) == [0]


def test_queue_marker_keeps_starting(base_url):
    body = create(base_url, {"prompt": "queued [sim:queue=400]"})[2]
    time.sleep(0.2)
    polled = call("GET", body["urls"]["get"], headers=AUTH)[2]
    assert (polled["status"], polled["started_at"], polled["logs"]) == ("starting", None, "")
    final = wait_terminal(base_url, body["id"])
    assert final["status"] == "succeeded"
    assert parse_time(final["started_at"]) - parse_time(final["created_at"]) >= timedelta(seconds=0.4)


def test_noise_marker_makes_large_deterministic_images(base_url):
    def image_bytes(prompt):
        return call("GET", create(base_url, {"prompt": prompt, "size": "576x576", "output_format": "png"}, prefer="wait")[2]["output"][0])[2]

    plain, noisy = image_bytes("grain"), image_bytes("grain [sim:noise]")
    assert len(noisy) > 800_000 > 10 * len(plain)
    assert image_bytes("grain [sim:noise]") == noisy
    assert Image.open(io.BytesIO(noisy)).size == (576, 576)


def test_list_pagination_newest_first(base_url):
    ids = [create(base_url, {"prompt": f"list {i}"})[2]["id"] for i in range(3)]
    status, _, page = call("GET", f"{base_url}/v1/predictions?page_size=2", headers=AUTH)
    assert status == 200 and page["previous"] is None
    assert [item["id"] for item in page["results"]] == ids[::-1][:2]
    second = call("GET", page["next"], headers=AUTH)[2]
    assert second["results"][0]["id"] == ids[0] and "cursor=" in second["previous"]
    assert call("GET", second["previous"], headers=AUTH)[2]["results"][0]["id"] == ids[2]


def test_list_created_after_stops_at_older_predictions(base_url):
    older = create(base_url, {"prompt": "before the cut"})[2]
    time.sleep(1.1)
    cut = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    time.sleep(0.1)
    newer = [create(base_url, {"prompt": f"after the cut {i}"})[2]["id"] for i in range(3)]
    status, _, page = call("GET", f"{base_url}/v1/predictions?page_size=2&created_after={cut}", headers=AUTH)
    assert status == 200 and [p["id"] for p in page["results"]] == newer[::-1][:2]
    last = call("GET", page["next"], headers=AUTH)[2]
    assert [p["id"] for p in last["results"]] == newer[:1] and last["next"] is None
    assert older["id"] not in {p["id"] for p in page["results"] + last["results"]}


def test_injected_faults_answer_then_clear(base_url):
    status, _, _ = call("POST", f"{base_url}/_sim/faults", {"ops": ["create", "get"], "status": 429, "count": 2})
    assert status == 200
    for _ in range(2):
        status, head, _ = create(base_url, {"prompt": "throttled"})
        assert status == 429 and head["Retry-After"] == "1"
    status, _, made = create(base_url, {"prompt": "through"})
    assert status == 201
    call("POST", f"{base_url}/_sim/faults", {"ops": ["get"], "status": 503, "count": 5})
    assert call("GET", f"{base_url}/v1/predictions/{made['id']}", headers=AUTH)[0] == 503
    assert call("DELETE", f"{base_url}/_sim/faults")[0] == 200
    assert call("GET", f"{base_url}/v1/predictions/{made['id']}", headers=AUTH)[0] == 200
    assert call("POST", f"{base_url}/_sim/faults", {"ops": ["nothing"], "status": 500})[0] == 400


# --------------------------------------------------------------------------- input images


def test_image_url_is_fetched_and_logged(base_url, origin):
    png = encode_image((64, 48))
    url = origin.put(png, query="?X-Amz-Signature=secret")
    status, _, body = create(base_url, {"prompt": "edit me", "image": url}, prefer="wait")
    assert status == 201 and body["status"] == "succeeded"
    lines = body["logs"].splitlines()
    assert lines[0] == input_line(png, "64x48", "image/png") and lines[1].startswith("Using seed: ")
    assert percentages(body["logs"])[-1] == 100
    assert origin.requests.count(urlsplit(url).path + "?X-Amz-Signature=secret") == 1


def test_data_uri_and_input_image_fields(base_url):
    jpeg = encode_image((40, 30), fmt="JPEG")
    uri = f"data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}"
    body = create(base_url, {"prompt": "inline", "input_image": uri}, prefer="wait")[2]
    assert body["status"] == "succeeded" and input_line(jpeg, "40x30", "image/jpeg") in body["logs"].splitlines()


def test_image_input_list_fetches_each_in_order(base_url, origin):
    png, webp = encode_image((16, 16)), encode_image((20, 10), fmt="WEBP")
    inputs = [origin.put(png), f"data:image/webp;base64,{base64.b64encode(webp).decode()}"]
    body = create(base_url, {"prompt": "combine", "image_input": inputs}, prefer="wait")[2]
    assert body["status"] == "succeeded"
    assert body["logs"].splitlines()[:2] == [input_line(png, "16x16", "image/png"), input_line(webp, "20x10", "image/webp")]
    assert create(base_url, {"prompt": "none", "image_input": []}, prefer="wait")[2]["logs"].startswith("Using seed: ")


def test_fetch_failure_fails_asynchronously_with_completed_webhook(base_url, origin, receiver):
    url, hook = origin.put(encode_image(), query="?status=403"), receiver.url()
    status, _, body = create(base_url, {"prompt": "expired", "image": url}, webhook=hook)
    assert status == 201 and body["status"] == "starting"
    final = wait_terminal(base_url, body["id"])
    assert final["status"] == "failed" and final["output"] is None
    assert final["error"] == "Failed to fetch input image: HTTP 403 Forbidden"
    assert final["started_at"] and final["metrics"]["predict_time"] >= 0 and percentages(final["logs"]) == []
    assert final["logs"] == f"Failed to fetch input image image from {url.split('?')[0]}: HTTP 403 Forbidden\n"
    assert [json.loads(raw) for _, raw in receiver.wait_for(hook, 1)] == [final]
    assert [d["event"] for d in deliveries(base_url, body["id"], 1)] == ["completed"]


@pytest.mark.parametrize("make,error", [
    (lambda o: o.put(encode_image())[:-4] + "gone", "HTTP 404 Not Found"),
    (lambda o: o.put(b"<html>login</html>", "text/html"), "not a PNG, JPEG or WebP image (18 bytes)"),
    (lambda o: o.put(encode_image(), query="?delay=1"), "timed out after 0.3 s"),
    (lambda o: "http://127.0.0.1:9/closed.png", "connection failed ("),
    (lambda o: "data:image/png;base64,%%%", "invalid data URI (bad base64)"),
    (lambda o: "data:text/plain,hello", "not a PNG, JPEG or WebP image (5 bytes)"),
    (lambda o: "ftp://example.com/a.png", "unsupported URL scheme 'ftp'"),
    (lambda o: "just text", "not a URL or data URI"),
    (lambda o: "http://[::1/a.png", "not a URL or data URI"),
    (lambda o: "http://exa mple.com/a.png", "connection failed ("),
])
def test_fetch_failures(base_url, origin, make, error):
    body = create(base_url, {"prompt": "bad source", "image": make(origin)}, prefer="wait")[2]
    assert body["status"] == "failed" and body["error"].startswith(f"Failed to fetch input image: {error}")
    assert body["logs"].startswith("Failed to fetch input image image ")


def test_one_bad_image_in_the_list_fails(base_url, origin):
    good, bad = origin.put(encode_image()), origin.put(b"nope", "text/plain")
    body = create(base_url, {"prompt": "mixed", "image_input": [good, bad]}, prefer="wait")[2]
    assert body["status"] == "failed" and body["error"] == "Failed to fetch input image: not a PNG, JPEG or WebP image (4 bytes)"
    assert body["logs"].splitlines()[0].startswith("Failed to fetch input image image_input[1] from http://")


@pytest.mark.parametrize("input,field", [
    ({"image": 5}, "input.image"), ({"input_image": ["x"]}, "input.input_image"),
    ({"image_input": "http://x/a.png"}, "input.image_input"), ({"image_input": [1]}, "input.image_input"),
])
def test_image_input_types_are_validated(base_url, input, field):
    status, _, body = create(base_url, {"prompt": "typed", **input})
    assert status == 422 and [item["field"] for item in body["invalid_fields"]] == [field]


def test_output_takes_on_the_source_colour_and_matched_size(base_url, origin):
    def output(input):
        body = create(base_url, {"prompt": "tinted", "output_format": "png", **input}, prefer="wait")[2]
        return call("GET", body["output"][0])[2]

    red = origin.put(encode_image((300, 200), (255, 0, 0)))
    plain, tinted = output({}), output({"image": red})
    assert mean_color(tinted)[0] - mean_color(tinted)[1] > mean_color(plain)[0] - mean_color(plain)[1] + 40
    assert output({"image": red}) == tinted
    assert Image.open(io.BytesIO(tinted)).size == (1024, 1024)
    matched = output({"image": red, "aspect_ratio": "match_input_image"})
    assert Image.open(io.BytesIO(matched)).size == (1536, 1024)


# --------------------------------------------------------------------------- webhooks


def test_webhook_signature_and_default_events(base_url, receiver):
    secret = call("GET", f"{base_url}/v1/webhooks/default/secret", headers=AUTH)[2]["key"]
    assert secret.startswith("whsec_")
    url = receiver.url("?customId=1")
    body = create(base_url, {"prompt": "hooked"}, webhook=url)[2]
    received = receiver.wait_for(url, 2)
    assert [json.loads(raw)["status"] for _, raw in received] == ["succeeded", "succeeded"]
    assert [d["event"] for d in deliveries(base_url, body["id"], 2)] == ["output", "completed"]
    for headers, raw in received:
        assert headers["content-type"] == "application/json"
        assert verify_signature(secret, headers, raw)
    assert received[0][0]["webhook-id"] != received[1][0]["webhook-id"]
    assert json.loads(received[1][1]) == call("GET", body["urls"]["get"], headers=AUTH)[2]


def test_webhook_events_filter_start_and_cancel(base_url, receiver):
    url = receiver.url()
    body = create(base_url, {"prompt": "x [sim:hang]"}, webhook=url, webhook_events_filter=["start", "completed"])[2]
    wait_status(base_url, body["id"], {"processing"})
    call("POST", body["urls"]["cancel"], headers=AUTH)
    received = receiver.wait_for(url, 2)
    assert [json.loads(raw)["status"] for _, raw in received] == ["processing", "canceled"]
    assert [d["event"] for d in deliveries(base_url, body["id"], 2)] == ["start", "completed"]


def test_completed_webhook_is_retried(base_url, receiver):
    url = receiver.url("?fail=2")
    body = create(base_url, {"prompt": "retry me"}, webhook=url, webhook_events_filter=["completed"])[2]
    received = receiver.wait_for(url, 3)
    assert len({headers["webhook-id"] for headers, _ in received}) == 1
    assert [d["status"] for d in deliveries(base_url, body["id"], 3)] == [500, 500, 200]


def test_logs_events_are_throttled(base_url, receiver):
    slow = {"prompt": "chatty [sim:slow=1200]", "num_inference_steps": 50}
    url, logs_only = receiver.url(), receiver.url()
    body = create(base_url, slow, webhook=url, webhook_events_filter=["logs", "completed"])[2]
    quiet = create(base_url, slow, webhook=logs_only, webhook_events_filter=["logs"])[2]
    final = wait_terminal(base_url, body["id"])
    events = [d["event"] for d in deliveries(base_url, body["id"], event="completed")]
    received = receiver.wait_for(url, len(events))
    assert events[-1] == "completed" and set(events[:-1]) == {"logs"} and 2 <= len(events) - 1 <= 4
    progress = [percentages(json.loads(raw)["logs"])[-1] for _, raw in received]
    assert progress == sorted(set(progress)) and progress[-1] == 100
    assert json.loads(received[-1][1]) == final
    arrivals = receiver.arrivals(url)[:-1]
    # Spaced by the throttle on average (one late delivery on a loaded machine may arrive
    # close to the next one; unthrottled events would come tens of milliseconds apart).
    assert (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) >= 0.4
    # Without `completed`, the last logs state still arrives.
    def last_state():
        return json.loads(receiver.wait_for(logs_only, 1)[-1][1])

    wait_terminal(base_url, quiet["id"])
    deadline = time.monotonic() + 3
    while percentages(last_state()["logs"])[-1] < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert percentages(last_state()["logs"])[-1] == 100 and last_state()["status"] == "processing"
    assert {d["event"] for d in deliveries(base_url, quiet["id"])} == {"logs"}


def test_no_webhook_marker(base_url, receiver):
    url = receiver.url()
    body = create(base_url, {"prompt": "quiet [sim:no-webhook]"}, prefer="wait", webhook=url)[2]
    assert body["status"] == "succeeded"
    time.sleep(0.2)
    assert receiver.wait_for(url, 1, timeout=0.1) == [] and deliveries(base_url, body["id"]) == []
    assert call("POST", f"{base_url}/_sim/predictions/{body['id']}/redeliver")[0] == 409


def test_redeliver_keeps_webhook_id_and_body(base_url, receiver):
    secret = call("GET", f"{base_url}/v1/webhooks/default/secret", headers=AUTH)[2]["key"]
    url = receiver.url()
    body = create(base_url, {"prompt": "again"}, webhook=url, webhook_events_filter=["completed"])[2]
    (original,) = receiver.wait_for(url, 1)
    deliveries(base_url, body["id"], 1)
    assert call("POST", f"{base_url}/_sim/predictions/{body['id']}/redeliver")[::2] == (200, {"status": 200})
    again = receiver.wait_for(url, 2)[1]
    assert again[0]["webhook-id"] == original[0]["webhook-id"] and again[1] == original[1]
    assert verify_signature(secret, again[0], again[1])
    assert [(d["event"], d["webhook_id"]) for d in deliveries(base_url, body["id"])] == [
        ("completed", original[0]["webhook-id"])
    ] * 2


# --------------------------------------------------------------------------- deadlines and throttling


def test_cancel_after_aborts_queued_and_cancels_running(base_url, receiver):
    queued_url, running_url = receiver.url(), receiver.url()
    status, _, queued = create(base_url, {"prompt": "never runs [sim:queue=60000]"}, cancel_after="5s",
                               webhook=queued_url, webhook_events_filter=["start", "completed"])
    assert status == 201 and parse_time(queued["deadline"]) - parse_time(queued["created_at"]) == timedelta(seconds=5)
    status, _, running = call("POST", f"{base_url}/v1/models/{FLUX}/predictions", {
        "input": {"prompt": "runs forever [sim:hang]"}, "webhook": running_url,
        "webhook_events_filter": ["start", "completed"],
    }, dict(AUTH, **{"Cancel-After": "5"}))
    assert status == 201 and running["deadline"]
    polled = call("GET", queued["urls"]["get"], headers=AUTH)[2]
    assert (polled["status"], polled["started_at"], polled["logs"]) == ("starting", None, "")
    aborted = wait_terminal(base_url, queued["id"], timeout=8)
    assert aborted["status"] == "aborted" and aborted["started_at"] is None and aborted["completed_at"]
    assert aborted["metrics"]["predict_time"] == 0 and aborted["metrics"]["total_time"] >= 5
    canceled = wait_terminal(base_url, running["id"], timeout=2)
    assert canceled["status"] == "canceled" and canceled["started_at"] and canceled["metrics"]["predict_time"] > 4
    assert [json.loads(raw) for _, raw in receiver.wait_for(queued_url, 1)] == [aborted]
    assert [json.loads(raw)["status"] for _, raw in receiver.wait_for(running_url, 2)] == ["processing", "canceled"]
    assert [d["event"] for d in deliveries(base_url, running["id"], 2)] == ["start", "completed"]


@pytest.mark.parametrize("value,seconds", [("30s", 30), ("5m", 300), ("1h30m45s", 5445), ("7", 7)])
def test_cancel_after_formats(base_url, value, seconds):
    status, _, body = create(base_url, {"prompt": "deadline"}, cancel_after=value)
    assert status == 201
    assert parse_time(body["deadline"]) - parse_time(body["created_at"]) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value,detail", [
    ("4", "at least 5 seconds"), ("0s", "at least 5 seconds"),
    ("soon", "a duration"), ("1h30", "a duration"), ("-5", "a duration"), ("5 m", "a duration"), ("1.5s", "a duration"),
])
def test_cancel_after_errors(base_url, value, detail):
    def newest():
        return [p["id"] for p in call("GET", f"{base_url}/v1/predictions?page_size=1", headers=AUTH)[2]["results"]]

    before = newest()
    status, head, body = create(base_url, {"prompt": "deadline"}, cancel_after=value)
    assert status == 422 and head.get_content_type() == "application/problem+json"
    assert body["title"] == "Invalid Cancel-After header" and detail in body["detail"] and "Cancel-After" in body["detail"]
    assert newest() == before


def test_create_429_marker_counts_attempts_per_prompt(base_url):
    prompt = f"busy {uuid.uuid4().hex} [sim:create-429=2]"
    for route in ("/v1/predictions", f"/v1/models/{FLUX}/predictions"):
        status, head, body = call("POST", f"{base_url}{route}", {"version": FLUX, "input": {"prompt": prompt}}
                                  if route == "/v1/predictions" else {"input": {"prompt": prompt}}, AUTH)
        assert status == 429 and head["Retry-After"] == "1" and head.get_content_type() == "application/problem+json"
        assert body == {"title": "Request was throttled.",
                        "detail": "Request was throttled. Expected available in 1 second.", "status": 429}
    assert create(base_url, {"prompt": prompt}, prefer="wait")[2]["status"] == "succeeded"
    assert create(base_url, {"prompt": prompt})[0] == 201
    assert create(base_url, {"prompt": prompt + " "})[0] == 429


# --------------------------------------------------------------------------- process


def test_cli_prints_ready_line_and_stops_on_sigterm():
    env = dict(os.environ, SIM_PREDICT_MS="100")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "sim.py"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("replicate-sim listening on http://127.0.0.1:")
        assert call("GET", f"{line.rsplit(' ', 1)[1]}/health")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()


# --------------------------------------------------------------------------- the official client
# `replicate` (the official Python client, 1.0.x) driven against the simulator as an app would
# drive Replicate. It gets a simulator of its own: the 1.0.x client predates the `aborted` status
# (a Cancel-After test above leaves such a prediction in the shared one), and a list page holding
# one would not parse.


@pytest.fixture(scope="module")
def client_url():
    yield from serve_sim()


@pytest.fixture(scope="module")
def client(client_url):
    instance = replicate.Client(api_token=TOKEN, base_url=client_url)
    instance.poll_interval = 0.02
    return instance


def read_outputs(client, prediction) -> list[Image.Image]:
    """Each output URL fetched through the client's own HTTP session, decoded."""
    assert isinstance(prediction.output, list)
    return [Image.open(io.BytesIO(FileOutput(url, client).read())) for url in prediction.output]


def test_client_create_by_model_then_wait(client):
    prediction = client.predictions.create(model=FLUX, input={"prompt": "a lighthouse"})
    assert (prediction.status, prediction.model, prediction.version) == ("starting", FLUX, "hidden")
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.error is None
    assert prediction.progress == replicate.prediction.Prediction.Progress(1.0, 4, 4)
    assert set(prediction.metrics) == {"predict_time", "total_time"} and prediction.completed_at
    assert [(image.format, image.size) for image in read_outputs(client, prediction)] == [("WEBP", (1024, 1024))]


@pytest.mark.parametrize("version", [FLUX_VERSION, f"{FLUX}:{FLUX_VERSION}"])
def test_client_create_by_version_with_four_outputs(client, version):
    input = {"prompt": "four boats", "num_outputs": 4, "size": "128x96"}
    prediction = client.predictions.create(version=version, input=input)
    assert prediction.version == FLUX_VERSION
    while prediction.status not in ("succeeded", "failed", "canceled"):
        time.sleep(0.02)
        prediction.reload()
    assert prediction.status == "succeeded" and prediction.input == input
    images = read_outputs(client, prediction)
    assert len(images) == 4 and len({image.tobytes() for image in images}) == 4
    assert {image.size for image in images} == {(128, 96)}


def test_client_run_blocks_until_done(client, client_url):
    (url,) = client.run(FLUX, input={"prompt": "blocking"})  # `Prefer: wait`, one call
    assert url.startswith(f"{client_url}/files/")  # plain http: left a string
    (inline,) = client.run(FLUX, input={"prompt": "inline [sim:data-uri]", "output_format": "png"})
    assert isinstance(inline, FileOutput) and Image.open(io.BytesIO(inline.read())).format == "PNG"
    prediction = client.models.predictions.create(model=FLUX, input={"prompt": "blocking"}, wait=True)
    assert prediction.status == "succeeded" and len(prediction.output) == 1
    with pytest.raises(ModelError) as caught:
        client.run(FLUX, input={"prompt": "doomed [sim:fail]"})
    assert caught.value.prediction.status == "failed" and str(caught.value) == "Simulated failure"


def test_client_fail_marker(client):
    prediction = client.predictions.create(model=FLUX, input={"prompt": "doomed [sim:fail]"})
    prediction.wait()
    assert (prediction.status, prediction.error, prediction.output) == ("failed", "Simulated failure", None)
    assert prediction.progress.percentage == 0.5


def test_client_cancel(client):
    first = client.predictions.create(model=FLUX, input={"prompt": "forever [sim:hang]"})
    second = client.predictions.create(version=FLUX_VERSION, input={"prompt": "forever [sim:hang]"})
    assert client.predictions.cancel(first.id).status == "canceled"
    second.cancel()
    assert second.status == "canceled" and second.metrics is not None
    first.wait()
    assert first.status == "canceled" and first.output is None


def test_client_list_pages(client):
    ids = [client.predictions.create(model=FLUX, input={"prompt": f"listed {i}"}).id for i in range(3)]
    assert [p.id for p in client.predictions.list()][:3] == ids[::-1]
    page = client.predictions.list("/v1/predictions?page_size=2")
    assert [p.id for p in page] == ids[:0:-1] and page.previous is None
    second = client.predictions.list(page.next)
    assert second[0].id == ids[0] and second.previous
    assert {p.id for p in client.predictions.list(second.previous)} == set(ids[1:])
    seen = [p.id for pages in paginate(lambda cursor: client.predictions.list(
        "/v1/predictions?page_size=2" if cursor is ... else cursor)) for p in pages]
    assert seen[:3] == ids[::-1] and len(seen) == len(set(seen))


def test_client_errors(client, client_url):
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(model=FLUX, input={"prompt": "too many", "num_outputs": 5})
    assert (caught.value.status, caught.value.title) == (422, "Input validation failed")
    assert "num_outputs must be an integer from 1 to 4" in caught.value.detail
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(version="a" * 64, input={"prompt": "x"})
    assert caught.value.status == 422
    with pytest.raises(ReplicateError) as caught:
        client.predictions.get("nope")
    assert caught.value.status == 404
    with pytest.raises(ReplicateError) as caught:
        replicate.Client(api_token="wrong", base_url=client_url).predictions.list()
    assert (caught.value.status, caught.value.title) == (401, "Unauthenticated")


def test_client_validates_webhook_signature(client, receiver):
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    url = receiver.url()
    prediction = client.predictions.create(model=FLUX, input={"prompt": "signed"}, webhook=url,
                                           webhook_events_filter=["start", "completed"])
    prediction.wait()
    received = receiver.wait_for(url, 2)
    assert [json.loads(raw)["status"] for _, raw in received] == ["processing", "succeeded"]
    for headers, raw in received:
        assert client.webhooks.validate(headers=headers, body=raw.decode(), secret=secret, tolerance=60) is None
        request = httpx.Request("POST", url, headers=headers, content=raw)
        assert replicate.webhooks.validate(request=request, secret=secret) is None
        with pytest.raises(InvalidSignatureError):
            client.webhooks.validate(headers=headers, body=raw.decode(),
                                     secret=WebhookSigningSecret(key="whsec_" + base64.b64encode(b"wrong").decode()))
    assert replicate.prediction.Prediction(**json.loads(received[1][1])).dict() == prediction.dict()
