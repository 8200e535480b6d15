"""Black-box tests of the Stripe simulator, driven through the official `stripe` library.

Run: python -m pytest -q infra/stripe-sim   (needs `pip install pytest stripe`)
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import stripe

SIM = Path(__file__).parent / "sim.py"
API_KEY = "sk_test_sim"
SECRET = "whsec_picture_local_stripe_simulator"  # the simulator's default
EXTRA_SECRET = "whsec_rotated_secret_for_tests"


# --------------------------------------------------------------------------- fixtures


class Receiver:
    """Webhook endpoint recording every delivery; `fail_next` answers 500, `delay` slows the answer."""

    def __init__(self):
        self.cond = threading.Condition()
        self.deliveries: list[dict[str, Any]] = []  # {"headers", "body", "at", "status"}
        self.fail_next = 0
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.cond:
                    status = 500 if receiver.fail_next > 0 else 200
                    receiver.fail_next = max(receiver.fail_next - 1, 0)
                    delay = receiver.delay
                    receiver.deliveries.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                                "body": body, "at": time.monotonic(), "status": status})
                    receiver.cond.notify_all()
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/stripe"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.cond:
            found = []
            for delivery in self.deliveries:
                event = json.loads(delivery["body"])
                if predicate(event):
                    found.append({**delivery, "event": event})
            return found

    def wait(self, predicate: Callable[[dict[str, Any]], bool], count: int = 1,
             timeout: float = 5.0) -> list[dict[str, Any]]:
        """Deliveries whose event matches, once there are `count`; each one's signature is verified."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.matching(predicate)) < count and time.monotonic() < deadline:
                self.cond.wait(0.05)
        found = self.matching(predicate)
        assert len(found) >= count, f"expected {count} deliveries, got {[d['event']['type'] for d in found]}"
        for delivery in found:
            verify(delivery)
        return found

    def for_object(self, object_id: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        return self.wait(lambda event: event["data"]["object"]["id"] == object_id, count, timeout)


def verify(delivery: dict[str, Any]) -> stripe.Event:
    """Check the delivery as a webhook handler would: signature (both secrets) and headers."""
    headers, body = delivery["headers"], delivery["body"]
    event = stripe.Webhook.construct_event(body, headers["stripe-signature"], SECRET)
    stripe.Webhook.construct_event(body, headers["stripe-signature"], EXTRA_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["stripe-signature"], "whsec_wrong")
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["user-agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    return event


@pytest.fixture(scope="module")
def receiver():
    instance = Receiver()
    yield instance
    instance.server.shutdown()
    instance.server.server_close()


def start_sim(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    log_file = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(SIM), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=log_file, text=True,
        env={key: value for key, value in os.environ.items() if not key.startswith(("STRIPE_", "SIM_"))} | env,
    )
    log_file.close()
    line = process.stdout.readline().strip()
    assert line.startswith("stripe-sim listening on http://127.0.0.1:"), line
    return process, line.rsplit(" ", 1)[1]


@pytest.fixture(scope="module")
def sim_url(receiver, tmp_path_factory):
    process, url = start_sim({
        "STRIPE_WEBHOOK_URL": receiver.url,
        "STRIPE_SIM_EXTRA_SECRET": EXTRA_SECRET,
        "STRIPE_SIM_RETRY_DELAYS": "0.1,0.2,0.2,0.2",
        "STRIPE_SIM_MIN_EXPIRY_S": "1",
    }, tmp_path_factory.mktemp("sim") / "stripe-sim.log")
    yield url
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0


@pytest.fixture(autouse=True)
def stripe_config(sim_url):
    stripe.api_key = API_KEY
    stripe.api_base = sim_url
    stripe.max_network_retries = 0
    yield


# --------------------------------------------------------------------------- helpers


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         form: str | None = None) -> tuple[int, Any, Any]:
    """Raw HTTP call: (status, decoded JSON or text, headers)."""
    data, all_headers = None, dict(headers or {})
    if body is not None:
        data, all_headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data, all_headers["Content-Type"] = form.encode(), "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, head = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(raw), head
    except ValueError:
        return status, raw.decode(), head


def control(sim_url: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, payload, _ = call("POST", f"{sim_url}{path}", body if body is not None else {})
    assert status == expect, payload
    return payload


def create_session(amount: int = 1000, quantity: int = 1, **overrides: Any) -> stripe.checkout.Session:
    params = {
        "mode": "payment",
        "line_items": [{"price_data": {"currency": "eur", "unit_amount": amount,
                                       "product_data": {"name": "Picture credits"}}, "quantity": quantity}],
        "client_reference_id": "user-42",
        "metadata": {"user_id": "42", "pack": "small"},
        "success_url": "http://app.local/billing/done?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://app.local/billing/cancel",
        "expires_at": int(time.time()) + 3600,
    }
    params.update(overrides)
    return stripe.checkout.Session.create(**params)


def pay(sim_url: str, session_id: str, outcome: str = "paid", deliver: bool = True) -> dict[str, Any]:
    return control(sim_url, f"/_sim/checkout/sessions/{session_id}/pay", {"outcome": outcome, "deliver": deliver})


def sim_events(sim_url: str, **query: str) -> list[dict[str, Any]]:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    status, payload, _ = call("GET", f"{sim_url}/_sim/events{suffix}")
    assert status == 200
    return payload["data"]


# --------------------------------------------------------------------------- sessions


def test_create_and_retrieve_session(sim_url):
    before = int(time.time())
    session = create_session(amount=450, quantity=3)
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert session.url == f"{sim_url}/c/pay/{session.id}"
    assert (session.amount_total, session.amount_subtotal, session.currency) == (1350, 1350, "eur")
    assert session.client_reference_id == "user-42"
    assert session.metadata.to_dict() == {"user_id": "42", "pack": "small"}
    assert (session.mode, session.status, session.payment_status) == ("payment", "open", "unpaid")
    assert session.payment_intent is None and session.livemode is False
    assert session.success_url == "http://app.local/billing/done?session_id={CHECKOUT_SESSION_ID}"
    assert session.cancel_url == "http://app.local/billing/cancel"
    assert before <= session.created <= int(time.time())
    assert session.expires_at - session.created in range(3599, 3601)

    again = stripe.checkout.Session.retrieve(session.id)
    assert again.to_dict() == session.to_dict()

    client = stripe.StripeClient(API_KEY, base_addresses={"api": sim_url}, max_network_retries=0)
    expanded = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    item = expanded.line_items.data[0]
    assert (item.quantity, item.amount_total, item.description) == (3, 1350, "Picture credits")
    assert item.price.unit_amount == 450


def test_default_expiry_is_24_hours(sim_url):
    session = create_session(expires_at=None)
    assert session.expires_at - session.created == 24 * 3600


@pytest.mark.parametrize("overrides, param", [
    ({"mode": None}, "mode"),
    ({"mode": "subscription"}, "mode"),
    ({"line_items": None}, "line_items"),
    ({"line_items": [{"price_data": {"unit_amount": 100, "product_data": {"name": "x"}}, "quantity": 1}]},
     "line_items[0][price_data][currency]"),
    ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": 100}, "quantity": 1}]},
     "line_items[0][price_data][product_data]"),
    ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": 100, "product_data": {"name": "x"}}}]},
     "line_items[0][quantity]"),
    ({"line_items": [{"price_data": {"currency": "eur", "unit_amount": "ten", "product_data": {"name": "x"}},
                      "quantity": 1}]}, "line_items[0][price_data][unit_amount]"),
    ({"success_url": None}, "success_url"),
    ({"success_url": "not a url"}, "success_url"),
    ({"expires_at": "soon"}, "expires_at"),
    ({"expires_at": 1}, "expires_at"),  # in the past
    ({"expires_at": "+25h"}, "expires_at"),  # more than 24 h ahead
    ({"shipping_rates": ["shr_1"]}, "shipping_rates"),  # unknown to the simulator
])
def test_create_session_validation(sim_url, overrides, param):
    if overrides.get("expires_at") == "+25h":
        overrides = {"expires_at": int(time.time()) + 25 * 3600}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        create_session(**overrides)
    assert caught.value.http_status == 400
    assert caught.value.param == param


def test_raw_form_encoding_and_error_shapes(sim_url):
    form = ("mode=payment&line_items[0][price_data][currency]=EUR&line_items[0][price_data][unit_amount]=700"
            "&line_items[0][price_data][product_data][name]=Pack&line_items[0][quantity]=1"
            "&metadata[user_id]=7&client_reference_id=u7&success_url=http://a.local/ok&expand[]=line_items")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    status, body, headers = call("POST", f"{sim_url}/v1/checkout/sessions", form=form, headers=auth)
    assert status == 200, body
    assert (body["currency"], body["amount_total"], body["metadata"]) == ("eur", 700, {"user_id": "7"})
    assert body["line_items"]["object"] == "list" and headers["Request-Id"].startswith("req_")

    # HTTP Basic with the key as the user name works too.
    basic = {"Authorization": "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()}
    assert call("GET", f"{sim_url}/v1/checkout/sessions/{body['id']}", headers=basic)[0] == 200

    status, error, _ = call("GET", f"{sim_url}/v1/checkout/sessions/cs_test_missing", headers=auth)
    assert status == 404
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == "resource_missing"
    assert error["error"]["message"] == "No such checkout.session: 'cs_test_missing'"
    assert error["error"]["param"] == "id"

    status, error, _ = call("GET", f"{sim_url}/v1/checkout/sessions", headers={"Authorization": "Bearer sk_bad"})
    assert status == 401 and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("Invalid API Key provided: ")
    assert call("GET", f"{sim_url}/v1/checkout/sessions")[0] == 401

    status, error, _ = call("POST", f"{sim_url}/v1/checkout/sessions", form="line_items[0][quantity]=1",
                            headers=auth)
    assert status == 400 and error["error"]["param"] == "mode"


def test_wrong_api_key_and_unknown_ids(sim_url):
    with pytest.raises(stripe.AuthenticationError) as caught:
        stripe.checkout.Session.list(api_key="sk_test_wrong_key_123")
    assert caught.value.http_status == 401
    for retrieve in (stripe.checkout.Session.retrieve, stripe.PaymentIntent.retrieve, stripe.Charge.retrieve,
                     stripe.Refund.retrieve, stripe.Event.retrieve):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            retrieve("xx_unknown")
        assert caught.value.http_status == 404 and caught.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError):
        stripe.Refund.create(payment_intent="pi_unknown")


def test_list_pagination_and_filters(sim_url):
    control(sim_url, "/_sim/reset")
    start = int(time.time())
    ids = [create_session(amount=100 + i).id for i in range(5)]  # oldest first
    newest_first = ids[::-1]

    page = stripe.checkout.Session.list(limit=2, created={"gte": start})
    assert [s.id for s in page.data] == newest_first[:2] and page.has_more is True
    assert page.url == "/v1/checkout/sessions"
    page = stripe.checkout.Session.list(limit=2, created={"gte": start}, starting_after=page.data[-1].id)
    assert [s.id for s in page.data] == newest_first[2:4] and page.has_more is True
    page = stripe.checkout.Session.list(limit=2, created={"gte": start}, starting_after=page.data[-1].id)
    assert [s.id for s in page.data] == newest_first[4:] and page.has_more is False
    page = stripe.checkout.Session.list(limit=2, ending_before=newest_first[4])
    assert [s.id for s in page.data] == newest_first[2:4] and page.has_more is True

    everything = stripe.checkout.Session.list(limit=2, created={"gte": start})
    assert [s.id for s in everything.auto_paging_iter()] == newest_first
    assert stripe.checkout.Session.list(created={"lte": start - 1}).data == []
    assert len(stripe.checkout.Session.list().data) == 5  # default limit 10

    stripe.checkout.Session.expire(ids[0])
    assert [s.id for s in stripe.checkout.Session.list(status="expired").data] == [ids[0]]
    assert len(stripe.checkout.Session.list(status="open").data) == 4
    for bad in ({"limit": 0}, {"limit": 101}, {"status": "paid"}, {"starting_after": "cs_test_nope"}):
        with pytest.raises(stripe.InvalidRequestError):
            stripe.checkout.Session.list(**bad)


def test_idempotency_key_replay(sim_url):
    key = f"create-{time.time_ns()}"
    first = create_session(amount=800, idempotency_key=key)
    again = create_session(amount=800, idempotency_key=key)
    assert again.id == first.id and again.to_dict() == first.to_dict()
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError) as caught:
        create_session(amount=900, idempotency_key=key)
    assert caught.value.http_status == 400
    # A request that failed validation is not saved: the key can be used again.
    other = f"invalid-{time.time_ns()}"
    with pytest.raises(stripe.InvalidRequestError):
        create_session(amount="x", idempotency_key=other)
    assert create_session(amount=100, idempotency_key=other).amount_total == 100


# --------------------------------------------------------------------------- payments and webhooks


def test_pay_sends_completed_event(sim_url, receiver):
    session = create_session(amount=1500)
    result = pay(sim_url, session.id)
    assert set(result) == {"session", "payment_intent", "charge", "events"}
    paid = result["session"]
    assert (paid["status"], paid["payment_status"]) == ("complete", "paid")
    assert paid["payment_intent"].startswith("pi_") and paid["url"] is None
    assert len(result["events"]) == 1 and result["events"][0].startswith("evt_")

    [delivery] = receiver.for_object(session.id)
    event = delivery["event"]
    assert event["id"] == result["events"][0] and event["type"] == "checkout.session.completed"
    assert event["object"] == "event" and event["api_version"] == "2024-06-20" and event["livemode"] is False
    assert event["pending_webhooks"] == 1 and event["request"] == {"id": None, "idempotency_key": None}
    obj = event["data"]["object"]
    assert (obj["id"], obj["status"], obj["payment_status"], obj["amount_total"]) == \
        (session.id, "complete", "paid", 1500)
    assert obj["client_reference_id"] == "user-42" and obj["metadata"] == {"user_id": "42", "pack": "small"}
    assert obj["success_url"] == session.success_url
    signature = delivery["headers"]["stripe-signature"]
    assert signature.startswith("t=") and signature.count("v1=") == 2  # main and rotated secret

    intent = stripe.PaymentIntent.retrieve(paid["payment_intent"])
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 1500, "eur")
    charge = stripe.Charge.retrieve(intent.latest_charge)
    assert charge.id.startswith("ch_") and (charge.status, charge.amount, charge.paid) == ("succeeded", 1500, True)
    assert charge.payment_intent == intent.id and charge.amount_refunded == 0

    retrieved = stripe.checkout.Session.retrieve(session.id)
    assert (retrieved.status, retrieved.payment_status, retrieved.payment_intent) == \
        ("complete", "paid", intent.id)
    fetched = stripe.Event.retrieve(event["id"])
    assert fetched.type == "checkout.session.completed" and fetched.pending_webhooks == 0
    assert [e.id for e in stripe.Event.list(type="checkout.session.completed", limit=100).data].count(event["id"]) == 1

    status, error, _ = call("POST", f"{sim_url}/_sim/checkout/sessions/{session.id}/pay", {"outcome": "paid"})
    assert status == 400 and error["error"]["type"] == "invalid_request_error"


def test_async_payment_succeeded(sim_url, receiver):
    session = create_session()
    result = pay(sim_url, session.id, "async_succeeded")
    deliveries = receiver.for_object(session.id, count=2)
    assert [d["event"]["type"] for d in deliveries] == \
        ["checkout.session.completed", "checkout.session.async_payment_succeeded"]
    assert [d["event"]["id"] for d in deliveries] == result["events"]
    completed, succeeded = (d["event"]["data"]["object"] for d in deliveries)
    assert (completed["status"], completed["payment_status"]) == ("complete", "unpaid")
    assert (succeeded["status"], succeeded["payment_status"]) == ("complete", "paid")
    assert completed["payment_intent"] == succeeded["payment_intent"] == result["session"]["payment_intent"]
    assert stripe.PaymentIntent.retrieve(succeeded["payment_intent"]).status == "succeeded"


def test_async_payment_failed(sim_url, receiver):
    session = create_session()
    result = pay(sim_url, session.id, "async_failed")
    deliveries = receiver.for_object(session.id, count=2)
    assert [d["event"]["type"] for d in deliveries] == \
        ["checkout.session.completed", "checkout.session.async_payment_failed"]
    assert all(d["event"]["data"]["object"]["payment_status"] == "unpaid" for d in deliveries)
    assert result["charge"]["status"] == "failed"
    intent = stripe.PaymentIntent.retrieve(result["session"]["payment_intent"])
    assert intent.status == "requires_payment_method"
    with pytest.raises(stripe.InvalidRequestError):
        stripe.Refund.create(payment_intent=intent.id)


def test_lost_delivery_then_redeliver(sim_url, receiver):
    session = create_session()
    result = pay(sim_url, session.id, deliver=False)
    [event_id] = result["events"]
    time.sleep(0.5)
    assert receiver.matching(lambda event: event["id"] == event_id) == []
    [recorded] = sim_events(sim_url, object_id=session.id)
    assert recorded["id"] == event_id and recorded["type"] == "checkout.session.completed"
    assert recorded["deliveries"] == [] and recorded["pending_webhooks"] == 1

    answer = control(sim_url, f"/_sim/events/{event_id}/redeliver")
    assert answer["id"] == event_id and answer["delivery"]["status_code"] == 200
    [delivery] = receiver.wait(lambda event: event["id"] == event_id)
    assert delivery["event"]["type"] == "checkout.session.completed"
    assert stripe.Event.retrieve(event_id).pending_webhooks == 0
    [recorded] = sim_events(sim_url, object_id=session.id)
    assert [d["status_code"] for d in recorded["deliveries"]] == [200]

    control(sim_url, f"/_sim/events/{event_id}/redeliver")  # again: same id, same body, fresh signature
    first, second = receiver.wait(lambda event: event["id"] == event_id, count=2)
    assert first["body"] == second["body"]
    assert control(sim_url, "/_sim/events/evt_unknown/redeliver", expect=404)["error"]["code"] == \
        "resource_missing"


def test_retries_until_2xx(sim_url, receiver):
    session = create_session()
    with receiver.cond:
        receiver.fail_next = 2
    [event_id] = pay(sim_url, session.id)["events"]
    deliveries = receiver.wait(lambda event: event["id"] == event_id, count=3)
    assert [d["status"] for d in deliveries] == [500, 500, 200]
    time.sleep(0.3)  # no more attempts after the 2xx
    assert len(receiver.matching(lambda event: event["id"] == event_id)) == 3
    [recorded] = sim_events(sim_url, object_id=session.id)
    assert [d["status_code"] for d in recorded["deliveries"]] == [500, 500, 200]
    assert all(isinstance(d["at"], float) for d in recorded["deliveries"])
    assert recorded["pending_webhooks"] == 0


def test_delivery_does_not_block_the_call(sim_url, receiver):
    session = create_session()
    with receiver.cond:
        receiver.delay = 2.0  # the endpoint takes 2 s to answer
    try:
        started = time.monotonic()
        [event_id] = pay(sim_url, session.id)["events"]
        returned = time.monotonic()
        assert returned - started < 1.0
        [delivery] = receiver.wait(lambda event: event["id"] == event_id)
        assert delivery["at"] - returned < 0.5  # prompt (a few ms when the machine is idle)
    finally:
        with receiver.cond:
            receiver.delay = 0.0


def test_refund_partial_then_full(sim_url, receiver):
    session = create_session(amount=1000)
    intent_id = pay(sim_url, session.id)["session"]["payment_intent"]

    partial = stripe.Refund.create(payment_intent=intent_id, amount=300)
    assert partial.id.startswith("re_") and partial.object == "refund"
    assert (partial.amount, partial.status, partial.currency, partial.payment_intent) == \
        (300, "succeeded", "eur", intent_id)
    charge_id = partial.charge
    [first] = receiver.for_object(charge_id)
    assert first["event"]["type"] == "charge.refunded"
    charge = first["event"]["data"]["object"]
    assert (charge["object"], charge["amount_refunded"], charge["refunded"]) == ("charge", 300, False)
    assert [r["id"] for r in charge["refunds"]["data"]] == [partial.id]
    assert first["event"]["data"]["previous_attributes"] == {"amount_refunded": 0}
    assert first["event"]["request"]["id"].startswith("req_") and first["event"]["request"]["idempotency_key"]

    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.Refund.create(payment_intent=intent_id, amount=701)
    assert caught.value.http_status == 400 and caught.value.param == "amount"

    rest = stripe.Refund.create(payment_intent=intent_id)  # no amount: whatever remains
    assert rest.amount == 700
    _, second = receiver.for_object(charge_id, count=2)
    charge = second["event"]["data"]["object"]
    assert (charge["amount_refunded"], charge["refunded"]) == (1000, True)
    assert [r["id"] for r in charge["refunds"]["data"]] == [rest.id, partial.id]

    retrieved = stripe.Charge.retrieve(charge_id)
    assert (retrieved.amount_refunded, retrieved.refunded) == (1000, True)
    assert stripe.Refund.retrieve(partial.id).amount == 300
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.Refund.create(payment_intent=intent_id, amount=1)
    assert caught.value.code == "charge_already_refunded"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.Refund.create(amount=1)
    assert caught.value.param == "payment_intent"


def test_dispute_won(sim_url, receiver):
    session = create_session(amount=2000)
    intent_id = pay(sim_url, session.id)["session"]["payment_intent"]
    refund = stripe.Refund.create(payment_intent=intent_id, amount=500)

    created = control(sim_url, f"/_sim/payment_intents/{intent_id}/dispute")
    dispute = created["dispute"]
    assert dispute["id"].startswith("du_") and dispute["object"] == "dispute"
    assert (dispute["amount"], dispute["status"], dispute["reason"], dispute["currency"]) == \
        (1500, "needs_response", "fraudulent", "eur")
    assert (dispute["charge"], dispute["payment_intent"]) == (refund.charge, intent_id)
    [delivery] = receiver.for_object(dispute["id"])
    assert delivery["event"]["type"] == "charge.dispute.created" and delivery["event"]["id"] == created["events"][0]
    assert delivery["event"]["data"]["object"]["status"] == "needs_response"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.Refund.create(payment_intent=intent_id)
    assert caught.value.code == "charge_disputed"

    closed = control(sim_url, f"/_sim/disputes/{dispute['id']}/close", {"status": "won"})
    assert closed["dispute"]["status"] == "won" and len(closed["events"]) == 2
    deliveries = receiver.for_object(dispute["id"], count=3)
    assert [d["event"]["type"] for d in deliveries] == \
        ["charge.dispute.created", "charge.dispute.funds_reinstated", "charge.dispute.closed"]
    assert [d["event"]["id"] for d in deliveries[1:]] == closed["events"]
    assert all(d["event"]["data"]["object"]["status"] == "won" for d in deliveries[1:])
    assert stripe.Dispute.retrieve(dispute["id"]).status == "won"
    control(sim_url, f"/_sim/disputes/{dispute['id']}/close", {"status": "lost"}, expect=400)


def test_dispute_lost_and_undelivered(sim_url, receiver):
    session = create_session(amount=1200)
    intent_id = pay(sim_url, session.id)["session"]["payment_intent"]
    dispute = control(sim_url, f"/_sim/payment_intents/{intent_id}/dispute", {"deliver": False})["dispute"]
    assert dispute["amount"] == 1200
    closed = control(sim_url, f"/_sim/disputes/{dispute['id']}/close", {"status": "lost"})
    [delivery] = receiver.for_object(dispute["id"])
    assert delivery["event"]["type"] == "charge.dispute.closed" and delivery["event"]["id"] == closed["events"][0]
    assert delivery["event"]["data"]["object"]["status"] == "lost"
    recorded = sim_events(sim_url, object_id=dispute["id"])
    assert [e["type"] for e in recorded] == ["charge.dispute.closed", "charge.dispute.created"]  # newest first
    assert recorded[1]["deliveries"] == []
    assert stripe.Charge.retrieve(dispute["charge"]).disputed is True
    control(sim_url, f"/_sim/payment_intents/{intent_id}/dispute", expect=400)  # one dispute per charge
    control(sim_url, "/_sim/payment_intents/pi_unknown/dispute", expect=404)


# --------------------------------------------------------------------------- expiry


def test_expire_session(sim_url, receiver):
    session = create_session()
    expired = stripe.checkout.Session.expire(session.id)
    assert (expired.status, expired.payment_status, expired.url) == ("expired", "unpaid", None)
    [delivery] = receiver.for_object(session.id)
    assert delivery["event"]["type"] == "checkout.session.expired"
    assert delivery["event"]["data"]["object"]["status"] == "expired"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.checkout.Session.expire(session.id)
    assert caught.value.http_status == 400
    control(sim_url, f"/_sim/checkout/sessions/{session.id}/pay", {"outcome": "paid"}, expect=400)

    paid = create_session()
    pay(sim_url, paid.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe.checkout.Session.expire(paid.id)


def test_expires_at_passes(sim_url, receiver):
    session = create_session(expires_at=int(time.time()) + 2)
    assert session.status == "open"
    while time.time() < session.expires_at:
        time.sleep(0.05)
    assert stripe.checkout.Session.retrieve(session.id).status == "expired"  # on read (or already by the sweep)
    [delivery] = receiver.for_object(session.id)
    assert delivery["event"]["type"] == "checkout.session.expired"

    swept = create_session(expires_at=int(time.time()) + 1)
    [delivery] = receiver.for_object(swept.id, timeout=4)  # nobody reads it: the sweep expires it
    assert delivery["event"]["data"]["object"]["status"] == "expired"


# --------------------------------------------------------------------------- misc


def test_hosted_page_pays_and_redirects(sim_url, receiver):
    session = create_session()
    status, page, _ = call("GET", session.url)
    assert status == 200 and session.id in page and 'value="paid"' in page
    request = urllib.request.Request(session.url, data=b"outcome=paid", method="POST")
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *args: None}))
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(request, timeout=5)
    assert caught.value.code == 303
    assert caught.value.headers["Location"] == f"http://app.local/billing/done?session_id={session.id}"
    assert receiver.for_object(session.id)[0]["event"]["type"] == "checkout.session.completed"


def test_health_and_unknown_routes(sim_url):
    status, body, _ = call("GET", f"{sim_url}/health")
    assert status == 200 and body == {"ok": True}
    status, body, _ = call("GET", f"{sim_url}/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 404 and body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/customers)")


def test_without_webhook_url_events_are_only_recorded(tmp_path):
    process, url = start_sim({"STRIPE_SIM_SECRET_KEY": "sk_test_other"}, tmp_path / "sim.log")
    try:
        client = stripe.StripeClient("sk_test_other", base_addresses={"api": url}, max_network_retries=0)
        params = {
            "mode": "payment", "success_url": "http://a.local/ok",
            "line_items": [{"price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "x"}},
                            "quantity": 1}],
        }
        session = client.v1.checkout.sessions.create(params=params)
        assert session.url.startswith(f"{url}/c/pay/cs_test_")
        for too_soon in (60, 29 * 60):  # 30-minute minimum by default
            with pytest.raises(stripe.InvalidRequestError) as caught:
                client.v1.checkout.sessions.create(params={**params, "expires_at": int(time.time()) + too_soon})
            assert caught.value.param == "expires_at"
        assert client.v1.checkout.sessions.create(
            params={**params, "expires_at": int(time.time()) + 31 * 60}).status == "open"
        with pytest.raises(stripe.AuthenticationError):
            stripe.StripeClient(API_KEY, base_addresses={"api": url}).v1.checkout.sessions.list()
        [event_id] = pay(url, session.id)["events"]
        [recorded] = sim_events(url)
        assert recorded["id"] == event_id and recorded["deliveries"] == [] and recorded["pending_webhooks"] == 0
        assert control(url, f"/_sim/events/{event_id}/redeliver", expect=400)["error"]["type"] == \
            "invalid_request_error"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
