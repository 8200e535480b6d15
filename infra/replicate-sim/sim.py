#!/usr/bin/env python3
"""Local simulator of the Replicate HTTP API (predictions, webhooks, output files).

Standard library plus Pillow only. See README.md for configuration, prompt markers
and the test-only control endpoints.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import http.client
import io
import json
import os
import queue
import random
import re
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote_to_bytes, urlencode, urlsplit

from PIL import Image, ImageDraw, ImageOps, PngImagePlugin

# Official models known to the simulator: "owner/name" -> version id.
MODELS = {
    "black-forest-labs/flux-schnell": "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e",
    "bytedance/seedream-3": "ed344813bc9f4996be6de4febd8b9c14c7849ad7b21ab047572e3620ee374ee7",
    "google/nano-banana": "d05a591283da31be3eea28d5634ef9e26989b351718b6489bd308426ebd0a3e8",
}
VERSIONS = {version: model for model, version in MODELS.items()}

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
EVENTS = frozenset({"start", "output", "logs", "completed"})
DEFAULT_EVENTS = ("output", "completed")
CREATE_FIELDS = frozenset({"version", "input", "webhook", "webhook_events_filter", "stream"})
MODEL_CREATE_FIELDS = frozenset({"input", "webhook", "webhook_events_filter"})

ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PREFER_WAIT = re.compile(r"^wait(?:=([1-9]|[1-9][0-9]))?$")
MAX_WAIT_S = 60
MAX_SIDE = 4096
CANCEL_AFTER = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$|^(\d+)$")
MIN_CANCEL_AFTER_S = 5
LOGS_INTERVAL_S = 0.5  # `logs` webhooks are sent at most this often per prediction
DEFAULT_STEPS, MAX_STEPS = 4, 50  # progress steps printed when the input has no num_inference_steps
DEFAULT_SECRET = "whsec_" + base64.b64encode(b"picture-local-replicate-simulator"[:32]).decode()
IMAGE_FIELDS = ("image", "input_image")  # input fields holding one image (URL or data URI)
IMAGE_LIST_FIELD = "image_input"  # input field holding a list of them
MAX_INPUT_BYTES = 64 << 20  # larger input images fail the prediction
TINT_STRENGTH = 0.35  # how much of a source image's average colour the output takes on
NSFW_ERROR = "All generated images contained NSFW content. Try running it again with a different prompt."
# Models taking `num_outputs` (integer 1..MAX_OUTPUTS, default 1); others ignore it. Only the
# ones also in MODELS can be called.
MULTI_OUTPUT_MODELS = frozenset({
    "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev", "black-forest-labs/flux-krea-dev",
})
MAX_OUTPUTS = 4

# output_format -> (Pillow format, file extension, MIME type, save options)
FORMATS = {
    "png": ("PNG", "png", "image/png", {}),
    "webp": ("WEBP", "webp", "image/webp", {"quality": 80, "method": 0}),
    "jpg": ("JPEG", "jpg", "image/jpeg", {"quality": 90}),
    "jpeg": ("JPEG", "jpg", "image/jpeg", {"quality": 90}),
}

_log_lock = threading.Lock()


def log(message: str) -> None:
    """Write one timestamped line to stderr."""
    with _log_lock:
        sys.stderr.write(f"{rfc3339(utcnow())} {message}\n")
        sys.stderr.flush()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5100
    api_token: str = "r8_sim_token"
    webhook_secret: str = DEFAULT_SECRET
    predict_ms: int = 1000
    public_url: str | None = None  # None: derived from the bound address
    retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8, 15, 30)
    fetch_timeout_ms: int = 5000  # connect/read timeout when fetching input images

    def signing_key(self) -> bytes:
        return secret_key(self.webhook_secret)


def secret_key(secret: str) -> bytes:
    """HMAC key of a `whsec_<base64>` secret (Standard Webhooks)."""
    prefix, _, encoded = secret.partition("_")
    if prefix != "whsec" or not encoded:
        raise ValueError("webhook secret must look like whsec_<base64>")
    return base64.b64decode(encoded, validate=True)


def parse_config(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Build the configuration from environment variables, overridden by CLI flags."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description="Replicate HTTP API simulator")
    parser.add_argument("--host", default=env.get("SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env.get("SIM_PORT", "5100"))
    args = parser.parse_args(argv)
    try:
        config = Config(
            host=args.host,
            port=args.port,
            api_token=env.get("SIM_API_TOKEN", "r8_sim_token"),
            webhook_secret=env.get("SIM_WEBHOOK_SECRET", DEFAULT_SECRET),
            predict_ms=int(env.get("SIM_PREDICT_MS", "1000")),
            public_url=env.get("SIM_PUBLIC_URL") or None,
            retry_delays=tuple(
                float(part) for part in env.get("SIM_WEBHOOK_RETRY_DELAYS", "0.5,1,2,4,8,15,30").split(",") if part.strip()
            ),
            fetch_timeout_ms=int(env.get("SIM_FETCH_TIMEOUT_MS", "5000")),
        )
        config.signing_key()
    except (ValueError, binascii.Error) as exc:
        parser.error(str(exc))
    if config.predict_ms < 0 or any(delay < 0 for delay in config.retry_delays):
        parser.error("SIM_PREDICT_MS and SIM_WEBHOOK_RETRY_DELAYS must not be negative")
    if config.fetch_timeout_ms <= 0:
        parser.error("SIM_FETCH_TIMEOUT_MS must be positive")
    return config


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as an RFC 7807 problem+json document."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.headers = headers or {}
        self.body = {"title": title, "detail": detail, "status": status, **extra}


def unauthenticated() -> ApiError:
    return ApiError(401, "Unauthenticated", "You did not pass a valid authentication token")


def invalid_version() -> ApiError:
    return ApiError(
        422,
        "Invalid version or not permitted",
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, "Not found", f"{what} does not exist")


def invalid_input(fields: list[dict[str, str]]) -> ApiError:
    detail = "".join(f"- {item['field']}: {item['description']}\n" for item in fields)
    return ApiError(422, "Input validation failed", detail, invalid_fields=fields)


def throttled() -> ApiError:
    return ApiError(
        429, "Request was throttled.", "Request was throttled. Expected available in 1 second.",
        headers={"Retry-After": "1"},
    )


def invalid_cancel_after(detail: str) -> ApiError:
    return ApiError(422, "Invalid Cancel-After header", detail)


def field_error(kind: str, name: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": name, "description": description}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Markers:
    """Behaviour switches embedded in the prompt, e.g. `[sim:fail]`."""

    fail: bool
    nsfw: bool  # runs every step, then fails as the safety checker does
    hang: bool
    no_webhook: bool
    bad_output: bool
    data_uri: bool
    create_error: bool
    slow_ms: int | None
    queue_ms: int | None
    create_429: int  # create attempts answered 429 before one succeeds
    noise: bool
    svg: bool  # the output is an SVG document (as from a vector model)
    outputs: int | None = None  # the safety checker keeps only the first N images
    nsfw_partial: bool = False  # the safety checker drops every odd-numbered image (all of a single one)
    flagged: str | None = None  # `[sim:flagged=<category>]`: slug ("/" written "_") marking the first output

    @property
    def flag_note(self) -> str | None:
        """Text embedded in the first output's bytes for `[sim:flagged=…]` (None without it)."""
        return None if self.flagged is None else flag_note(self.flagged)

    @classmethod
    def parse(cls, prompt: str) -> Markers:
        def number(name: str) -> int | None:
            found = re.search(rf"\[sim:{name}=(\d+)\]", prompt)
            return int(found.group(1)) if found else None

        return cls(
            fail="[sim:fail]" in prompt,
            nsfw="[sim:nsfw]" in prompt,
            hang="[sim:hang]" in prompt,
            no_webhook="[sim:no-webhook]" in prompt,
            bad_output="[sim:bad-output]" in prompt,
            data_uri="[sim:data-uri]" in prompt,
            create_error="[sim:create-500]" in prompt,
            slow_ms=number("slow"),
            queue_ms=number("queue"),
            create_429=number("create-429") or 0,
            noise="[sim:noise]" in prompt,
            svg="[sim:svg]" in prompt,
            outputs=number("outputs"),
            nsfw_partial="[sim:nsfw-partial]" in prompt,
            flagged=flag_slug(prompt),
        )

    def dropped(self, asked: int) -> list[int]:
        """Indexes of the `asked` images the safety checker drops, per `[sim:nsfw]`,
        `[sim:nsfw-partial]` and then `[sim:outputs=N]` (which keeps the first N of the rest)."""
        if self.nsfw:
            return list(range(asked))
        drop = set()
        if self.nsfw_partial:
            drop = {0} if asked == 1 else set(range(1, asked, 2))
        if self.outputs is not None:
            kept = [index for index in range(asked) if index not in drop]
            drop |= set(kept[self.outputs:])
        return sorted(drop)


FLAGGED_MARKER = re.compile(r"\[sim:flagged=([A-Za-z0-9_/-]+)\]")


def flag_slug(prompt: str) -> str | None:
    """Category of a `[sim:flagged=<category>]` marker, lower-cased with "/" written "_"
    (`violence/graphic` -> `violence_graphic`), as it appears after `mod-flag-`; None without one."""
    found = FLAGGED_MARKER.search(prompt)
    return found.group(1).lower().replace("/", "_") if found else None


def flag_note(slug: str) -> str:
    """Text carried inside a flagged image's bytes. The space after the marker ends it for
    the moderation simulator (which requires no letter, "/" or "_" right after the category)."""
    return f"replicate-sim mod-flag-{slug} (simulated moderation marker)"


@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    output_format: str  # key of FORMATS

    @property
    def pil_format(self) -> str:
        return FORMATS[self.output_format][0]

    @property
    def ext(self) -> str:
        return FORMATS[self.output_format][1]

    @property
    def mime(self) -> str:
        return FORMATS[self.output_format][2]


@dataclass(frozen=True)
class CreateRequest:
    """A validated create-prediction request."""

    model: str
    version: str  # 64-hex id or "hidden"
    input: dict[str, Any]
    webhook: str | None
    events: frozenset[str]
    image: ImageSpec
    markers: Markers
    num_outputs: int = 1  # images the model makes (`num_outputs` of a MULTI_OUTPUT_MODELS model)


def resolve_version(version: Any) -> tuple[str, str]:
    """Map a `version` field to (model, version shown in the prediction)."""
    if not isinstance(version, str):
        raise invalid_version()
    if HEX64.match(version) and version in VERSIONS:
        return VERSIONS[version], version
    model, sep, version_id = version.partition(":")
    if model not in MODELS:
        raise invalid_version()
    if not sep:
        return model, "hidden"
    if version_id != MODELS[model]:
        raise invalid_version()
    return model, version_id


def parse_create(body: Any, allowed: frozenset[str], model: str, version: str) -> CreateRequest:
    """Validate the body shared by both create routes (version already resolved)."""
    errors = [
        field_error("additional_property_not_allowed", name, f"Additional property {name} is not allowed")
        for name in sorted(set(body) - allowed)
    ]
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise invalid_input(errors + [field_error("required", "input", "input is required and must be an object")])
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append(field_error("required", "input", "prompt is required"))
    webhook = body.get("webhook")
    if webhook is not None and not valid_webhook_url(webhook):
        errors.append(field_error("format", "webhook", "webhook must be an http(s) URL"))
    events = body.get("webhook_events_filter")
    if events is None:
        events = list(DEFAULT_EVENTS)
    elif not isinstance(events, list) or not all(isinstance(e, str) and e in EVENTS for e in events):
        errors.append(field_error("enum", "webhook_events_filter", f"items must be one of {sorted(EVENTS)}"))
    image, image_errors = image_spec(inp)
    count, count_errors = num_outputs(model, inp)
    errors += image_errors + image_input_errors(inp) + count_errors
    if errors:
        raise invalid_input(errors)
    return CreateRequest(model, version, inp, webhook, frozenset(events), image, Markers.parse(prompt), count)


def valid_webhook_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def image_spec(inp: dict[str, Any]) -> tuple[ImageSpec, list[dict[str, str]]]:
    """Output size and format from the model input, plus any validation errors."""
    errors = []
    output_format = inp.get("output_format", "webp")
    if not isinstance(output_format, str) or output_format not in FORMATS:
        errors.append(field_error("enum", "input.output_format", f"must be one of {sorted(FORMATS)}"))
        output_format = "webp"
    size, size_error = image_size(inp)
    if size_error:
        errors.append(field_error("range", size_error, f"sides must be integers from 1 to {MAX_SIDE}"))
    return ImageSpec(size[0], size[1], output_format), errors


def num_outputs(model: str, inp: dict[str, Any]) -> tuple[int, list[dict[str, str]]]:
    """Images to make: `num_outputs` (an integer 1..MAX_OUTPUTS, default 1) for the models
    in MULTI_OUTPUT_MODELS, plus any validation error; other models ignore the field."""
    if model not in MULTI_OUTPUT_MODELS or "num_outputs" not in inp:
        return 1, []
    count = inp["num_outputs"]
    if type(count) is not int:
        return 1, [field_error("type", "input.num_outputs", f"num_outputs must be an integer from 1 to {MAX_OUTPUTS}")]
    if not 1 <= count <= MAX_OUTPUTS:
        return 1, [field_error("range", "input.num_outputs", f"num_outputs must be an integer from 1 to {MAX_OUTPUTS}")]
    return count, []


def image_input_errors(inp: dict[str, Any]) -> list[dict[str, str]]:
    """Type errors of the image input fields: `image`/`input_image` strings, `image_input` a list of them."""
    errors = [
        field_error("type", f"input.{name}", f"{name} must be a string (URL or data URI)")
        for name in IMAGE_FIELDS
        if inp.get(name) is not None and not isinstance(inp[name], str)
    ]
    images = inp.get(IMAGE_LIST_FIELD)
    if images is not None and not (isinstance(images, list) and all(isinstance(item, str) for item in images)):
        errors.append(field_error(
            "type", f"input.{IMAGE_LIST_FIELD}", f"{IMAGE_LIST_FIELD} must be an array of strings (URLs or data URIs)"))
    return errors


def image_size(inp: dict[str, Any]) -> tuple[tuple[int, int], str | None]:
    """(width, height) from width/height, aspect_ratio "W:H" or size "WxH"; else 1024².

    The second value names the offending field when the size is out of range.
    Non-numeric aspect_ratio/size values (e.g. "match_input_image", "2K") are ignored.
    """
    width, height = inp.get("width"), inp.get("height")
    ratio = re.match(r"^(\d+):(\d+)$", str(inp.get("aspect_ratio", "")))
    size = re.match(r"^(\d+)x(\d+)$", str(inp.get("size", "")))
    if width is not None and height is not None:
        source, dims = "input.width/height", (width, height)
    elif ratio and int(ratio.group(1)) > 0 and int(ratio.group(2)) > 0:
        w, h = int(ratio.group(1)), int(ratio.group(2))
        source, dims = "input.aspect_ratio", (round(1024 * w / h), 1024) if w >= h else (1024, round(1024 * h / w))
    elif size:
        source, dims = "input.size", (int(size.group(1)), int(size.group(2)))
    else:
        return (1024, 1024), None
    if all(type(side) is int and 1 <= side <= MAX_SIDE for side in dims):
        return dims, None
    return (1024, 1024), source


def parse_cancel_after(value: str) -> int:
    """Seconds of a `Cancel-After` duration (`30s`, `5m`, `1h30m45s`, bare seconds)."""
    match = CANCEL_AFTER.match(value.strip())
    if not match or not any(match.groups()):
        raise invalid_cancel_after(f"Cancel-After must be a duration such as 30s, 5m or 1h30m45s, not {value!r}")
    hours, minutes, seconds, bare = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds + bare
    if total < MIN_CANCEL_AFTER_S:
        raise invalid_cancel_after(f"Cancel-After must be at least {MIN_CANCEL_AFTER_S} seconds")
    return total


# --------------------------------------------------------------------------- progress logs


def inference_steps(inp: dict[str, Any]) -> int:
    """Progress steps a prediction prints: `num_inference_steps` clamped to 1..MAX_STEPS."""
    steps = inp.get("num_inference_steps")
    return min(max(steps, 1), MAX_STEPS) if type(steps) is int else DEFAULT_STEPS


def progress_line(step: int, total: int, elapsed: float) -> str:
    """One tqdm-style line, e.g. ` 25%|██▌       | 1/4 [00:00<00:01,  5.20it/s]`."""
    full, part = divmod(step * 80 // total, 8)
    bar = ("█" * full + (" ▏▎▍▌▋▊▉"[part] if full < 10 else "")).ljust(10)
    rate = step / elapsed if step and elapsed > 0 else None
    if rate is None:
        timing = f"{clock(elapsed)}<?, ?it/s"
    else:
        speed = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
        timing = f"{clock(elapsed)}<{clock((total - step) / rate)}, {speed}"
    return f"{100 * step / total:3.0f}%|{bar}| {step}/{total} [{timing}]\n"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


# --------------------------------------------------------------------------- input images


class FetchError(Exception):
    """An input image could not be fetched or is not an image; the message is the reason."""


@dataclass(frozen=True)
class InputImage:
    """What the model received for one image input (the bytes themselves are not kept)."""

    length: int
    sha256: str
    mime: str
    size: tuple[int, int] | None  # None: the header could not be read
    average: tuple[int, int, int] | None  # mean colour, None if it could not be decoded

    def log_line(self) -> str:
        """`input image: <bytes> bytes sha256=<hex> <width>x<height> <mime>` (stable: tests parse it)."""
        width, height = self.size or ("?", "?")
        return f"input image: {self.length} bytes sha256={self.sha256} {width}x{height} {self.mime}\n"


def image_inputs(inp: dict[str, Any]) -> list[tuple[str, str]]:
    """(field label, URL or data URI) of every image input, in fetch order."""
    found = [(name, inp[name]) for name in IMAGE_FIELDS if isinstance(inp.get(name), str)]
    images = inp.get(IMAGE_LIST_FIELD)
    if isinstance(images, list):
        found += [(f"{IMAGE_LIST_FIELD}[{i}]", value) for i, value in enumerate(images) if isinstance(value, str)]
    return found


def fetch_input(value: str, timeout_s: float) -> bytes:
    """The bytes behind an http(s) URL (GET) or a data URI; raises FetchError."""
    try:
        scheme = urlsplit(value).scheme.lower()
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise FetchError("not a URL or data URI") from None
    if scheme == "data":
        return decode_data_uri(value)
    if scheme in ("http", "https"):
        return fetch_url(value, timeout_s)
    raise FetchError(f"unsupported URL scheme {scheme!r}" if scheme else "not a URL or data URI")


def fetch_url(url: str, timeout_s: float) -> bytes:
    """GET `url` (redirects followed) with a connect/read timeout; non-2xx answers fail."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "replicate-sim"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if not 200 <= response.status < 300:
                raise FetchError(f"HTTP {response.status} {response.reason}")
            data = response.read(MAX_INPUT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(connection_failure(exc.reason, timeout_s)) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(connection_failure(exc, timeout_s)) from None
    if len(data) > MAX_INPUT_BYTES:
        raise FetchError(f"larger than {MAX_INPUT_BYTES} bytes")
    return data


def connection_failure(reason: Any, timeout_s: float) -> str:
    """Reason text for a request that got no HTTP answer."""
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout_s:g} s"
    return f"connection failed ({reason})"


def decode_data_uri(uri: str) -> bytes:
    """Payload of `data:[<mime>][;base64],<data>`; raises FetchError if malformed."""
    header, comma, payload = uri[len("data:"):].partition(",")
    if not comma:
        raise FetchError("invalid data URI (no comma)")
    if not header.lower().endswith(";base64"):
        return unquote_to_bytes(payload)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise FetchError("invalid data URI (bad base64)") from None


def sniff_image(data: bytes) -> str | None:
    """MIME type from the magic bytes (PNG, JPEG, WebP), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def inspect_image(data: bytes) -> InputImage:
    """Hash, type, size and mean colour of fetched bytes; raises FetchError if not an image."""
    mime = sniff_image(data)
    if mime is None:
        raise FetchError(f"not a PNG, JPEG or WebP image ({len(data)} bytes)")
    size = average = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale
            average = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    except Exception:  # noqa: BLE001 - any decoding problem only leaves size/colour unknown
        pass
    return InputImage(len(data), hashlib.sha256(data).hexdigest(), mime, size, average)


def describe_source(value: str) -> str:
    """A URL without its query (presigned signatures stay out of logs), or a data URI's header."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return repr(value[:40])
    if parts.scheme.lower() == "data":
        return value.partition(",")[0] + ",…"
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else repr(value[:40])


def matched_spec(inp: dict[str, Any], spec: ImageSpec, sources: list[InputImage]) -> ImageSpec:
    """With `aspect_ratio` "match_input_image" and no other size, the output takes the first
    source's aspect ratio (shorter side 1024, sides at most MAX_SIDE)."""
    first = sources[0].size if sources else None
    sized = (inp.get("width") is not None and inp.get("height") is not None) or re.match(
        r"^(\d+)x(\d+)$", str(inp.get("size", "")))
    if inp.get("aspect_ratio") != "match_input_image" or first is None or sized:
        return spec
    w, h = first
    dims = (round(1024 * w / h), 1024) if w >= h else (1024, round(1024 * h / w))
    return replace(spec, width=min(max(dims[0], 1), MAX_SIDE), height=min(max(dims[1], 1), MAX_SIDE))


# --------------------------------------------------------------------------- images


def drawing_rng(prompt: str, seed: Any, index: int = 0) -> random.Random:
    """Random source of one output's drawing, deterministic in prompt, seed and output index
    (index 0 draws what a single-output prediction always drew)."""
    material = prompt if seed is None else f"{prompt}\0{json.dumps(seed)}"
    if index:
        material += f"\0output {index}"
    return random.Random(hashlib.sha256(material.encode()).digest())


def render_image(prompt: str, seed: Any, spec: ImageSpec, noise: bool = False,
                 tint: tuple[int, int, int] | None = None, index: int = 0, note: str | None = None) -> bytes:
    """Deterministic picture for a prompt (and seed, and output index): gradient background plus shapes.

    With `note`, that text is stored as metadata the format keeps and decoders skip: a PNG
    `tEXt` chunk (keyword `Comment`), a WebP `XMP ` chunk (in `dc:description`) or a JPEG
    `COM` segment.

    With `tint` (a source image's mean colour), that colour is blended in at TINT_STRENGTH.
    With `noise`, deterministic noise is blended in (half strength), which makes the file
    nearly incompressible: about 0.5 bytes per pixel as WebP, 2.9 as PNG, 0.7 as JPEG.
    """
    rng = drawing_rng(prompt, seed, index)

    def color() -> tuple[int, int, int]:
        return rng.randrange(256), rng.randrange(256), rng.randrange(256)

    gradient = rng.choice([Image.linear_gradient, Image.radial_gradient])("L")
    if rng.random() < 0.5:
        gradient = gradient.transpose(Image.Transpose.ROTATE_90)
    canvas = ImageOps.colorize(gradient, color(), color()).resize(
        (spec.width, spec.height), Image.Resampling.BILINEAR
    )
    draw = ImageDraw.Draw(canvas)
    w, h = spec.width, spec.height
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(w // 10, w // 2), y0 + rng.randint(h // 10, h // 2)
        shape = rng.choice(["ellipse", "rectangle", "polygon"])
        outline, width = color(), max(1, min(w, h) // 200)
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=color(), outline=outline, width=width)
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=color(), outline=outline, width=width)
        else:
            points = [(rng.randrange(w), rng.randrange(h)) for _ in range(rng.randint(3, 6))]
            draw.polygon(points, fill=color(), outline=outline)
    if tint is not None:
        canvas = Image.blend(canvas, Image.new("RGB", canvas.size, tint), TINT_STRENGTH)
    if noise:
        grain = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
        canvas = Image.blend(canvas, grain, 0.5)
    buffer = io.BytesIO()
    canvas.save(buffer, spec.pil_format, **FORMATS[spec.output_format][3], **note_options(spec.pil_format, note))
    return buffer.getvalue()


def note_options(pil_format: str, note: str | None) -> dict[str, Any]:
    """Pillow save options embedding `note` in a PNG, WebP or JPEG file (none without a note)."""
    if note is None:
        return {}
    if pil_format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", note)
        return {"pnginfo": info}
    if pil_format == "WEBP":
        return {"xmp": xmp_packet(note)}
    return {"comment": note}  # JPEG


def xmp_packet(description: str) -> bytes:
    """A minimal XMP packet holding `description` (plain ASCII, no XML special characters)."""
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:description>{description}</dc:description>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>'
    ).encode()


def render_svg(prompt: str, seed: Any, spec: ImageSpec, tint: tuple[int, int, int] | None = None,
               index: int = 0, note: str | None = None) -> bytes:
    """Deterministic SVG document of the requested size: a background (`tint` if given) and a
    few shapes; with `note`, a `<desc>` element holding it comes first."""
    rng = drawing_rng(prompt, seed, index)
    w, h = spec.width, spec.height

    def color() -> str:
        return "#%02x%02x%02x" % (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    background = color()
    if tint is not None:
        background = "#%02x%02x%02x" % tint
    shapes = [f'<rect width="{w}" height="{h}" fill="{background}"/>']
    if note is not None:
        shapes.insert(0, f"<desc>{note}</desc>")
    for _ in range(rng.randint(3, 7)):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randint(max(1, min(w, h) // 20), max(1, min(w, h) // 4))
        shapes.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{color()}"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
        + "".join(shapes)
        + "</svg>\n"
    ).encode()


# --------------------------------------------------------------------------- predictions


@dataclass
class Delivery:
    event: str
    webhook_id: str
    status: int | None


@dataclass
class Prediction:
    """Mutable prediction state; always read and written under Simulator.cond."""

    id: str
    request: CreateRequest
    created_at: datetime
    status: str = "starting"
    output: Any = None
    error: str | None = None
    logs: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deadline: datetime | None = None  # from Cancel-After
    final_webhook: tuple[str, bytes] | None = None  # (webhook-id, body) of the completed event
    deliveries: list[Delivery] = field(default_factory=list)
    outbox: queue.Queue | None = None  # pending webhook events, when webhooks are sent
    sources: list[InputImage] = field(default_factory=list)  # fetched image inputs

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self, public_url: str) -> dict[str, Any]:
        get_url = f"{public_url}/v1/predictions/{self.id}"
        body = {
            "id": self.id,
            "model": self.request.model,
            "version": self.request.version,
            "input": self.request.input,
            "output": self.output,
            "error": self.error,
            "logs": self.logs,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "completed_at": rfc3339(self.completed_at),
            "data_removed": False,
            "source": "api",
            "urls": {"get": get_url, "cancel": f"{get_url}/cancel", "web": f"https://replicate.com/p/{self.id}"},
            "webhook": self.request.webhook,
        }
        if self.deadline is not None:
            body["deadline"] = rfc3339(self.deadline)
        if self.terminal:
            predict = (self.completed_at - self.started_at).total_seconds() if self.started_at else 0.0
            body["metrics"] = {
                "predict_time": predict,
                "total_time": (self.completed_at - self.created_at).total_seconds(),
            }
        return body


class WebhookSender:
    """Signs and posts webhook events (Standard Webhooks format)."""

    def __init__(self, key: bytes, retry_delays: tuple[float, ...], record: Callable[[Prediction, Delivery], None]):
        self.key = key
        self.retry_delays = retry_delays
        self.record = record
        # Replicate does not follow redirects: surface 3xx as errors.
        self.opener = urllib.request.build_opener(_NoRedirect)

    def run_outbox(self, pred: Prediction, url: str) -> None:
        """Deliver queued (event, webhook-id, body) items in order; None ends the queue.

        `logs` events are throttled: one is sent at most every LOGS_INTERVAL_S, the newest
        waiting one replaces older ones, and any later event (its body is a newer snapshot)
        supersedes it. Only `completed` is retried.
        """
        waiting, logs_allowed_at = None, 0.0  # newest unsent logs event; when it may go
        while True:
            try:
                timeout = None if waiting is None else max(0.0, logs_allowed_at - time.monotonic())
                item = pred.outbox.get(timeout=timeout)
            except queue.Empty:  # the waiting logs event is due
                logs_allowed_at, waiting = self.deliver_logs(pred, url, waiting, logs_allowed_at), None
                continue
            if item is None:  # the last logs state still goes out
                if waiting is not None:
                    self.deliver_logs(pred, url, waiting, logs_allowed_at)
                return
            event, webhook_id, body = item
            if event == "logs":
                waiting = item
                continue
            waiting = None
            if event == "completed":
                self.deliver_with_retries(pred, url, webhook_id, body)
            else:
                self.deliver(pred, url, event, webhook_id, body)

    def deliver_logs(self, pred: Prediction, url: str, item: tuple[str, str, bytes], allowed_at: float) -> float:
        """Send a logs event no earlier than `allowed_at`; returns when the next one may go."""
        time.sleep(max(0.0, allowed_at - time.monotonic()))
        self.deliver(pred, url, *item)
        return time.monotonic() + LOGS_INTERVAL_S

    def deliver_with_retries(self, pred: Prediction, url: str, webhook_id: str, body: bytes) -> None:
        for delay in (0.0, *self.retry_delays):
            time.sleep(delay)
            status = self.deliver(pred, url, "completed", webhook_id, body)
            if status is not None and 200 <= status < 300:
                return

    def deliver(self, pred: Prediction, url: str, event: str, webhook_id: str, body: bytes) -> int | None:
        """One signed POST; returns the receiver's status or None if it was unreachable."""
        timestamp = str(int(time.time()))
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        signature = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": "replicate-sim",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{signature}",
        })
        try:
            with self.opener.open(request, timeout=10) as response:
                status, outcome = response.status, str(response.status)
        except urllib.error.HTTPError as exc:
            status, outcome = exc.code, str(exc.code)
            exc.close()
        except (OSError, ValueError) as exc:
            status, outcome = None, f"unreachable ({exc})"
        log(f"webhook {pred.id} {event} {webhook_id} -> {url} {outcome}")
        self.record(pred, Delivery(event, webhook_id, status))
        return status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect, so a 3xx answer counts as a failed delivery."""

    def redirect_request(self, *args: Any) -> None:
        return None


class Simulator:
    """In-memory prediction store and lifecycle driver."""

    def __init__(self, config: Config, public_url: str):
        self.config = config
        self.public_url = public_url.rstrip("/")
        self.cond = threading.Condition()
        self.predictions: dict[str, Prediction] = {}
        self.ordered: list[Prediction] = []  # creation order; list cursors are indexes into it
        self.files: dict[str, tuple[bytes, str]] = {}  # name -> (bytes, MIME type)
        self.webhooks = WebhookSender(config.signing_key(), config.retry_delays, self._record_delivery)
        self.faults: dict[str, list[int]] = {}  # operation -> statuses still to answer, in order
        self.create_attempts: dict[str, int] = {}  # prompt -> creates tried, for [sim:create-429=N]

    # ---- queries

    def view(self, pred: Prediction) -> dict[str, Any]:
        with self.cond:
            return pred.to_json(self.public_url)

    def find(self, prediction_id: str) -> Prediction:
        with self.cond:
            pred = self.predictions.get(prediction_id)
        if pred is None:
            raise not_found(f"Prediction {prediction_id}")
        return pred

    def file(self, name: str) -> tuple[bytes, str] | None:
        with self.cond:
            return self.files.get(name)

    def inject(self, ops: list[str], status: int, count: int) -> None:
        """The next `count` calls of each operation in `ops` answer `status`."""
        with self.cond:
            for op in ops:
                self.faults[op] = [status] * count

    def clear_faults(self) -> None:
        with self.cond:
            self.faults.clear()

    def take_fault(self, op: str) -> int | None:
        """The status an injected fault makes this call of `op` answer, if any."""
        with self.cond:
            pending = self.faults.get(op)
            return pending.pop(0) if pending else None

    def page(self, start: int | None, size: int,
             created_after: datetime | None = None) -> tuple[list[dict[str, Any]], int | None, int | None]:
        """Newest-first page starting at index `start`, only predictions created after
        `created_after` when given; returns (items, next, previous) starts."""
        with self.cond:
            newest = len(self.ordered) - 1
            start = newest if start is None else min(start, newest)
            indexes = range(start, max(start - size, -1), -1)
            if created_after is not None:
                indexes = [i for i in indexes if self.ordered[i].created_at > created_after]
            items = [self.ordered[i].to_json(self.public_url) for i in indexes]
            older_exist = start - size >= 0 and (
                created_after is None or self.ordered[start - size].created_at > created_after)
        next_start = start - size if older_exist else None
        previous_start = min(start + size, newest) if start < newest else None
        return items, next_start, previous_start

    def deliveries(self, pred: Prediction) -> list[dict[str, Any]]:
        with self.cond:
            return [vars(delivery).copy() for delivery in pred.deliveries]

    def wait(self, pred: Prediction, timeout: float) -> None:
        """Block until the prediction is terminal (output only appears then) or the timeout passes."""
        with self.cond:
            self.cond.wait_for(lambda: pred.terminal, timeout)

    # ---- commands

    def throttles(self, request: CreateRequest) -> bool:
        """Count a create attempt; True while `[sim:create-429=N]` still refuses it."""
        prompt = request.input["prompt"]
        with self.cond:
            attempt = self.create_attempts.get(prompt, 0) + 1
            self.create_attempts[prompt] = attempt
        return attempt <= request.markers.create_429

    def create(self, request: CreateRequest, cancel_after_s: int | None) -> Prediction:
        with self.cond:
            pred = Prediction(new_id(), request, utcnow())
            self.predictions[pred.id] = pred
            self.ordered.append(pred)
            if request.webhook and not request.markers.no_webhook:
                pred.outbox = queue.Queue()
                threading.Thread(target=self.webhooks.run_outbox, args=(pred, request.webhook), daemon=True).start()
            if cancel_after_s is not None:
                pred.deadline = pred.created_at + timedelta(seconds=cancel_after_s)
                timer = threading.Timer(cancel_after_s, self._expire, args=(pred,))
                timer.daemon = True
                timer.start()
        threading.Thread(target=self._run, args=(pred,), daemon=True, name=f"predict-{pred.id}").start()
        return pred

    def cancel(self, pred: Prediction) -> dict[str, Any]:
        with self.cond:
            self._finish(pred, "canceled")
            return pred.to_json(self.public_url)

    def redeliver(self, pred: Prediction) -> int | None:
        """Re-send the completed webhook once, synchronously, with its original id and body."""
        with self.cond:
            final = pred.final_webhook
        if final is None:
            raise ApiError(409, "Conflict", "Prediction has no completed webhook to redeliver")
        return self.webhooks.deliver(pred, pred.request.webhook, "completed", *final)

    # ---- lifecycle

    def _run(self, pred: Prediction) -> None:
        """Worker: starting -> processing (printing progress to logs) -> succeeded/failed,
        unless it ends otherwise meanwhile (cancel, Cancel-After)."""
        request = pred.request
        markers = request.markers
        predict_s = (markers.slow_ms if markers.slow_ms is not None else self.config.predict_ms) / 1000
        queue_s = predict_s * 0.1 if markers.queue_ms is None else markers.queue_ms / 1000
        if not self._sleep(pred, queue_s):
            return
        steps = inference_steps(request.input)
        if not self._start(pred, steps):
            return
        if markers.hang:
            with self.cond:
                self.cond.wait_for(lambda: pred.terminal)
            return
        for step in range(1, (steps // 2 if markers.fail else steps) + 1):
            if not (self._sleep(pred, predict_s * 0.9 / steps) and self._progress(pred, step, steps)):
                return
        if markers.fail:
            with self.cond:
                self._finish(pred, "failed", error="Simulated failure")
            return
        asked, dropped = request.num_outputs, markers.dropped(request.num_outputs)
        kept = [index for index in range(asked) if index not in dropped]
        if not kept:  # the safety checker dropped every image
            with self.cond:
                finished = self._finish(pred, "failed", error=NSFW_ERROR)
        else:
            outputs, stored = self._produce_outputs(pred, kept)
            with self.cond:
                if not pred.terminal:
                    self.files.update(stored)
                    pred.logs += safety_lines(asked, dropped)
                finished = self._finish(pred, "succeeded", output=outputs)
        if finished:
            log(outputs_line(pred.id, asked, dropped))

    def _start(self, pred: Prediction, steps: int) -> bool:
        """starting -> processing: fetch the image inputs, then log the seed and 0 %.

        False if the prediction ended meanwhile or an input could not be fetched (then it
        has failed). Without image inputs, all of it happens at once.
        """
        inputs = image_inputs(pred.request.input)
        with self.cond:
            if pred.terminal:
                return False
            pred.status, pred.started_at = "processing", utcnow()
            if not inputs:
                return self._begin(pred, [], steps, announce=True)
            self._emit(pred, ["start"])
        sources = self._fetch_inputs(pred, inputs)
        with self.cond:
            return sources is not None and self._begin(pred, sources, steps, announce=False)

    def _fetch_inputs(self, pred: Prediction, inputs: list[tuple[str, str]]) -> list[InputImage] | None:
        """Fetch every image input in order; on the first failure, fail the prediction and return None."""
        sources = []
        for label, value in inputs:
            try:
                source = inspect_image(fetch_input(value, self.config.fetch_timeout_ms / 1000))
            except FetchError as exc:
                log(f"input {pred.id} {label} {describe_source(value)}: {exc}")
                with self.cond:
                    if not pred.terminal:
                        pred.logs += f"Failed to fetch input image {label} from {describe_source(value)}: {exc}\n"
                        self._finish(pred, "failed", error=f"Failed to fetch input image: {exc}")
                return None
            log(f"input {pred.id} {label} {describe_source(value)}: {source.log_line().strip()}")
            sources.append(source)
        return sources

    def _begin(self, pred: Prediction, sources: list[InputImage], steps: int, announce: bool) -> bool:
        """Log the inputs and the seed, send `start` if `announce`, then log 0 %
        (caller holds the lock); False if the prediction has already ended."""
        if pred.terminal:
            return False
        seed = pred.request.input.get("seed")
        pred.sources = sources
        pred.logs += "".join(source.log_line() for source in sources)
        pred.logs += f"Using seed: {seed if type(seed) is int else random.randrange(1 << 16)}\n"
        if announce:
            self._emit(pred, ["start"])
        return self._progress(pred, 0, steps)

    def _progress(self, pred: Prediction, step: int, steps: int) -> bool:
        """Append a progress line to the logs; False if the prediction has already ended."""
        with self.cond:
            if pred.terminal:
                return False
            pred.logs += progress_line(step, steps, (utcnow() - pred.started_at).total_seconds())
            self._emit(pred, ["logs"])
            return True

    def _expire(self, pred: Prediction) -> None:
        """Cancel-After deadline: `aborted` if it has not started yet, else `canceled`."""
        with self.cond:
            self._finish(pred, "aborted" if pred.status == "starting" else "canceled")

    def _produce_outputs(self, pred: Prediction,
                         indexes: list[int]) -> tuple[list[str], dict[str, tuple[bytes, str]]]:
        """Output strings of the images at `indexes`, plus the files to serve for them (name -> file)."""
        request = pred.request
        markers = request.markers
        flag = markers.flagged  # marks the first delivered output only
        if markers.bad_output:
            names = [output_name(pred.id, index, "png", None if position else flag)
                     for position, index in enumerate(indexes)]
            return [f"{self.public_url}/files/missing-{name}" for name in names], {}
        with self.cond:
            sources = list(pred.sources)
        spec = matched_spec(request.input, request.image, sources)
        tint = sources[0].average if sources else None
        prompt, seed = request.input["prompt"], request.input.get("seed")
        outputs, files = [], {}
        for position, index in enumerate(indexes):
            note = markers.flag_note if position == 0 else None
            if markers.svg:
                data, ext, mime = render_svg(prompt, seed, spec, tint, index, note), "svg", "image/svg+xml"
            else:
                data = render_image(prompt, seed, spec, markers.noise, tint, index, note)
                ext, mime = spec.ext, spec.mime
            if markers.data_uri:
                outputs.append(f"data:{mime};base64,{base64.b64encode(data).decode()}")
                continue
            name = output_name(pred.id, index, ext, None if position else flag)
            outputs.append(f"{self.public_url}/files/{name}")
            files[name] = (data, mime)
        return outputs, files

    def _sleep(self, pred: Prediction, seconds: float) -> bool:
        """Sleep unless the prediction ends meanwhile; True when it is still running afterwards."""
        with self.cond:
            return not self.cond.wait_for(lambda: pred.terminal, seconds)

    def _finish(self, pred: Prediction, status: str, output: Any = None, error: str | None = None) -> bool:
        """Move to a terminal state (caller holds the lock); False if already terminal."""
        if pred.terminal:
            return False
        pred.status, pred.output, pred.error, pred.completed_at = status, output, error, utcnow()
        self.cond.notify_all()
        self._emit(pred, ["output", "completed"] if status == "succeeded" else ["completed"])
        if pred.outbox is not None:
            pred.outbox.put(None)
        return True

    def _emit(self, pred: Prediction, events: list[str]) -> None:
        """Queue webhook events allowed by the filter (caller holds the lock)."""
        if pred.outbox is None:
            return
        body = json.dumps(pred.to_json(self.public_url)).encode()
        for event in events:
            if event not in pred.request.events:
                continue
            webhook_id = "msg_" + secrets.token_hex(12)
            if event == "completed":
                pred.final_webhook = (webhook_id, body)
            pred.outbox.put((event, webhook_id, body))

    def _record_delivery(self, pred: Prediction, delivery: Delivery) -> None:
        with self.cond:
            pred.deliveries.append(delivery)


def new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(26))


def output_name(prediction_id: str, index: int, ext: str, flag: str | None = None) -> str:
    """File name of output `index`: `<id>.<ext>` for the first, `<id>-<index>.<ext>` for the
    others; with `flag` (a `[sim:flagged=…]` slug), `-mod-flag-<flag>` goes before the extension."""
    stem = prediction_id if index == 0 else f"{prediction_id}-{index}"
    return f"{stem}-mod-flag-{flag}.{ext}" if flag else f"{stem}.{ext}"


def safety_lines(asked: int, dropped: list[int]) -> str:
    """What the safety checker prints into `logs` when it drops some of the images (as
    cog-flux does); nothing when it drops none."""
    if not dropped:
        return ""
    lines = [f"NSFW content detected in image {index}\n" for index in dropped]
    return "".join(lines) + f"Total safe images: {asked - len(dropped)} out of {asked}\n"


def outputs_line(prediction_id: str, asked: int, dropped: list[int]) -> str:
    """Server log line of a prediction that ran to the end: outputs asked, delivered and dropped."""
    delivered = asked - len(dropped)
    status = "succeeded" if delivered else "failed"
    line = f"prediction {prediction_id} {status}: {delivered} of {asked} outputs delivered"
    if dropped:
        line += f" (dropped as NSFW: image {', '.join(str(index) for index in dropped)})"
    return line


# --------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, **headers: str) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


class Handler(BaseHTTPRequestHandler):
    """Routes requests to `route_*` methods; every route returns a Response."""

    server_version = "replicate-sim"
    # (method, path pattern, handler name, requires auth)
    ROUTES = [
        ("GET", r"/health", "route_health", False),
        ("GET", r"/files/(?P<name>[^/]+)", "route_file", False),
        ("POST", r"/_sim/predictions/(?P<prediction_id>[^/]+)/redeliver", "route_redeliver", False),
        ("GET", r"/_sim/predictions/(?P<prediction_id>[^/]+)/deliveries", "route_deliveries", False),
        ("POST", r"/_sim/faults", "route_inject", False),
        ("DELETE", r"/_sim/faults", "route_clear_faults", False),
        ("POST", r"/v1/predictions", "route_create", True),
        ("GET", r"/v1/predictions", "route_list", True),
        ("GET", r"/v1/predictions/(?P<prediction_id>[^/]+)", "route_get", True),
        ("POST", r"/v1/predictions/(?P<prediction_id>[^/]+)/cancel", "route_cancel", True),
        ("POST", r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions", "route_create_for_model", True),
        ("GET", r"/v1/webhooks/default/secret", "route_secret", True),
    ]

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log(f"{self.client_address[0]} {format % args}")

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        try:
            self.raw_body = self.read_body()
            self.send(self.route(method, url.path))
        except ApiError as exc:
            self.send(Response(exc.status, json.dumps(exc.body).encode(), "application/problem+json", exc.headers))

    def route(self, method: str, path: str) -> Response:
        path_known = False
        for route_method, pattern, name, needs_auth in self.ROUTES:
            match = re.fullmatch(pattern, path)
            if not match:
                continue
            path_known = True
            if route_method != method:
                continue
            if needs_auth and not self.authorized():
                raise unauthenticated()
            fault = self.sim.take_fault(FAULT_OPS.get(name, "")) if needs_auth else None
            if fault is not None:
                headers = {"Retry-After": "1"} if fault == 429 else {}
                return json_response(fault, {"title": "Injected fault", "status": fault}, **headers)
            return getattr(self, name)(**match.groupdict())
        if path_known:
            raise ApiError(405, "Method not allowed", f"{method} is not allowed on {path}")
        raise not_found(f"Path {path}")

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "Bad request", "Invalid Content-Length") from None
        return self.rfile.read(length)

    def authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme in ("Bearer", "Token") and hmac.compare_digest(token.strip(), self.sim.config.api_token)

    def send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Bad request", "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Bad request", "Request body must be a JSON object")
        return body

    # ---- routes

    def route_health(self) -> Response:
        return json_response(200, {"ok": True})

    def route_file(self, name: str) -> Response:
        found = self.sim.file(name)
        if found is None:
            raise not_found(f"File {name}")
        return Response(200, found[0], found[1])

    def route_create(self) -> Response:
        body = self.json_body()
        if "version" not in body:
            raise invalid_input([field_error("required", "version", "version is required")])
        model, version = resolve_version(body["version"])
        return self.start(parse_create(body, CREATE_FIELDS, model, version))

    def route_create_for_model(self, owner: str, name: str) -> Response:
        model = f"{owner}/{name}"
        if model not in MODELS:
            raise not_found(f"Model {model}")
        return self.start(parse_create(self.json_body(), MODEL_CREATE_FIELDS, model, "hidden"))

    def start(self, request: CreateRequest) -> Response:
        """Create the prediction, honouring `Cancel-After` and `Prefer: wait[=N]`."""
        cancel_after = self.headers.get("Cancel-After")
        cancel_after_s = None if cancel_after is None else parse_cancel_after(cancel_after)
        if self.sim.throttles(request):
            raise throttled()
        pred = self.sim.create(request, cancel_after_s)
        if request.markers.create_error:
            # The prediction exists, but the client never learns it: an ambiguous create.
            return json_response(500, {"title": "Internal Server Error", "status": 500})
        wait_s = self.prefer_wait()
        headers = {}
        if wait_s is not None:
            self.sim.wait(pred, wait_s)
            headers["Preference-Applied"] = f"wait={wait_s}"
        body = self.sim.view(pred)
        status = 201 if wait_s is None or body["status"] in TERMINAL else 202
        return json_response(status, body, Location=body["urls"]["get"], **headers)

    def prefer_wait(self) -> int | None:
        """Seconds requested by a valid `Prefer: wait[=N]` preference, else None."""
        for preference in self.headers.get("Prefer", "").split(","):
            match = PREFER_WAIT.match(preference.strip())
            if match:
                return min(int(match.group(1) or MAX_WAIT_S), MAX_WAIT_S)
        return None

    def route_inject(self) -> Response:
        """`{"ops": ["create", "get", "list", "cancel"], "status": 500, "count": N}`."""
        body = self.json_body()
        ops, status, count = body.get("ops"), body.get("status"), body.get("count", 1)
        if not (isinstance(ops, list) and set(ops) <= set(FAULT_OPS.values())
                and isinstance(status, int) and 400 <= status <= 599 and isinstance(count, int)):
            raise ApiError(400, "Bad request", "Expected ops (create/get/list/cancel), status and count")
        self.sim.inject(ops, status, count)
        return json_response(200, {"ops": ops, "status": status, "count": count})

    def route_clear_faults(self) -> Response:
        self.sim.clear_faults()
        return json_response(200, {"cleared": True})

    def route_list(self) -> Response:
        size = self.int_query("page_size", 100)
        start = self.int_query("cursor", None, decode=decode_cursor)
        after = self.query.get("created_after")
        try:
            created_after = datetime.fromisoformat(after[0].replace("Z", "+00:00")) if after else None
        except ValueError:
            raise ApiError(400, "Bad request", "Invalid created_after") from None
        items, next_start, previous_start = self.sim.page(start, max(size, 1), created_after)
        return json_response(200, {
            "previous": self.page_url(previous_start),
            "next": self.page_url(next_start),
            "results": items,
        })

    def int_query(self, name: str, default: int | None, decode: Callable[[str], int] = int) -> int | None:
        values = self.query.get(name)
        if not values:
            return default
        try:
            return decode(values[0])
        except ValueError:
            raise ApiError(400, "Bad request", f"Invalid {name}") from None

    def page_url(self, start: int | None) -> str | None:
        """Absolute URL of the list page starting at `start` (keeps page_size)."""
        if start is None:
            return None
        params = {"cursor": encode_cursor(start)}
        for kept in ("page_size", "created_after"):
            if kept in self.query:
                params[kept] = self.query[kept][0]
        return f"{self.sim.public_url}/v1/predictions?{urlencode(params)}"

    def route_get(self, prediction_id: str) -> Response:
        return json_response(200, self.sim.view(self.sim.find(prediction_id)))

    def route_cancel(self, prediction_id: str) -> Response:
        return json_response(200, self.sim.cancel(self.sim.find(prediction_id)))

    def route_secret(self) -> Response:
        return json_response(200, {"key": self.sim.config.webhook_secret})

    def route_redeliver(self, prediction_id: str) -> Response:
        return json_response(200, {"status": self.sim.redeliver(self.sim.find(prediction_id))})

    def route_deliveries(self, prediction_id: str) -> Response:
        return json_response(200, self.sim.deliveries(self.sim.find(prediction_id)))


# Which operation each API route is, for injected faults (`/_sim/faults`).
FAULT_OPS = {
    "route_create": "create",
    "route_create_for_model": "create",
    "route_get": "get",
    "route_list": "list",
    "route_cancel": "cancel",
}


def encode_cursor(start: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{start}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        prefix, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(cursor) from None
    if prefix != "seq":
        raise ValueError(cursor)
    return int(number)


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    sim: Simulator


def make_server(config: Config) -> SimServer:
    """Bind the HTTP server (port 0 picks a free port) and attach a fresh simulator."""
    server = SimServer((config.host, config.port), Handler)
    port = server.server_address[1]
    server.sim = Simulator(config, config.public_url or f"http://{config.host}:{port}")
    return server


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    server = make_server(config)
    # shutdown() blocks until serve_forever() returns, so call it from another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"replicate-sim listening on http://{config.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log("replicate-sim stopped")


if __name__ == "__main__":
    main()
