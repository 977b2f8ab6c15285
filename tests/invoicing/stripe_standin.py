"""A local stand-in for the part of Stripe's API that Accrual calls, on 127.0.0.1, for the real `stripe` client.

- POST /v1/payment_intents (confirm=true, off_session=true); the payment method token chooses what happens:
  `pm_card_visa` succeeds, `pm_card_chargeDeclined` is a 402 card_error decline, `pm_card_authenticationRequired`
  needs the customer's action, `pm_network_error` is processed but the connection drops before the answer,
  `pm_card_refundFail` succeeds (its refunds later fail, as Stripe's test card does).
- GET /v1/payment_intents/{id}; POST /v1/refunds (an amount above what is left is a 400).
- The Idempotency-Key header is honoured as Stripe does: the same key and parameters replay the first answer,
  the same key with other parameters is a 400 idempotency_error. `calls` records every request.

`signed_event` builds a webhook delivery with a `Stripe-Signature` header like Stripe's.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import stripe

SECRET_KEY = "sk_test_standin"
WEBHOOK_SECRET = "whsec_standin_secret"
DROP = object()  # an answer that is never sent: the connection is closed instead


@dataclass
class Call:
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, Any]


@dataclass
class StripeStandIn:
    secret_key: str = SECRET_KEY
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _answers: dict[tuple[str, str], tuple[dict[str, Any], int, dict[str, Any]]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests look at -------------------------------------------------------------------------------

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path == path]

    def intent_event_object(self, intent_id: str, **changes: Any) -> dict[str, Any]:
        """The PaymentIntent as a webhook would carry it, after `changes` (e.g. the customer authenticated)."""
        with self._lock:
            intent = self.intents[intent_id]
            intent.update(changes)
            return json.loads(json.dumps(intent))

    def refund_event_object(self, refund_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            refund = self.refunds[refund_id]
            refund.update(changes)
            return json.loads(json.dumps(refund))

    # --- the API --------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Any, body: str) -> tuple[int, dict[str, Any]] | object:
        params = _nested(parse_qsl(body, keep_blank_values=True))
        key = headers.get("Idempotency-Key")
        with self._lock:
            self.calls.append(Call(method, path, key, params))
            if headers.get("Authorization") != f"Bearer {self.secret_key}":
                return 401, _error("invalid_request_error", "Invalid API Key provided.")
            if method == "POST" and key:
                stored = self._answers.get((path, key))
                if stored is not None:
                    first_params, status, answer = stored
                    if first_params != params:
                        return 400, _error("idempotency_error", "Keys for idempotent requests can only be used "
                                           "with the same parameters they were first used with.")
                    return status, answer
            outcome = self._route(method, path, params)
            status, answer = outcome[0], outcome[1]
            if method == "POST" and key:
                self._answers[(path, key)] = (params, status, answer)
            if len(outcome) == 3 and outcome[2] is DROP:
                return DROP
            return status, answer

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple:
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_intent(params)
        if method == "GET" and path.startswith("/v1/payment_intents/"):
            intent = self.intents.get(path.rsplit("/", 1)[1])
            if intent is None:
                return 404, _error("invalid_request_error", "No such payment_intent.", code="resource_missing")
            return 200, intent
        if method == "POST" and path == "/v1/refunds":
            return self._create_refund(params)
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _create_intent(self, params: dict[str, Any]) -> tuple:
        if params.get("confirm") != "true" or params.get("off_session") != "true":
            return 400, _error("invalid_request_error", "The stand-in only confirms off-session intents.")
        try:
            amount = int(params["amount"])
        except (KeyError, ValueError):
            return 400, _error("invalid_request_error", "Missing required param: amount.", code="parameter_missing")
        number = next(self._ids)
        method = params.get("payment_method", "")
        intent: dict[str, Any] = {
            "id": f"pi_standin{number:06d}", "object": "payment_intent", "amount": amount, "amount_received": 0,
            "currency": params.get("currency"), "customer": params.get("customer"), "payment_method": method,
            "description": params.get("description"), "metadata": params.get("metadata", {}),
            "created": int(time.time()), "status": "succeeded", "last_payment_error": None, "next_action": None,
            "latest_charge": None, "livemode": False,
        }
        self.intents[intent["id"]] = intent
        if method in ("pm_card_visa", "pm_card_refundFail", "pm_network_error"):
            intent.update(amount_received=amount, latest_charge=f"ch_standin{number:06d}")
            return (200, intent, DROP) if method == "pm_network_error" else (200, intent)
        if method == "pm_card_chargeDeclined":
            error = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                     "message": "Your card was declined.", "charge": f"ch_standin{number:06d}"}
            intent.update(status="requires_payment_method", last_payment_error=error)
            return 402, {"error": {**error, "payment_intent": intent}}
        if method == "pm_card_authenticationRequired":
            intent.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
            return 200, intent
        del self.intents[intent["id"]]
        return 400, _error("invalid_request_error", f"No such PaymentMethod: '{method}'", code="resource_missing")

    def _create_refund(self, params: dict[str, Any]) -> tuple:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            return 400, _error("invalid_request_error", "No succeeded payment_intent to refund.",
                               code="resource_missing")
        amount = int(params.get("amount") or intent["amount_received"])
        refunded = sum(r["amount"] for r in self.refunds.values()
                       if r["payment_intent"] == intent["id"] and r["status"] != "failed")
        if amount > intent["amount_received"] - refunded:
            return 400, _error("invalid_request_error", "Refund amount is greater than the unrefunded amount.",
                               code="charge_already_refunded")
        number = next(self._ids)
        refund = {
            "id": f"re_standin{number:06d}", "object": "refund", "amount": amount, "currency": intent["currency"],
            "payment_intent": intent["id"], "charge": intent["latest_charge"], "status": "succeeded",
            "metadata": params.get("metadata", {}), "created": int(time.time()), "failure_reason": None,
        }
        self.refunds[refund["id"]] = refund
        return 200, refund


def _error(kind: str, message: str, *, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **({"code": code} if code else {})}}


def _nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[key]=value`) back into a dict, one level deep as Accrual sends it."""
    result: dict[str, Any] = {}
    for name, value in pairs:
        if "[" in name and name.endswith("]"):
            outer, inner = name[:-1].split("[", 1)
            result.setdefault(outer, {})[inner] = value
        else:
            result[name] = value
    return result


def _handler(standin: StripeStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            path, _, query = self.path.partition("?")
            outcome = standin.handle(self.command, path, self.headers, body or query)
            if outcome is DROP:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, answer = outcome  # type: ignore[misc]
            content = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Request-Id", f"req_standin{len(standin.calls)}")
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running_standin() -> Iterator[StripeStandIn]:
    standin = StripeStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(standin))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()


def configure(settings: Any, standin: StripeStandIn) -> None:
    """Point Accrual's Stripe settings (pytest-django's `settings` fixture) at the stand-in."""
    settings.STRIPE_SECRET_KEY = standin.secret_key
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = standin.url
    settings.STRIPE_TIMEOUT = 5.0


_event_ids = itertools.count(1)


def signed_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    event_id: str | None = None,
    secret: str = WEBHOOK_SECRET,
    signed_at: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery as Stripe sends it: the event's JSON body and its `Stripe-Signature` header."""
    event = {
        "id": event_id or f"evt_standin{next(_event_ids):06d}", "object": "event", "api_version": "2025-01-27",
        "created": created if created is not None else int(time.time()), "type": event_type, "livemode": False,
        "data": {"object": obj}, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
    }
    payload = json.dumps(event)
    signature = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=signed_at)
    return payload.encode(), {"Stripe-Signature": signature}
