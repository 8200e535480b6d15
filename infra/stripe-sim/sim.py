#!/usr/bin/env python3
"""Local simulator of the subset of the Stripe API used for Checkout payments.

Checkout Sessions, PaymentIntents, Charges, Refunds, Disputes and Events, with signed
webhook deliveries (`Stripe-Signature`) and retries. Standard library only. See
README.md for configuration, the API subset and the test-only `/_sim` controls.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import copy
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import signal
import string
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2024-06-20"
DEFAULT_WEBHOOK_SECRET = "whsec_picture_local_stripe_simulator"
DEFAULT_API_KEY = "sk_test_sim"
MAX_EXPIRY_S = 24 * 3600  # expires_at at most 24 h after creation, as Stripe
MIN_EXPIRY_S = 30 * 60  # ... and at least 30 min (STRIPE_SIM_MIN_EXPIRY_S lowers it for tests)
SWEEP_INTERVAL_S = 1.0  # how often open sessions past expires_at are expired without a read
DELIVERY_TIMEOUT_S = 10
IDEMPOTENCY_TTL_S = 24 * 3600
MAX_AMOUNT = 99_999_999  # Stripe's 8-digit amount limit
# Minimum Checkout total (smallest currency unit) for a few currencies; others just > 0.
MIN_TOTAL = {"usd": 50, "eur": 50, "chf": 50, "cad": 50, "aud": 50, "gbp": 30}
ID_ALPHABET = string.ascii_letters + string.digits
KEY_PATTERN = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")

SESSION_STATUSES = ("open", "complete", "expired")
PAY_OUTCOMES = ("paid", "async_succeeded", "async_failed")
OPEN_DISPUTE = ("warning_needs_response", "needs_response", "under_review")

# Session create params the simulator models, and real Stripe params it accepts and ignores.
SESSION_PARAMS = frozenset({
    "mode", "line_items", "client_reference_id", "metadata", "success_url", "cancel_url", "expires_at",
    "customer_email", "payment_method_types", "locale", "payment_intent_data", "expand", "ui_mode",
})
SESSION_IGNORED = frozenset({
    "submit_type", "billing_address_collection", "allow_promotion_codes", "customer_creation",
    "automatic_tax", "invoice_creation", "phone_number_collection", "consent_collection", "custom_text",
    "after_expiration", "payment_method_options", "tax_id_collection", "shipping_address_collection",
})
LINE_ITEM_PARAMS = frozenset({"price_data", "quantity"})
PRICE_DATA_PARAMS = frozenset({"currency", "unit_amount", "product_data", "tax_behavior"})
PRODUCT_DATA_PARAMS = frozenset({"name", "description", "images", "metadata", "tax_code"})
UNSUPPORTED = {  # real Stripe params the simulator cannot model
    "price": "line_items[][price] (use price_data)",
    "product": "price_data[product] (use product_data)",
    "unit_amount_decimal": "price_data[unit_amount_decimal] (use unit_amount)",
    "recurring": "price_data[recurring] (mode must be payment)",
    "adjustable_quantity": "line_items[][adjustable_quantity]",
    "tax_rates": "line_items[][tax_rates]",
    "dynamic_tax_rates": "line_items[][dynamic_tax_rates]",
}
REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "reason", "metadata", "expand"})
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# Object kind (the `object` field) by id prefix, for expansions and cursors.
KINDS = {"cs_": "checkout.session", "pi_": "payment_intent", "ch_": "charge", "re_": "refund", "du_": "dispute"}

_log_lock = threading.Lock()


def log(message: str) -> None:
    """Write one timestamped line to stderr."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with _log_lock:
        sys.stderr.write(f"{stamp} {message}\n")
        sys.stderr.flush()


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5110
    api_key: str = DEFAULT_API_KEY
    public_url: str | None = None  # None: derived from the bound address
    webhook_url: str | None = None  # None: events are recorded, never delivered
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    extra_secret: str | None = None  # a second `v1=` signature (secret rotation)
    retry_delays: tuple[float, ...] = (0.5, 1, 2, 4, 8)
    min_expiry_s: int = MIN_EXPIRY_S


def parse_config(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Build the configuration from environment variables, overridden by CLI flags."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description="Stripe API simulator (Checkout, refunds, disputes, webhooks)")
    parser.add_argument("--host", default=env.get("STRIPE_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env.get("STRIPE_SIM_PORT", "5110"))
    args = parser.parse_args(argv)
    try:
        config = Config(
            host=args.host,
            port=args.port,
            api_key=env.get("STRIPE_SIM_SECRET_KEY") or DEFAULT_API_KEY,
            public_url=(env.get("STRIPE_SIM_PUBLIC_URL") or "").rstrip("/") or None,
            webhook_url=env.get("STRIPE_WEBHOOK_URL") or None,
            webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or DEFAULT_WEBHOOK_SECRET,
            extra_secret=env.get("STRIPE_SIM_EXTRA_SECRET") or None,
            retry_delays=tuple(
                float(part) for part in env.get("STRIPE_SIM_RETRY_DELAYS", "0.5,1,2,4,8").split(",") if part.strip()
            ),
            min_expiry_s=int(env.get("STRIPE_SIM_MIN_EXPIRY_S", str(MIN_EXPIRY_S))),
        )
    except ValueError as exc:
        parser.error(str(exc))
    if any(delay < 0 for delay in config.retry_delays):
        parser.error("STRIPE_SIM_RETRY_DELAYS must not be negative")
    if not 0 <= config.min_expiry_s <= MAX_EXPIRY_S:
        parser.error(f"STRIPE_SIM_MIN_EXPIRY_S must be between 0 and {MAX_EXPIRY_S}")
    if config.webhook_url and urlsplit(config.webhook_url).scheme not in ("http", "https"):
        parser.error("STRIPE_WEBHOOK_URL must be an http(s) URL")
    return config


# --------------------------------------------------------------------------- errors


class StripeError(Exception):
    """An error answered in Stripe's shape: `{"error": {"type", "message", "code"?, "param"?}}`."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.body: dict[str, Any] = {"message": message, "type": kind}
        if code:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            self.body["param"] = param


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, message, param=param, code=code)


def missing_param(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param, "parameter_missing")


def unknown_param(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def no_such(kind: str, object_id: str, param: str = "id", status: int = 404) -> StripeError:
    return StripeError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def unrecognized_url(method: str, path: str) -> StripeError:
    return StripeError(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                            "or we can help at https://support.stripe.com/.")


def redact(key: str) -> str:
    return key[:8] + "*" * max(len(key) - 12, 3) + key[-4:] if len(key) > 12 else "*" * len(key)


# --------------------------------------------------------------------------- form parameters


def parse_params(raw: str) -> dict[str, Any]:
    """Decode Stripe's form encoding (`a[b][0][c]=v`, `expand[]=x`) into nested dicts and lists.

    Empty values are dropped, as Stripe treats `param=` as unset.
    """
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = KEY_PATTERN.fullmatch(key)
        if not match:
            raise invalid(f"Invalid parameter name: {key}")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for depth, part in enumerate(parts):
            part = part or str(len(node))  # `[]` appends
            if depth == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise invalid(f"Invalid parameter: {key} is both a value and a hash", key)
                if value != "":
                    node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise invalid(f"Invalid parameter: {key} is both a value and a hash", key)
                node = child
    return listify(root)


def listify(node: Any, in_metadata: bool = False) -> Any:
    """Turn dicts keyed by 0..n-1 into lists (metadata is always a hash)."""
    if not isinstance(node, dict):
        return node
    items = {key: listify(value, key == "metadata") for key, value in node.items()}
    if not in_metadata and items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def check_keys(params: dict[str, Any], allowed: frozenset[str], prefix: str = "",
               ignored: frozenset[str] = frozenset()) -> None:
    for key in params:
        if key in allowed or key in ignored:
            continue
        name = f"{prefix}[{key}]" if prefix else key
        if key in UNSUPPORTED:
            raise invalid(f"stripe-sim does not support {UNSUPPORTED[key]}: {name}", name)
        raise unknown_param(name)


def as_hash(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"Invalid hash: {param} must be a hash", param)
    return value


def as_int(value: Any, param: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise invalid(f"Invalid integer: {value if isinstance(value, str) else param}", param)
    number = int(value)
    if minimum is not None and number < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", param)
    if maximum is not None and number > maximum:
        raise invalid(f"This value must be less than or equal to {maximum}.", param)
    return number


def as_string(value: Any, param: str, max_length: int = 5000) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {param} must be a string", param)
    if len(value) > max_length:
        raise invalid(f"Invalid string: {param} must be at most {max_length} characters", param)
    return value


def as_url(value: Any, param: str) -> str:
    url = as_string(value, param, 5000)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid("Not a valid URL", param, "url_invalid")
    return url


def as_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    metadata = as_hash(value, param)
    if len(metadata) > 50:
        raise invalid("Invalid metadata: at most 50 keys are allowed", param)
    for key, item in metadata.items():
        if len(key) > 40:
            raise invalid(f"Invalid metadata: keys can have up to 40 characters ({key})", f"{param}[{key}]")
        if not isinstance(item, str) or len(item) > 500:
            raise invalid(f"Invalid metadata: values must be strings of up to 500 characters ({key})",
                          f"{param}[{key}]")
    return dict(metadata)


def expand_paths(params: dict[str, Any]) -> list[str]:
    paths = params.get("expand", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        raise invalid("Invalid array: expand must be an array of strings", "expand")
    return paths


# --------------------------------------------------------------------------- events


@dataclass
class Event:
    id: str
    type: str
    created: int
    object_id: str
    payload: dict[str, Any]  # the event object as first sent
    body: bytes  # the exact bytes sent (and re-sent) in deliveries
    seq: int
    pending_webhooks: int
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        payload = copy.deepcopy(self.payload)
        payload["pending_webhooks"] = self.pending_webhooks
        return payload


class Deliverer:
    """Posts events to the webhook URL on background threads, with retries."""

    def __init__(self, config: Config, is_current: Callable[[Event], bool], lock: threading.RLock):
        self.config = config
        self.is_current = is_current  # False once the event is gone (after a reset)
        self.lock = lock
        self.opener = urllib.request.build_opener(_NoRedirect)

    def submit(self, events: list[Event]) -> None:
        """First attempts in order on one thread; each failed event then retries on its own."""
        if self.config.webhook_url and events:
            threading.Thread(target=self._run, args=(events,), daemon=True, name="deliver").start()

    def _run(self, events: list[Event]) -> None:
        for event in events:
            if self.is_current(event) and not self.attempt(event):
                threading.Thread(target=self._retry, args=(event,), daemon=True, name=f"retry-{event.id}").start()

    def _retry(self, event: Event) -> None:
        for delay in self.config.retry_delays:
            time.sleep(delay)
            if not self.is_current(event) or event.pending_webhooks == 0 or self.attempt(event):
                return

    def signature(self, timestamp: int, body: bytes) -> str:
        signed = f"{timestamp}.".encode() + body
        parts = [f"t={timestamp}"]
        for secret in filter(None, (self.config.webhook_secret, self.config.extra_secret)):
            parts.append("v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest())
        return ",".join(parts)

    def attempt(self, event: Event, reason: str = "") -> bool:
        """One signed POST of the event; records it and returns whether the endpoint answered 2xx."""
        url = self.config.webhook_url
        timestamp = now()
        request = urllib.request.Request(url, data=event.body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
            "Stripe-Signature": self.signature(timestamp, event.body),
        })
        record: dict[str, Any] = {"at": round(time.time(), 3)}
        try:
            with self.opener.open(request, timeout=DELIVERY_TIMEOUT_S) as response:
                record["status_code"] = response.status
        except urllib.error.HTTPError as exc:
            record["status_code"] = exc.code
            exc.close()
        except (OSError, ValueError) as exc:
            record["error"] = str(getattr(exc, "reason", exc)) or type(exc).__name__
        ok = 200 <= record.get("status_code", 0) < 300
        with self.lock:
            event.deliveries.append(record)
            if ok:
                event.pending_webhooks = 0
        outcome = record.get("status_code", record.get("error"))
        log(f"webhook {event.id} {event.type}{reason} -> {url} {outcome} (attempt {len(event.deliveries)})")
        return ok


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Stripe does not follow redirects: a 3xx answer is a failed delivery."""

    def redirect_request(self, *args: Any) -> None:
        return None


# --------------------------------------------------------------------------- simulator


@dataclass
class Context:
    """The API request that causes events (their `request` field)."""

    request_id: str | None = None
    idempotency_key: str | None = None


SYSTEM = Context()


class Simulator:
    """All state, behind one lock. Objects are kept as Stripe-shaped dicts."""

    def __init__(self, config: Config, public_url: str):
        self.config = config
        self.public_url = public_url
        self.lock = threading.RLock()
        self.deliverer = Deliverer(config, self._is_current, self.lock)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, dict[str, Any]] = {}
            self.seqs: dict[str, int] = {}
            self.line_items: dict[str, list[dict[str, Any]]] = {}
            self.events: dict[str, Event] = {}
            self.idempotency: dict[str, dict[str, Any]] = {}
            # session id -> (payment_intent_data[metadata], payment_intent_data[description])
            self.intent_data: dict[str, tuple[dict[str, str], str | None]] = {}
            self.seq = 0

    def _is_current(self, event: Event) -> bool:
        with self.lock:
            return self.events.get(event.id) is event

    def _add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        self.objects[obj["id"]] = obj
        self.seqs[obj["id"]] = self.seq
        return obj

    def find(self, kind: str, object_id: str, param: str = "id", status: int = 404) -> dict[str, Any]:
        with self.lock:
            self.expire_due()
            obj = self.objects.get(object_id)
            if obj is None or obj["object"] != kind:
                raise no_such(kind, object_id, param, status)
            return obj

    def view(self, obj: dict[str, Any], paths: list[str] = ()) -> dict[str, Any]:
        with self.lock:
            out = copy.deepcopy(obj)
            for path in paths:
                self._expand(out, path.split("."), path)
            return out

    def _expand(self, node: dict[str, Any], parts: list[str], path: str) -> None:
        if len(parts) > 4:
            raise invalid(f"You cannot expand more than 4 levels of a property. Property: {path}", "expand")
        name, rest = parts[0], parts[1:]
        if node.get("object") == "list" and name == "data":
            for item in node["data"]:
                if rest:
                    self._expand(item, rest, path)
            return
        if name == "line_items" and node.get("object") == "checkout.session":
            node["line_items"] = self.line_items_list(node["id"])
        elif name not in node or (node[name] is not None and not isinstance(node[name], (str, dict))):
            raise invalid(f"This property cannot be expanded ({name}).", "expand")
        elif isinstance(node[name], str):
            target = self.objects.get(node[name])
            if target is None:
                raise invalid(f"This property cannot be expanded ({name}).", "expand")
            node[name] = copy.deepcopy(target)
        if rest and isinstance(node.get(name), dict):
            self._expand(node[name], rest, path)

    # ---- events

    def _event(self, kind: str, obj: dict[str, Any], ctx: Context,
               previous: dict[str, Any] | None = None) -> Event:
        """Record an event with a snapshot of `obj` (caller holds the lock)."""
        self.seq += 1
        event_id = new_id("evt_")
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous:
            data["previous_attributes"] = previous
        pending = 1 if self.config.webhook_url else 0
        payload = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": pending,
            "request": {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
            "type": kind,
        }
        body = json.dumps(payload, indent=2).encode()
        event = Event(event_id, kind, payload["created"], obj["id"], payload, body, self.seq, pending)
        self.events[event_id] = event
        log(f"event {event_id} {kind} {obj['id']}")
        return event

    def find_event(self, event_id: str) -> Event:
        with self.lock:
            event = self.events.get(event_id)
            if event is None:
                raise no_such("event", event_id)
            return event

    def redeliver(self, event_id: str) -> dict[str, Any]:
        event = self.find_event(event_id)
        if not self.config.webhook_url:
            raise invalid("No webhook endpoint is configured (STRIPE_WEBHOOK_URL is unset)")
        self.deliverer.attempt(event, " (redelivery)")
        with self.lock:
            return {"id": event.id, "type": event.type, "delivery": dict(event.deliveries[-1])}

    def sim_events(self, kind: str | None, object_id: str | None) -> list[dict[str, Any]]:
        with self.lock:
            self.expire_due()
            events = sorted(self.events.values(), key=lambda event: -event.seq)
            return [
                {"id": event.id, "type": event.type, "created": event.created, "object_id": event.object_id,
                 "pending_webhooks": event.pending_webhooks, "deliveries": [dict(d) for d in event.deliveries]}
                for event in events
                if (kind is None or event.type == kind) and (object_id is None or event.object_id == object_id)
            ]

    # ---- checkout sessions

    def create_session(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        check_keys(params, SESSION_PARAMS, ignored=SESSION_IGNORED)
        if "mode" not in params:
            raise missing_param("mode")
        if params["mode"] != "payment":
            raise invalid(f"Invalid mode: stripe-sim supports only payment (got {params['mode']!r})", "mode")
        if params.get("ui_mode", "hosted") != "hosted":
            raise invalid("stripe-sim supports only ui_mode=hosted", "ui_mode")
        if "success_url" not in params:
            raise missing_param("success_url")
        success_url = as_url(params["success_url"], "success_url")
        cancel_url = as_url(params["cancel_url"], "cancel_url") if "cancel_url" in params else None
        items, currency, total = self._line_items(params.get("line_items"))
        reference = params.get("client_reference_id")
        if reference is not None:
            as_string(reference, "client_reference_id", 200)
        metadata = as_metadata(params.get("metadata", {}))
        email = as_string(params["customer_email"], "customer_email", 800) if "customer_email" in params else None
        methods = params.get("payment_method_types", ["card"])
        if not isinstance(methods, list) or not all(isinstance(method, str) for method in methods):
            raise invalid("Invalid array: payment_method_types", "payment_method_types")
        intent_data = as_hash(params.get("payment_intent_data", {}), "payment_intent_data")
        check_keys(intent_data, frozenset({"metadata", "description"}), "payment_intent_data",
                   frozenset({"capture_method", "receipt_email", "statement_descriptor",
                              "statement_descriptor_suffix", "setup_future_usage"}))
        intent_metadata = as_metadata(intent_data.get("metadata", {}), "payment_intent_data[metadata]")
        created = now()
        expires_at = created + MAX_EXPIRY_S
        if "expires_at" in params:
            expires_at = as_int(params["expires_at"], "expires_at")
            if expires_at - created < self.config.min_expiry_s:
                raise invalid("The `expires_at` timestamp must be at least "
                              f"{human_duration(self.config.min_expiry_s)} from Checkout Session creation.",
                              "expires_at")
            if expires_at - created > MAX_EXPIRY_S:
                raise invalid("The `expires_at` timestamp must be less than 24 hours from Checkout Session "
                              "creation.", "expires_at")
        session_id = new_id("cs_test_", 58)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": cancel_url,
            "client_reference_id": reference,
            "client_secret": None,
            "created": created,
            "currency": currency,
            "customer": None,
            "customer_creation": "if_required",
            "customer_details": None,
            "customer_email": email,
            "expires_at": expires_at,
            "invoice": None,
            "livemode": False,
            "locale": params.get("locale"),
            "metadata": metadata,
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": methods,
            "payment_status": "unpaid",
            "status": "open",
            "submit_type": params.get("submit_type"),
            "success_url": success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"{self.public_url}/c/pay/{session_id}",
        }
        with self.lock:
            self._add(session)
            self.line_items[session_id] = items
            self.intent_data[session_id] = (intent_metadata, intent_data.get("description"))
            return session

    def _line_items(self, value: Any) -> tuple[list[dict[str, Any]], str, int]:
        if value is None:
            raise missing_param("line_items")
        if not isinstance(value, list) or not value:
            raise invalid("Invalid array: line_items must be a non-empty array", "line_items")
        items, currencies, total = [], set(), 0
        for index, item in enumerate(value):
            prefix = f"line_items[{index}]"
            item = as_hash(item, prefix)
            check_keys(item, LINE_ITEM_PARAMS, prefix)
            if "price_data" not in item:
                raise missing_param(f"{prefix}[price_data]")
            price = as_hash(item["price_data"], f"{prefix}[price_data]")
            check_keys(price, PRICE_DATA_PARAMS, f"{prefix}[price_data]")
            for name in ("currency", "unit_amount", "product_data"):
                if name not in price:
                    raise missing_param(f"{prefix}[price_data][{name}]")
            currency = as_string(price["currency"], f"{prefix}[price_data][currency]").lower()
            if not re.fullmatch(r"[a-z]{3}", currency):
                raise invalid(f"Invalid currency: {currency}", f"{prefix}[price_data][currency]")
            unit = as_int(price["unit_amount"], f"{prefix}[price_data][unit_amount]", 0, MAX_AMOUNT)
            product = as_hash(price["product_data"], f"{prefix}[price_data][product_data]")
            check_keys(product, PRODUCT_DATA_PARAMS, f"{prefix}[price_data][product_data]")
            if "name" not in product:
                raise missing_param(f"{prefix}[price_data][product_data][name]")
            name = as_string(product["name"], f"{prefix}[price_data][product_data][name]", 250)
            if "quantity" not in item:
                raise missing_param(f"{prefix}[quantity]")
            quantity = as_int(item["quantity"], f"{prefix}[quantity]", 1, 999_999)
            currencies.add(currency)
            amount = unit * quantity
            total += amount
            items.append({
                "id": new_id("li_"),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": currency,
                "description": name,
                "price": {
                    "id": new_id("price_"), "object": "price", "active": False, "currency": currency,
                    "livemode": False, "metadata": {}, "product": new_id("prod_", 14), "type": "one_time",
                    "unit_amount": unit, "unit_amount_decimal": str(unit),
                },
                "quantity": quantity,
            })
        if len(currencies) > 1:
            raise invalid("All line_items must use the same currency", "line_items")
        currency = currencies.pop()
        if total > MAX_AMOUNT:
            raise invalid(f"The Checkout Session's total amount due must be no more than {MAX_AMOUNT}.",
                          "line_items", "amount_too_large")
        if total < MIN_TOTAL.get(currency, 1):
            raise invalid(f"The Checkout Session's total amount due must add up to at least "
                          f"{MIN_TOTAL.get(currency, 1)} {currency} (in the smallest currency unit).",
                          "line_items", "amount_too_small")
        return items, currency, total

    def line_items_list(self, session_id: str) -> dict[str, Any]:
        return {"object": "list", "data": copy.deepcopy(self.line_items.get(session_id, [])), "has_more": False,
                "url": f"/v1/checkout/sessions/{session_id}/line_items"}

    def expire_due(self) -> list[Event]:
        """Expire open sessions past `expires_at`; delivers their events. Called on reads and by the sweep."""
        events = []
        with self.lock:
            moment = time.time()
            for obj in list(self.objects.values()):
                if obj["object"] == "checkout.session" and obj["status"] == "open" and obj["expires_at"] <= moment:
                    events.append(self._expire(obj, SYSTEM))
        self.deliverer.submit(events)
        return events

    def expire_session(self, session_id: str, ctx: Context) -> dict[str, Any]:
        with self.lock:
            session = self.find("checkout.session", session_id)
            if session["status"] != "open":
                raise invalid(f'Only Checkout Sessions with a status in ["open"] can be expired. This session has '
                              f'a status of "{session["status"]}".', code="checkout_session_not_open")
            event = self._expire(session, ctx)
        self.deliverer.submit([event])
        return session

    def _expire(self, session: dict[str, Any], ctx: Context) -> Event:
        session["status"], session["url"] = "expired", None
        return self._event("checkout.session.expired", session, ctx)

    def list_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        check_keys(params, frozenset({"limit", "starting_after", "ending_before", "created", "status",
                                      "payment_intent", "expand"}))
        status = params.get("status")
        if status is not None and status not in SESSION_STATUSES:
            raise invalid(f"Invalid status: must be one of {', '.join(SESSION_STATUSES)}", "status")
        intent = params.get("payment_intent")
        created = created_filter(params.get("created"))
        with self.lock:
            self.expire_due()
            items = [obj for obj in self._newest_first("checkout.session")
                     if (status is None or obj["status"] == status)
                     and (intent is None or obj["payment_intent"] == intent) and created(obj["created"])]
            return self._page(items, params, "checkout.session", "/v1/checkout/sessions")

    def _newest_first(self, kind: str) -> list[dict[str, Any]]:
        return sorted((obj for obj in self.objects.values() if obj["object"] == kind),
                      key=lambda obj: -self.seqs[obj["id"]])

    def _page(self, items: list[Any], params: dict[str, Any], kind: str, url: str,
              seq_of: Callable[[Any], int] | None = None) -> dict[str, Any]:
        """Stripe cursor pagination over `items` (newest first)."""
        seq_of = seq_of or (lambda obj: self.seqs[obj["id"]])
        limit = as_int(params["limit"], "limit", 1, 100) if "limit" in params else 10
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise invalid("You may only specify one of these parameters: starting_after, ending_before.")
        if after is not None or before is not None:
            cursor_param = "starting_after" if after is not None else "ending_before"
            cursor_id = after if after is not None else before
            cursor = self.events.get(cursor_id) if kind == "event" else self.objects.get(cursor_id)
            if cursor is None or (kind != "event" and cursor["object"] != kind):
                raise no_such(kind, str(cursor_id), cursor_param, 400)
            cursor_seq = seq_of(cursor)
            if after is not None:
                rest = [item for item in items if seq_of(item) < cursor_seq]
                page, has_more = rest[:limit], len(rest) > limit
            else:
                rest = [item for item in items if seq_of(item) > cursor_seq]
                page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        data = [item.to_json() if isinstance(item, Event) else copy.deepcopy(item) for item in page]
        return {"object": "list", "data": data, "has_more": has_more, "url": url}

    # ---- payments

    def pay(self, session_id: str, outcome: str, deliver: bool) -> dict[str, Any]:
        if outcome not in PAY_OUTCOMES:
            raise invalid(f"outcome must be one of {', '.join(PAY_OUTCOMES)}", "outcome")
        with self.lock:
            session = self.find("checkout.session", session_id)
            if session["status"] != "open":
                raise invalid(f"Checkout Session {session_id} is {session['status']}; only open sessions can be "
                              "paid", code="checkout_session_not_open")
            instant = outcome == "paid"
            intent, charge = self._payment(session, instant)
            session.update(status="complete", url=None, payment_intent=intent["id"],
                           payment_status="paid" if instant else "unpaid",
                           customer_details={"address": None, "email": session["customer_email"] or
                                             "customer@example.com", "name": "Sim Customer", "phone": None,
                                             "tax_exempt": "none", "tax_ids": []})
            events = [self._event("checkout.session.completed", session, SYSTEM)]
            if outcome == "async_succeeded":
                intent.update(status="succeeded", amount_received=intent["amount"])
                charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])
                session["payment_status"] = "paid"
                events.append(self._event("checkout.session.async_payment_succeeded", session, SYSTEM))
            elif outcome == "async_failed":
                intent.update(status="requires_payment_method",
                              last_payment_error={"code": "payment_intent_payment_attempt_failed",
                                                  "message": "The payment failed.", "type": "card_error"})
                charge.update(status="failed", failure_code="payment_intent_payment_attempt_failed",
                              failure_message="The payment failed.")
                events.append(self._event("checkout.session.async_payment_failed", session, SYSTEM))
            result = {"session": copy.deepcopy(session), "payment_intent": copy.deepcopy(intent),
                      "charge": copy.deepcopy(charge), "events": [event.id for event in events]}
        if deliver:
            self.deliverer.submit(events)
        return result

    def _payment(self, session: dict[str, Any], instant: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """A PaymentIntent and its charge: succeeded when instant, else processing/pending."""
        created, amount, currency = now(), session["amount_total"], session["currency"]
        metadata, description = self.intent_data.get(session["id"], ({}, None))
        intent_id, charge_id = new_id("pi_"), new_id("ch_")
        method = "card" if instant else "sepa_debit"
        intent = self._add({
            "id": intent_id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_received": amount if instant else 0, "canceled_at": None, "capture_method": "automatic",
            "client_secret": f"{intent_id}_secret_{new_id('', 25)}", "confirmation_method": "automatic",
            "created": created, "currency": currency, "customer": None, "description": description,
            "last_payment_error": None, "latest_charge": charge_id, "livemode": False, "metadata": dict(metadata),
            "payment_method": new_id("pm_"), "payment_method_types": [method],
            "status": "succeeded" if instant else "processing",
        })
        charge = self._add({
            "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount if instant else 0,
            "amount_refunded": 0, "balance_transaction": None, "captured": instant, "created": created,
            "currency": currency, "customer": None, "description": description, "disputed": False,
            "failure_code": None, "failure_message": None, "livemode": False, "metadata": dict(metadata),
            "paid": instant, "payment_intent": intent_id, "payment_method": intent["payment_method"],
            "payment_method_details": {"type": method}, "refunded": False,
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/v1/charges/{charge_id}/refunds"},
            "status": "succeeded" if instant else "pending",
        })
        return intent, charge

    # ---- refunds

    def create_refund(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        check_keys(params, REFUND_PARAMS)
        with self.lock:
            if "payment_intent" in params:
                intent = self.find("payment_intent", params["payment_intent"], "payment_intent", 400)
                charge = self.objects.get(intent["latest_charge"] or "")
                if "charge" in params and params["charge"] != intent["latest_charge"]:
                    raise invalid("The charge does not belong to this PaymentIntent.", "charge")
            elif "charge" in params:
                charge = self.find("charge", params["charge"], "charge", 400)
                intent = self.objects[charge["payment_intent"]]
            else:
                raise invalid("One of the following params should be provided for this request: payment_intent "
                              "or charge.", "payment_intent", "parameter_missing")
            if charge is None or charge["status"] != "succeeded":
                raise invalid(f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                              "payment_intent", "charge_not_refundable")
            if charge["refunded"]:
                raise invalid(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
            dispute = self._dispute_of(charge["id"])
            if dispute is not None and dispute["status"] != "won":
                raise invalid(f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                              code="charge_disputed")
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = as_int(params["amount"], "amount", 1) if "amount" in params else remaining
            if amount > remaining:
                raise invalid(f"Refund amount ({amount} {charge['currency']}) is greater than unrefunded amount on "
                              f"charge ({remaining} {charge['currency']})", "amount", "amount_too_large")
            reason = params.get("reason")
            if reason is not None and reason not in REFUND_REASONS:
                raise invalid(f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", "reason")
            metadata = as_metadata(params.get("metadata", {}))
            refund = self._add({
                "id": new_id("re_"), "object": "refund", "amount": amount, "balance_transaction": None,
                "charge": charge["id"], "created": now(), "currency": charge["currency"],
                "destination_details": {"type": "card", "card": {"type": "refund"}}, "metadata": metadata,
                "payment_intent": intent["id"], "reason": reason, "receipt_number": None,
                "source_transfer_reversal": None, "status": "succeeded", "transfer_reversal": None,
            })
            previous = {"amount_refunded": charge["amount_refunded"]}
            charge["amount_refunded"] += amount
            if charge["amount_refunded"] == charge["amount"]:
                previous["refunded"] = False
                charge["refunded"] = True
            refunds = charge["refunds"]
            refunds["data"].insert(0, copy.deepcopy(refund))
            refunds["total_count"] = len(refunds["data"])
            event = self._event("charge.refunded", charge, ctx, previous)
        self.deliverer.submit([event])
        return refund

    def _dispute_of(self, charge_id: str) -> dict[str, Any] | None:
        return next((obj for obj in self.objects.values()
                     if obj["object"] == "dispute" and obj["charge"] == charge_id), None)

    # ---- disputes

    def dispute(self, intent_id: str, reason: str, deliver: bool) -> dict[str, Any]:
        with self.lock:
            intent = self.find("payment_intent", intent_id)
            charge = self.objects.get(intent["latest_charge"] or "")
            if charge is None or charge["status"] != "succeeded":
                raise invalid(f"PaymentIntent {intent_id} has no succeeded charge to dispute")
            if self._dispute_of(charge["id"]) is not None:
                raise invalid(f"Charge {charge['id']} is already disputed")
            amount = charge["amount"] - charge["amount_refunded"]
            if amount <= 0:
                raise invalid(f"Charge {charge['id']} is fully refunded; nothing to dispute")
            created = now()
            dispute = self._add({
                "id": new_id("du_"), "object": "dispute", "amount": amount, "balance_transactions": [],
                "charge": charge["id"], "created": created, "currency": charge["currency"], "evidence": {},
                "evidence_details": {"due_by": created + 7 * 86400, "has_evidence": False, "past_due": False,
                                     "submission_count": 0},
                "is_charge_refundable": False, "livemode": False, "metadata": {}, "payment_intent": intent_id,
                "reason": reason, "status": "needs_response",
            })
            charge["disputed"] = True
            event = self._event("charge.dispute.created", dispute, SYSTEM)
            result = {"dispute": copy.deepcopy(dispute), "events": [event.id]}
        if deliver:
            self.deliverer.submit([event])
        return result

    def close_dispute(self, dispute_id: str, status: str, deliver: bool) -> dict[str, Any]:
        if status not in ("won", "lost"):
            raise invalid("status must be won or lost", "status")
        with self.lock:
            dispute = self.find("dispute", dispute_id)
            if dispute["status"] not in OPEN_DISPUTE:
                raise invalid(f"Dispute {dispute_id} is already closed ({dispute['status']})")
            previous = {"status": dispute["status"]}
            dispute["status"] = status
            events = []
            if status == "won":
                events.append(self._event("charge.dispute.funds_reinstated", dispute, SYSTEM))
            events.append(self._event("charge.dispute.closed", dispute, SYSTEM, previous))
            result = {"dispute": copy.deepcopy(dispute), "events": [event.id for event in events]}
        if deliver:
            self.deliverer.submit(events)
        return result

    # ---- events API

    def list_events(self, params: dict[str, Any]) -> dict[str, Any]:
        check_keys(params, frozenset({"limit", "starting_after", "ending_before", "created", "type",
                                      "delivery_success"}))
        kind = params.get("type")
        created = created_filter(params.get("created"))

        def matches(event: Event) -> bool:
            if kind is None:
                return True
            return event.type.startswith(kind[:-1]) if kind.endswith("*") else event.type == kind

        with self.lock:
            self.expire_due()
            items = [event for event in sorted(self.events.values(), key=lambda event: -event.seq)
                     if matches(event) and created(event.created)]
            return self._page(items, params, "event", "/v1/events", lambda event: event.seq)

    # ---- idempotency

    def idempotent(self, key: str | None, fingerprint: tuple[str, str, str],
                   run: Callable[[], tuple[int, bytes, str]]) -> tuple[int, bytes, str, bool]:
        """Run a POST once per Idempotency-Key: (status, body, request id, replayed).

        Only 2xx results are saved (validation errors are not), as Stripe saves only requests that ran.
        """
        if not key:
            return (*run(), False)
        endpoint, params_hash = f"{fingerprint[0]} {fingerprint[1]}", fingerprint[2]
        with self.lock:
            cutoff = time.time() - IDEMPOTENCY_TTL_S
            for stale in [k for k, entry in self.idempotency.items() if entry["at"] < cutoff]:
                del self.idempotency[stale]
            entry = self.idempotency.get(key)
            if entry is not None:
                if entry["endpoint"] != endpoint:
                    raise StripeError(400, "Keys for idempotent requests can only be used for the same endpoint "
                                           f"they were first used for ('{entry['endpoint']}' vs '{endpoint}'). Try "
                                           f"using a key other than '{key}' if you meant to execute a different "
                                           "request.", kind="idempotency_error")
                if entry["params"] != params_hash:
                    raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                           f"they were first used with. Try using a key other than '{key}' if you "
                                           "meant to execute a different request.", kind="idempotency_error")
                if entry.get("status") is None:
                    raise StripeError(409, "There is currently another in-progress request using this Idempotent "
                                           f"Key (that probably means you submitted twice, and the other request "
                                           f"is still going through): '{key}'. Please try again later.",
                                      kind="idempotency_error")
                return entry["status"], entry["body"], entry["request_id"], True
            self.idempotency[key] = {"endpoint": endpoint, "params": params_hash, "at": time.time()}
        try:
            status, body, request_id = run()
        except BaseException:
            with self.lock:
                self.idempotency.pop(key, None)
            raise
        with self.lock:
            if 200 <= status < 300 and key in self.idempotency:
                self.idempotency[key].update(status=status, body=body, request_id=request_id)
            else:
                self.idempotency.pop(key, None)
        return status, body, request_id, False


def created_filter(value: Any) -> Callable[[int], bool]:
    """`created=T` or `created[gt|gte|lt|lte]=T` as a predicate."""
    if value is None:
        return lambda _: True
    if isinstance(value, str):
        exact = as_int(value, "created")
        return lambda created: created == exact
    bounds = as_hash(value, "created")
    check_keys(bounds, frozenset({"gt", "gte", "lt", "lte"}), "created")
    limits = {name: as_int(bound, f"created[{name}]") for name, bound in bounds.items()}
    tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    return lambda created: all(tests[name](created, bound) for name, bound in limits.items())


def human_duration(seconds: int) -> str:
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600} hours"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


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

    server_version = "stripe-sim"
    S = r"(?P<session_id>[^/]+)"
    # (method, path pattern, handler name, requires API key)
    ROUTES = [
        ("GET", r"/health", "route_health", False),
        ("GET", r"/c/pay/" + S, "route_pay_page", False),
        ("POST", r"/c/pay/" + S, "route_pay_page_submit", False),
        ("POST", r"/_sim/checkout/sessions/" + S + "/pay", "route_sim_pay", False),
        ("POST", r"/_sim/payment_intents/(?P<intent_id>[^/]+)/dispute", "route_sim_dispute", False),
        ("POST", r"/_sim/disputes/(?P<dispute_id>[^/]+)/close", "route_sim_close_dispute", False),
        ("POST", r"/_sim/events/(?P<event_id>[^/]+)/redeliver", "route_sim_redeliver", False),
        ("GET", r"/_sim/events", "route_sim_events", False),
        ("POST", r"/_sim/reset", "route_sim_reset", False),
        ("POST", r"/v1/checkout/sessions", "route_create_session", True),
        ("GET", r"/v1/checkout/sessions", "route_list_sessions", True),
        ("GET", r"/v1/checkout/sessions/" + S, "route_get_session", True),
        ("GET", r"/v1/checkout/sessions/" + S + "/line_items", "route_session_line_items", True),
        ("POST", r"/v1/checkout/sessions/" + S + "/expire", "route_expire_session", True),
        ("POST", r"/v1/refunds", "route_create_refund", True),
        ("GET", r"/v1/refunds/(?P<object_id>[^/]+)", "route_get_refund", True),
        ("GET", r"/v1/charges/(?P<object_id>[^/]+)", "route_get_charge", True),
        ("GET", r"/v1/payment_intents/(?P<object_id>[^/]+)", "route_get_intent", True),
        ("GET", r"/v1/disputes/(?P<object_id>[^/]+)", "route_get_dispute", True),
        ("GET", r"/v1/events", "route_list_events", True),
        ("GET", r"/v1/events/(?P<event_id>[^/]+)", "route_get_event", True),
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
        self.query_string = url.query
        self.request_id = new_id("req_", 14)
        headers = {"Request-Id": self.request_id} if url.path.startswith("/v1/") else {}
        try:
            self.raw_body = self.read_body()
            response = self.route(method, url.path)
        except StripeError as exc:
            response = json_response(exc.status, {"error": exc.body}, **exc.headers)
        response.headers = {**headers, **response.headers}
        self.send(response)

    def route(self, method: str, path: str) -> Response:
        for route_method, pattern, name, needs_auth in self.ROUTES:
            match = re.fullmatch(pattern, path)
            if not match or route_method != method:
                continue
            if needs_auth:
                self.authenticate()
            return getattr(self, name)(**match.groupdict())
        raise unrecognized_url(method, path)

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise invalid("Invalid Content-Length") from None
        return self.rfile.read(length)

    def authenticate(self) -> None:
        scheme, _, credentials = self.headers.get("Authorization", "").strip().partition(" ")
        key = credentials.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key, validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        elif scheme.lower() != "bearer":
            key = ""
        if not key:
            raise StripeError(401, "You did not provide an API key. You need to provide your API key in the "
                                   "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                                   "YOUR_SECRET_KEY').", headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
        if not hmac.compare_digest(key.encode(), self.sim.config.api_key.encode()):
            raise StripeError(401, f"Invalid API Key provided: {redact(key)}",
                              headers={"WWW-Authenticate": 'Basic realm="Stripe"'})

    def send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def params(self) -> dict[str, Any]:
        """Form parameters: the query string for GET, the body for POST."""
        if self.command == "GET":
            return parse_params(self.query_string)
        try:
            raw = self.raw_body.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The request body is not valid UTF-8") from None
        content_type = self.headers.get("Content-Type", "application/x-www-form-urlencoded")
        if raw and not content_type.startswith("application/x-www-form-urlencoded"):
            raise invalid("Invalid request: the body must be application/x-www-form-urlencoded")
        return parse_params(raw)

    def json_body(self) -> dict[str, Any]:
        """The JSON object body of a `/_sim` control (empty body = {})."""
        if not self.raw_body.strip():
            return {}
        try:
            body = json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError):
            raise invalid("The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object")
        return body

    def context(self) -> Context:
        return Context(self.request_id, self.headers.get("Idempotency-Key"))

    def mutate(self, run: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
        """A POST under the Idempotency-Key rules: same key and params replay the first response."""
        params = self.params()
        fingerprint = ("POST", urlsplit(self.path).path, json.dumps(params, sort_keys=True))

        def execute() -> tuple[int, bytes, str]:
            obj = self.sim.view(run(params), expand_paths(params))
            return 200, json.dumps(obj, indent=2).encode(), self.request_id

        key = self.headers.get("Idempotency-Key") or None
        status, body, original, replayed = self.sim.idempotent(key, fingerprint, execute)
        headers = {"Idempotency-Key": key} if key else {}
        if replayed:
            headers.update({"Idempotent-Replayed": "true", "Original-Request": original})
        return Response(status, body, headers=headers)

    def retrieve(self, kind: str, object_id: str) -> Response:
        params = self.params()
        check_keys(params, frozenset({"expand"}))
        return json_response(200, self.sim.view(self.sim.find(kind, object_id), expand_paths(params)))

    # ---- public API

    def route_health(self) -> Response:
        return json_response(200, {"ok": True})

    def route_create_session(self) -> Response:
        return self.mutate(lambda params: self.sim.create_session(params, self.context()))

    def route_list_sessions(self) -> Response:
        params = self.params()
        listing = self.sim.list_sessions(params)
        return json_response(200, self.sim.view(listing, expand_paths(params)))

    def route_get_session(self, session_id: str) -> Response:
        return self.retrieve("checkout.session", session_id)

    def route_session_line_items(self, session_id: str) -> Response:
        self.sim.find("checkout.session", session_id)
        with self.sim.lock:
            return json_response(200, self.sim.line_items_list(session_id))

    def route_expire_session(self, session_id: str) -> Response:
        def expire(params: dict[str, Any]) -> dict[str, Any]:
            check_keys(params, frozenset({"expand"}))
            return self.sim.expire_session(session_id, self.context())

        return self.mutate(expire)

    def route_create_refund(self) -> Response:
        return self.mutate(lambda params: self.sim.create_refund(params, self.context()))

    def route_get_refund(self, object_id: str) -> Response:
        return self.retrieve("refund", object_id)

    def route_get_charge(self, object_id: str) -> Response:
        return self.retrieve("charge", object_id)

    def route_get_intent(self, object_id: str) -> Response:
        return self.retrieve("payment_intent", object_id)

    def route_get_dispute(self, object_id: str) -> Response:
        return self.retrieve("dispute", object_id)

    def route_list_events(self) -> Response:
        return json_response(200, self.sim.list_events(self.params()))

    def route_get_event(self, event_id: str) -> Response:
        event = self.sim.find_event(event_id)
        with self.sim.lock:
            return json_response(200, event.to_json())

    # ---- simulator controls (JSON, no API key)

    def deliver_flag(self, body: dict[str, Any]) -> bool:
        deliver = body.get("deliver", True)
        if not isinstance(deliver, bool):
            raise invalid("deliver must be a boolean", "deliver")
        return deliver

    def route_sim_pay(self, session_id: str) -> Response:
        body = self.json_body()
        return json_response(200, self.sim.pay(session_id, body.get("outcome", "paid"), self.deliver_flag(body)))

    def route_sim_dispute(self, intent_id: str) -> Response:
        body = self.json_body()
        reason = body.get("reason", "fraudulent")
        if not isinstance(reason, str):
            raise invalid("reason must be a string", "reason")
        return json_response(200, self.sim.dispute(intent_id, reason, self.deliver_flag(body)))

    def route_sim_close_dispute(self, dispute_id: str) -> Response:
        body = self.json_body()
        return json_response(200, self.sim.close_dispute(dispute_id, body.get("status"), self.deliver_flag(body)))

    def route_sim_redeliver(self, event_id: str) -> Response:
        return json_response(200, self.sim.redeliver(event_id))

    def route_sim_events(self) -> Response:
        query = dict(parse_qsl(self.query_string))
        return json_response(200, {"data": self.sim.sim_events(query.get("type"), query.get("object_id"))})

    def route_sim_reset(self) -> Response:
        self.sim.reset()
        return json_response(200, {"reset": True})

    # ---- hosted payment page (manual testing in a browser)

    def route_pay_page(self, session_id: str) -> Response:
        session = self.sim.view(self.sim.find("checkout.session", session_id))
        esc = html.escape
        if session["status"] != "open":
            body = f"<p>This Checkout Session is {esc(session['status'])}.</p>"
        else:
            buttons = "".join(
                f'<button name="outcome" value="{value}">{label}</button> '
                for value, label in (("paid", "Pay"), ("async_succeeded", "Pay (async, succeeds)"),
                                     ("async_failed", "Pay (async, fails)"), ("cancel", "Cancel")))
            body = (f"<p>{session['amount_total']} {esc(session['currency'])} (smallest unit) &middot; "
                    f"client_reference_id {esc(str(session['client_reference_id']))}</p>"
                    f'<form method="post">{buttons}</form>')
        page = (f"<!doctype html><title>stripe-sim checkout</title><h1>stripe-sim checkout</h1>"
                f"<p><code>{esc(session_id)}</code></p>{body}")
        return Response(200, page.encode(), "text/html; charset=utf-8")

    def route_pay_page_submit(self, session_id: str) -> Response:
        outcome = dict(parse_qsl(self.raw_body.decode("utf-8", "replace"))).get("outcome", "paid")
        session = self.sim.find("checkout.session", session_id)
        if outcome == "cancel":
            target = session["cancel_url"] or f"/c/pay/{session_id}"
        else:
            self.sim.pay(session_id, outcome, True)
            target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
        return Response(303, b"", "text/plain", {"Location": target})


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    sim: Simulator


def make_server(config: Config) -> SimServer:
    """Bind the HTTP server (port 0 picks a free port) and attach a fresh simulator."""
    server = SimServer((config.host, config.port), Handler)
    port = server.server_address[1]
    server.sim = Simulator(config, config.public_url or f"http://{config.host}:{port}")
    return server


def sweep(sim: Simulator, stop: threading.Event) -> None:
    """Expire open sessions past expires_at even when nobody reads them."""
    while not stop.wait(SWEEP_INTERVAL_S):
        try:
            sim.expire_due()
        except Exception as exc:  # keep sweeping
            log(f"sweep failed: {exc!r}")


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    server = make_server(config)
    stop = threading.Event()
    threading.Thread(target=sweep, args=(server.sim, stop), daemon=True, name="sweep").start()
    # shutdown() blocks until serve_forever() returns, so call it from another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"stripe-sim listening on http://{config.host}:{server.server_address[1]}", flush=True)
    log(f"webhooks -> {config.webhook_url or '(none: STRIPE_WEBHOOK_URL unset, events are only recorded)'}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        log("stripe-sim stopped")


if __name__ == "__main__":
    main()
