"""
L{BrokerLink}: one confirming AMQP channel to a broker, kept open.

Each attempt (TCP or TLS, the AMQP handshake, a channel, the topic exchange
declared, publisher confirms on) has a time limit, since a hung broker may
accept a connection and never answer; a failed attempt or a lost connection
is tried again with backoff, and each distinct error is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._amqpsettings import AMQPSettings, pikaOrExit
from ._reactor import Scheduler, ThreadsReactor

log = Logger()

#: Seconds between heartbeats unless the URL says: a hung broker is seen after
#: about one and a half to two and a half of them.
HEARTBEAT = 10
#: Seconds a connection attempt (TCP, AMQP handshake, channel) may take.
ATTEMPT_TIMEOUT = 30.0
#: Seconds the broker has to answer a close before the connection is cut.
CLOSE_TIMEOUT = 2.0


@cache
def _quietPika() -> None:
    """
    pika logs through the standard library; what matters it tells through
    its Deferreds, and the link logs that once, in Twisted's log.  Done when
    a link is made, not at import: a program that imports this package and
    uses pika elsewhere keeps pika's logs.
    """
    pika = logging.getLogger("pika")
    pika.addHandler(logging.NullHandler())
    pika.propagate = False


class BrokerLink:
    """
    Keeps a confirming channel to C{settings}' broker and exchange, from
    L{start} to L{stop}.  C{channel} is the open one, or None; C{onOpened}
    is called with each new one.

    @raise AMQPSettingsError: pika is not installed, or the URL's options
        are not pika's.
    """

    def __init__(
        self,
        settings: AMQPSettings,
        reactor: ThreadsReactor,
        onOpened: Callable[[Any], None],
        retryPolicy: Callable[[int], float] | None = None,
        clock: Scheduler | None = None,
    ) -> None:
        self._pika: Any = pikaOrExit()
        _quietPika()
        # Imported here: the adapter imports the global reactor.
        import pika.adapters.twisted_connection  # noqa: F401

        self.settings = settings
        self.channel: Any = None
        self.lastError: str | None = None
        self._onOpened = onOpened
        self._reactor = reactor
        self._clock: Scheduler = clock or reactor
        self._retryPolicy = retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self._parameters = settings.parameters()
        if "heartbeat=" not in settings.url:
            self._parameters.heartbeat = HEARTBEAT
        self._endpoint = self._makeEndpoint()
        self._connection: Any = None
        self._stopping = False
        self._failures = 0
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None

    def start(self) -> None:
        """Connect, and keep connecting until L{stop}."""
        self._stopping = False
        self._connect()

    def stop(self) -> Deferred[None] | None:
        """
        Stop trying and close the connection; a broker that does not answer
        the close within C{CLOSE_TIMEOUT} is cut off.  The Deferred (None if
        nothing was open) fires once it is closed.
        """
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        connection, self._connection, self.channel = self._connection, None, None
        if connection is None:
            return None
        closed: Deferred[None] | None = _close(connection)
        if closed is None:
            return None

        def cutOff(failure: Failure) -> None:
            if connection.transport is not None:
                connection.transport.abortConnection()

        closed.addTimeout(CLOSE_TIMEOUT, self._clock)  # type: ignore[arg-type]
        closed.addErrback(cutOff)
        return closed

    def failed(self, failure: Failure, channel: Any) -> None:
        """
        A publish on C{channel} failed: a nack, a channel the broker closed
        (a deleted exchange...), or the connection went.  Unless the
        connection is going already (which reconnects by itself), report it
        and make the connection again.
        """
        connection = self._connection
        if channel is not self.channel or connection is None:
            return
        if failure.check(self._pika.exceptions.NackError):  # type: ignore[no-untyped-call]
            self._report(failure, "refused by")
        elif connection.is_open:
            self._report(failure, "channel closed by")
        else:
            return
        # Closing it ends in _lost, which schedules the next attempt.
        self.channel = None
        _close(connection)

    def _makeEndpoint(self) -> IStreamClientEndpoint:
        # Imported here: endpoints import TLS, which a program that never
        # publishes should not pay for at import.
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        params = self._parameters
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, params.host, params.port)
        if self.settings.tls:
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(params.host), endpoint)
        return endpoint

    def _protocol(self) -> Any:
        connection = _connectionClass()(self._parameters, custom_reactor=self._reactor)
        lost = connection.connectionLost

        def connectionLost(reason: Failure) -> None:
            lost(reason)
            self._lost(connection, reason)

        connection.connectionLost = connectionLost
        return connection

    def _connect(self) -> None:
        """One attempt: connect, then a confirming channel and the exchange declared."""
        self._retry = None
        connection = self._protocol()

        async def attempt() -> None:
            from twisted.internet.endpoints import connectProtocol

            await connectProtocol(self._endpoint, connection)  # type: ignore[no-untyped-call]
            await connection.ready
            channel = await connection.channel()
            await channel.exchange_declare(
                exchange=self.settings.exchange, exchange_type="topic", durable=True
            )
            await channel.confirm_delivery()
            if self._stopping:
                connection.close()
                return
            self._opened(connection, channel)

        self._attempt = Deferred.fromCoroutine(attempt())
        # A broker that accepts the connection but never answers (hung, or
        # behind a black hole) would hold the attempt for ever.
        self._attempt.addTimeout(ATTEMPT_TIMEOUT, self._clock)  # type: ignore[arg-type]
        self._attempt.addErrback(self._refused, connection)
        self._attempt.addBoth(self._attempted)

    def _attempted(self, result: object) -> None:
        self._attempt = None

    def _again(self) -> None:
        """The next attempt, after the retry policy's delay."""
        if self._stopping or self._retry is not None or self._attempt is not None:
            return
        self._failures += 1
        delay = self._retryPolicy(self._failures)
        self._retry = self._clock.callLater(delay, self._connect)

    def _opened(self, connection: Any, channel: Any) -> None:
        again = " again" if self.lastError is not None else ""
        log.info("AMQP: publishing to {url}{again}", url=self.settings.maskedURL, again=again)
        self.lastError = None
        self._failures = 0
        self._connection, self.channel = connection, channel
        self._onOpened(channel)

    def _refused(self, failure: Failure, connection: Any) -> None:
        if connection.transport is not None:
            connection.transport.loseConnection()
        if not self._stopping:
            self._report(failure, "cannot publish to")
            self._reactor.callLater(0, self._again)

    def _lost(self, connection: Any, reason: Failure) -> None:
        if connection is not self._connection:
            return
        # No channel: the link closed it itself, and said why.
        unexpected = self.channel is not None
        self._connection = self.channel = None
        if self._stopping:
            return
        if unexpected:
            # Why pika closed it (a heartbeat timeout...), if it says.
            why = getattr(connection, "closedByBroker", None)
            if why is not None:
                reason = Failure(why)  # type: ignore[no-untyped-call]
            self._report(reason, "lost")
        self._again()

    def _report(self, failure: Failure, what: str) -> None:
        """Log a broker error once, not at every retry."""
        error = _describe(failure)
        url = self.settings.maskedURL
        if error != self.lastError:
            log.error(
                "AMQP: {what} {url}: {error}; retrying, records wait in the spool",
                what=what,
                url=url,
                error=error,
            )
        else:
            log.debug("AMQP: {what} {url} again: {error}", what=what, url=url, error=error)
        self.lastError = error


def _close(connection: Any) -> Deferred[None] | None:
    """Close an AMQP connection, whatever state it is in; its C{closed} Deferred."""
    try:
        closed: Deferred[None] | None = connection.close()
    except Exception:  # pika refuses to close what is already closing
        closed = connection.closed
    return closed


def _describe(failure: Failure) -> str:
    """A broker error in one line."""
    value = failure.value
    text = str(value) or type(value).__name__
    reply = getattr(value, "reply_text", None)
    if reply:
        text = f"{reply} ({getattr(value, 'reply_code', '')})"
    return f"{type(value).__name__}: {text}".replace("\n", " ")


@cache
def _connectionClass() -> type:
    """
    pika's Twisted protocol, failing C{ready} with the broker's own error
    (pika's says only how many attempts were made).
    """
    from pika.adapters.twisted_connection import TwistedProtocolConnection

    class Connection(TwistedProtocolConnection):
        closedByBroker: Exception | None = None

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            # The broker says why it closes (ACCESS_REFUSED...), or pika why it
            # closes (a missed heartbeat), before the connection goes; pika's
            # adapter then replaces that with ConnectionDone.
            pending = getattr(self._impl, "_error", None)
            if isinstance(pending, Exception) and reason.check(ConnectionDone):  # type: ignore[no-untyped-call]
                self.closedByBroker = pending
            super().connectionLost(reason)

        def _on_connection_failed(self, connection: Any, error: Any = None) -> None:
            d, self.ready = self.ready, None
            if d is not None:
                if self.closedByBroker is not None and isinstance(error, ConnectionDone):
                    error = self.closedByBroker
                d.errback(error if isinstance(error, Exception) else Exception(str(error)))

    return Connection
