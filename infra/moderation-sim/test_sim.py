"""Black-box tests of the moderation simulator, driven through the official `openai` library.

Run: python -m pytest -q infra/moderation-sim   (needs `pip install pytest openai`)
"""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import openai
import pytest

SIM = Path(__file__).parent / "sim.py"
API_KEY = "sk-moderation-test"
CATEGORIES = [
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors",
    "violence", "violence/graphic",
]
IMAGE_CATEGORIES = {"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence", "violence/graphic"}


def attr(category: str) -> str:
    """The openai library's attribute name of a category: "sexual/minors" -> "sexual_minors"."""
    return category.replace("/", "_").replace("-", "_")


# --------------------------------------------------------------------------- fixtures


def start_sim(env: dict[str, str], log_path: Path, args: list[str]) -> tuple[subprocess.Popen, str]:
    log_file = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(SIM), *args],
        stdout=subprocess.PIPE, stderr=log_file, text=True,
        env={key: value for key, value in os.environ.items() if not key.startswith("MODERATION_SIM_")} | env,
    )
    log_file.close()
    line = process.stdout.readline().strip()
    assert line.startswith("moderation-sim listening on http://127.0.0.1:"), line
    return process, line.rsplit(" ", 1)[1]


def stop_sim(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory):
    process, url = start_sim({"MODERATION_SIM_API_KEY": API_KEY}, tmp_path_factory.mktemp("sim") / "sim.log",
                             ["--host", "127.0.0.1", "--port", "0"])
    yield url
    stop_sim(process)


@pytest.fixture
def client(sim_url):
    return openai.OpenAI(api_key=API_KEY, base_url=f"{sim_url}/v1", max_retries=0, timeout=10)


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """Plain HTTP: (status, headers, parsed JSON)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, payload = exc.code, exc.headers, exc.read()
    return status, dict(head), json.loads(payload)


def moderate_raw(sim_url: str, body: Any, key: str = API_KEY) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"} if key else {}
    return call("POST", f"{sim_url}/v1/moderations", body, headers)


def png(text: str | None = None, size: tuple[int, int] = (4, 3), rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid RGB PNG of one colour, built by hand; with `text`, a `tEXt` chunk `Comment` holding it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    width, height = size
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + (chunk(b"tEXt", b"Comment\x00" + text.encode("latin-1")) if text is not None else b"")
            + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def error(message_part: str | None, kind: str, param: str | None, code: str | None):
    """Matcher for OpenAI's error body."""
    def check(body: Any) -> None:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (kind, param, code), body
        if message_part:
            assert message_part in body["error"]["message"], body
    return check


# --------------------------------------------------------------------------- basics


def test_health(sim_url):
    assert call("GET", f"{sim_url}/health")[::2] == (200, {"ok": True})


def test_benign_text_is_not_flagged(client):
    raw = client.moderations.with_raw_response.create(model="omni-moderation-latest", input="a cat on a sofa")
    assert raw.http_response.status_code == 200 and raw.headers["x-request-id"].startswith("req_")
    body = raw.http_response.json()
    assert set(body) == {"id", "model", "results"} and len(body["results"]) == 1
    result = body["results"][0]
    assert set(result) == {"flagged", "categories", "category_scores", "category_applied_input_types"}
    for mapping in ("categories", "category_scores", "category_applied_input_types"):
        assert list(result[mapping]) == CATEGORIES
    assert all(value is False for value in result["categories"].values())
    assert all(0.0001 <= value < 0.01 for value in result["category_scores"].values())
    assert all(value == ["text"] for value in result["category_applied_input_types"].values())

    response = raw.parse()
    assert isinstance(response, openai.types.ModerationCreateResponse)
    assert response.id.startswith("modr-") and response.model == "omni-moderation-latest"
    parsed = response.results[0]
    assert parsed.flagged is False
    for category in CATEGORIES:
        assert getattr(parsed.categories, attr(category)) is False
        assert getattr(parsed.category_scores, attr(category)) == result["category_scores"][category]
        assert getattr(parsed.category_applied_input_types, attr(category)) == ["text"]


def test_scores_are_deterministic(client):
    first = client.moderations.create(model="omni-moderation-latest", input="same text").results[0]
    second = client.moderations.create(model="omni-moderation-latest", input="same text").results[0]
    other = client.moderations.create(model="omni-moderation-latest", input="other text").results[0]
    assert first.category_scores == second.category_scores != other.category_scores


@pytest.mark.parametrize("marker,category", [
    ("[mod:violence]", "violence"),
    ("[mod:sexual/minors]", "sexual/minors"),
    ("[mod:sexual_minors]", "sexual/minors"),
    ("[MOD:Self-Harm/Intent]", "self-harm/intent"),
    ("[mod:harassment/threatening]", "harassment/threatening"),
    ("[mod:illicit/violent]", "illicit/violent"),
    ("[mod:hate]", "hate"),
])
def test_marker_flags_its_category(client, marker, category):
    result = client.moderations.create(model="omni-moderation-latest", input=f"some text {marker} here").results[0]
    assert result.flagged is True
    for other in CATEGORIES:
        assert getattr(result.categories, attr(other)) is (other == category), other
    assert getattr(result.category_scores, attr(category)) == 0.97
    assert getattr(result.category_applied_input_types, attr(category)) == ["text"]


def test_several_markers(client):
    result = client.moderations.create(input="[mod:violence] and [mod:violence/graphic] [mod:hate]").results[0]
    flagged = {category for category in CATEGORIES if getattr(result.categories, attr(category))}
    assert flagged == {"violence", "violence/graphic", "hate"}


def test_list_of_strings_gives_one_result_each(client):
    response = client.moderations.create(
        model="omni-moderation-latest", input=["first, fine", "second [mod:sexual]", "third, fine"])
    assert [result.flagged for result in response.results] == [False, True, False]
    assert response.results[1].categories.sexual is True and response.results[0].categories.sexual is False


def test_default_model_and_recorded_body(client, sim_url):
    assert call("POST", f"{sim_url}/_sim/reset")[::2] == (200, {"reset": True})
    assert client.moderations.create(input="no model given").model == "omni-moderation-latest"
    assert client.moderations.create(model="omni-moderation-2024-09-26", input="x").model == "omni-moderation-2024-09-26"
    records = call("GET", f"{sim_url}/_sim/requests")[2]["data"]
    assert [record["body"] for record in records] == [
        {"model": "omni-moderation-2024-09-26", "input": "x"},
        {"input": "no model given"},
    ]
    assert [record["status"] for record in records] == [200, 200] and records[0]["received_at"].endswith("Z")
    call("POST", f"{sim_url}/_sim/reset")
    assert call("GET", f"{sim_url}/_sim/requests")[2] == {"data": []}


# --------------------------------------------------------------------------- images


def test_multimodal_input_flags_image_category(client):
    response = client.moderations.create(model="omni-moderation-latest", input=[
        {"type": "text", "text": "a caption"},
        {"type": "image_url", "image_url": {"url": "https://cdn.example.com/u/1/mod-flag-sexual.png?sig=abc"}},
    ])
    assert len(response.results) == 1
    result = response.results[0]
    assert result.flagged is True and result.categories.sexual is True and result.category_scores.sexual == 0.97
    assert "image" in result.category_applied_input_types.sexual
    assert result.category_applied_input_types.violence == ["text", "image"]
    assert result.category_applied_input_types.harassment == ["text"]
    assert result.categories.sexual_minors is False and result.categories.violence is False


def test_image_only_input(client):
    result = client.moderations.create(model="omni-moderation-latest", input=[
        {"type": "image_url", "image_url": {"url": "https://x.test/a/mod-flag-self-harm/intent.png"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/mod-flag-violence_graphic.jpg"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/mod-flag-hate.jpg"}},  # hate is text only
    ]).results[0]
    flagged = {category for category in CATEGORIES if getattr(result.categories, attr(category))}
    assert flagged == {"self-harm/intent", "violence/graphic"}
    assert result.category_applied_input_types.sexual == ["image"]
    assert result.category_applied_input_types.hate == [] and result.category_scores.hate == 0.0


def test_png_builder_makes_a_valid_image():
    # PIL is not needed by this simulator; use it only to double-check the test's PNG when present.
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.open(io.BytesIO(png("mod-flag-violence")))
    image.load()
    assert (image.format, image.size, image.info["Comment"]) == ("PNG", (4, 3), "mod-flag-violence")
    assert image.getpixel((0, 0)) == (200, 30, 30)


@pytest.mark.parametrize("text,flagged", [
    ("replicate-sim mod-flag-violence (simulated moderation marker)", {"violence"}),
    ("mod-flag-violence", {"violence"}),  # at the very end of the chunk, before its CRC
    ("MOD-FLAG-Violence_Graphic ", {"violence/graphic"}),
    ("mod-flag-sexual mod-flag-self-harm/instructions ", {"sexual", "self-harm/instructions"}),
    ("mod-flag-hate ", set()),  # hate is text only
    ("mod-flag-sexual_minors ", set()),  # not an image category, and not `sexual`
])
def test_data_uri_image_flagged_by_its_bytes(client, text, flagged):
    image = png(text)
    assert text.encode() in image and b"mod-flag" not in base64.b64encode(image)
    result = client.moderations.create(model="omni-moderation-latest", input=[
        {"type": "text", "text": "a caption"},
        {"type": "image_url", "image_url": {"url": data_uri(image)}},
    ]).results[0]
    assert {category for category in CATEGORIES if getattr(result.categories, attr(category))} == flagged
    assert result.flagged is bool(flagged)
    for category in CATEGORIES:
        score = getattr(result.category_scores, attr(category))
        assert (score == 0.97) if category in flagged else (0 < score < 0.01), category
    assert result.category_applied_input_types.violence == ["text", "image"]


def test_data_uri_image_without_marker_is_not_flagged(client, sim_url):
    for url in (data_uri(png()), data_uri(png("a sunny beach")), data_uri(png("mod-flag-violence"), "image/webp"),
                "data:image/png;base64,not*base64", "data:image/png;base64"):
        status, _, body = moderate_raw(sim_url, {"input": [{"type": "image_url", "image_url": {"url": url}}]})
        expected = url == data_uri(png("mod-flag-violence"), "image/webp")  # the declared type does not matter
        assert status == 200 and body["results"][0]["flagged"] is expected, url
        assert body["results"][0]["categories"]["violence"] is expected
    # the same verdict as the URL marker (only the small scores of unflagged categories differ)
    by_url, by_bytes = (
        moderate_raw(sim_url, {"input": [{"type": "image_url", "image_url": {"url": url}}]})[2]["results"][0]
        for url in ("https://x.test/mod-flag-violence.png", data_uri(png("mod-flag-violence"))))
    for key in ("flagged", "categories", "category_applied_input_types"):
        assert by_url[key] == by_bytes[key], key
    assert by_url["category_scores"]["violence"] == by_bytes["category_scores"]["violence"] == 0.97


def test_text_markers_in_multimodal_text(client):
    result = client.moderations.create(input=[
        {"type": "text", "text": "caption [mod:illicit]"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]).results[0]
    assert result.categories.illicit is True and result.categories.sexual is False


def test_text_model_refuses_images(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.moderations.create(model="text-moderation-latest", input=[
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}])
    assert caught.value.status_code == 400 and caught.value.param == "input"
    assert client.moderations.create(model="text-moderation-latest", input="x").model == "text-moderation-latest"


# --------------------------------------------------------------------------- errors


def test_wrong_key(sim_url):
    bad = openai.OpenAI(api_key="sk-wrong-key-1234", base_url=f"{sim_url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.moderations.create(model="omni-moderation-latest", input="hello")
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error" and "sk-wrong-key-1234" not in caught.value.message
    status, _, body = moderate_raw(sim_url, {"input": "hello"}, key="sk-wrong-key-1234")
    assert status == 401
    error("Incorrect API key provided: sk-", "invalid_request_error", None, "invalid_api_key")(body)
    status, _, body = moderate_raw(sim_url, {"input": "hello"}, key="")
    assert status == 401
    error("You didn't provide an API key", "invalid_request_error", None, "invalid_api_key")(body)


def test_down_marker(client, sim_url):
    with pytest.raises(openai.InternalServerError) as caught:
        client.moderations.create(model="omni-moderation-latest", input="ok [mod:down]")
    assert caught.value.status_code == 503 and caught.value.type == "server_error"
    status, _, body = moderate_raw(sim_url, {"input": ["fine", "[Mod:Down]"]})
    assert status == 503
    error("The server is overloaded", "server_error", None, None)(body)


def test_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.moderations.create(model="omni-moderation-9000", input="hello")
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"
    assert "omni-moderation-9000" in caught.value.message


def test_slow_marker(client, sim_url):
    started = time.monotonic()
    assert client.moderations.create(input="wait [mod:slow=300]").results[0].flagged is False
    assert time.monotonic() - started >= 0.3
    impatient = openai.OpenAI(api_key=API_KEY, base_url=f"{sim_url}/v1", max_retries=0, timeout=0.1)
    with pytest.raises(openai.APITimeoutError):
        impatient.moderations.create(input="wait [mod:slow=400]")


@pytest.mark.parametrize("body,check", [
    ({"model": "omni-moderation-latest"},
     error("Missing required parameter: 'input'", "invalid_request_error", "input", "missing_required_parameter")),
    ({"input": []}, error("empty array", "invalid_request_error", "input", "empty_array")),
    ({"input": 42}, error("Invalid type for 'input'", "invalid_request_error", "input", "invalid_type")),
    ({"input": ["a", {"type": "text", "text": "b"}]}, error(None, "invalid_request_error", "input", "invalid_type")),
    ({"input": [{"type": "video", "url": "x"}]}, error(None, "invalid_request_error", "input[0].type", "invalid_value")),
    ({"input": [{"type": "image_url", "image_url": "https://x"}]},
     error(None, "invalid_request_error", "input[0]", "invalid_value")),
    ({"input": "x", "temperature": 1},
     error("Unrecognized request argument supplied: temperature", "invalid_request_error", None, None)),
])
def test_invalid_bodies(sim_url, body, check):
    status, _, answer = moderate_raw(sim_url, body)
    assert status == 400
    check(answer)


def test_invalid_json_and_unknown_path(sim_url):
    status, _, body = call("POST", f"{sim_url}/v1/moderations", raw=b"{nope",
                           headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 400
    error("We could not parse the JSON body", "invalid_request_error", None, None)(body)
    status, _, body = call("GET", f"{sim_url}/v1/moderations", headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 404
    error("Invalid URL (GET /v1/moderations)", "invalid_request_error", None, None)(body)


def test_env_configuration(tmp_path):
    process, url = start_sim({"MODERATION_SIM_API_KEY": "sk-from-env", "MODERATION_SIM_HOST": "127.0.0.1",
                              "MODERATION_SIM_PORT": "0"}, tmp_path / "env.log", [])
    try:
        client = openai.OpenAI(api_key="sk-from-env", base_url=f"{url}/v1", max_retries=0)
        assert client.moderations.create(input="[mod:violence]").results[0].categories.violence is True
    finally:
        stop_sim(process)
    log = (tmp_path / "env.log").read_text()
    assert "POST /v1/moderations" in log and "moderation-sim stopped" in log
