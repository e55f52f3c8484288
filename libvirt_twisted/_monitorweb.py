"""
The monitor's HTTP endpoint (C{--metrics}): C{/metrics} for Prometheus,
C{/healthz} (the reactor answers) and C{/readyz} (every host connected).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ._hostmonitor import HostMonitor
from ._metrics import PublisherStats, monitorRegistry

log = Logger()

Hosts = Callable[[], Iterable[HostMonitor]]


class Healthz(Resource):
    """200 whenever the reactor answers: the process is alive and not stuck."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Readyz(Resource):
    """
    200 when every host is connected, else 503; the JSON body gives each
    host's state and last error either way, so that a probe's log says why.
    """

    isLeaf = True

    def __init__(self, hosts: Hosts) -> None:
        super().__init__()
        self._hosts = hosts

    def render_GET(self, request: Request) -> bytes:
        hosts = list(self._hosts())
        ready = all(host.connected for host in hosts)
        body = {
            "ready": ready,
            "hosts": {
                host.uri: {"state": host.stats.state, "lastError": host.stats.lastError}
                for host in hosts
            },
        }
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def monitorSite(hosts: Hosts, publisher: PublisherStats | None = None) -> Site:
    """The site: metrics from prometheus_client's own Twisted resource, and health."""
    # Imported here: prometheus_client.twisted imports the global reactor,
    # which must be the one twistd chose.
    from prometheus_client.twisted import MetricsResource

    root = Resource()
    root.putChild(b"metrics", MetricsResource(monitorRegistry(hosts, publisher)))
    root.putChild(b"healthz", Healthz())
    root.putChild(b"readyz", Readyz(hosts))
    site = Site(root)
    site.noisy = False
    return site


class MetricsEndpointError(Exception):
    """The C{--metrics} endpoint is not valid or cannot listen."""


class MonitorWeb(Service):
    """
    Listens on the C{--metrics} endpoint from the moment it is made, so that
    an endpoint that cannot listen fails before the reactor runs; stops
    listening when the service stops.
    """

    def __init__(
        self, reactor: Any, description: str, hosts: Hosts, publisher: PublisherStats | None = None
    ) -> None:
        try:
            endpoint = serverFromString(reactor, description)
        except Exception as e:  # each endpoint type fails its own way
            raise MetricsEndpointError(
                f"--metrics {description!r}: {e or type(e).__name__}"
            ) from None
        self.description = description
        self.port: IListeningPort | None = None
        self._error: str | None = None
        self._starting = True
        endpoint.listen(monitorSite(hosts, publisher)).addCallbacks(self._listening, self._failed)
        self._starting = False
        if self._error is not None:
            raise MetricsEndpointError(f"--metrics {description!r}: {self._error}")

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info("metrics and health on {address}", address=port.getHost())

    def _failed(self, failure: Failure) -> None:
        if self._starting:
            self._error = failure.getErrorMessage()
        else:
            log.failure(
                "--metrics {description}: cannot listen", failure, description=self.description
            )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return port.stopListening()
