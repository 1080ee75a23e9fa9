"""Prometheus metrics of the HTTP API, in a registry owned by each app instance."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.orm import Session

from radservice import __version__
from radservice.jobs import service as jobs
from radservice.outbox import service as outbox


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
        # read from the database at each scrape: what an admin alerts on (docs/operations.md)
        self.outbox_open = Gauge(
            "radservice_outbox_open", "Deliveries not yet acknowledged, by destination and status (pending, sent, "
            "failed = needs a person).", ["destination", "status"], registry=self.registry)
        self.outbox_oldest = Gauge(
            "radservice_outbox_oldest_waiting_seconds", "Age of the oldest pending or sent delivery, by destination.",
            ["destination"], registry=self.registry)
        self.jobs_open = Gauge(
            "radservice_jobs_open", "Jobs queued or running, by kind and status.", ["kind", "status"],
            registry=self.registry)
        self.jobs_oldest = Gauge(
            "radservice_jobs_oldest_queued_seconds", "Age of the oldest queued job (0: none waits).",
            registry=self.registry)
        self.backlog_read = Gauge(
            "radservice_backlog_read_timestamp_seconds", "When the backlog gauges were last read from the database "
            "(Unix time): older than a scrape or two means they are stale.", registry=self.registry)
        self._lock = threading.Lock()

    def refresh(self, session: Session) -> None:
        """Set the backlog gauges from the database (every label seen before is reset first)."""
        deliveries, waiting = outbox.backlog(session=session)
        queued, oldest_job = jobs.backlog(session=session)
        with self._lock:  # all read first, then set together: two scrapes never mix their values
            self.outbox_open.clear()
            for destination in ("ris", "pacs"):
                for status in outbox.OPEN_STATUSES:
                    self.outbox_open.labels(destination, status).set(deliveries.get((destination, status), 0))
                self.outbox_oldest.labels(destination).set(waiting.get(destination, 0.0))
            self.jobs_open.clear()
            for (kind, status), count in queued.items():
                self.jobs_open.labels(kind, status).set(count)
            self.jobs_oldest.set(oldest_job)
            self.backlog_read.set(time.time())

    def render(self) -> Response:
        with self._lock:
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
