"""Prometheus metrics of the HTTP API, in a registry owned by each app instance."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from radservice import __version__


class ApiMetrics:
    """The counters the API exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "radservice_http_requests_total", "HTTP requests answered.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "radservice_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["method", "route"], registry=self.registry,
        )
        self.hl7_messages = Counter(
            "radservice_hl7_messages_total", "Inbound HL7 messages by type and ACK code.",
            ["message_type", "ack_code"], registry=self.registry,
        )
        self.outbox_deliveries = Counter(
            "radservice_outbox_deliveries_total", "Delivery attempts of signed reports by destination and outcome "
            "(acked, failed, pending = to be retried).", ["destination", "outcome"], registry=self.registry,
        )
        Info("radservice_build", "radservice version.", registry=self.registry).info({"version": __version__})

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> ApiMetrics:
    """Count every request by its route template (never the raw path: accessions are PHI-adjacent)."""
    metrics = ApiMetrics()

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    return metrics
