"""
L{AMQPPublisher}: records to a RabbitMQ topic exchange, at least once.

Every record goes into a L{Spool} on disk first and leaves it only once the
broker has confirmed it (publisher confirms).  At most C{window} records are
unconfirmed at a time, so a slow, blocked or dead broker fills the spool,
never the reactor's memory; a lost connection is made again with backoff
and everything unconfirmed is sent again, in order (a consumer drops the
duplicates by C{monitor} and C{seq}).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._amqpsettings import AMQPSettings, pikaOrExit, routingKey
from ._reactor import Scheduler, ThreadsReactor, resolve
from ._spool import Spool, SpoolItem

log = Logger()

#: Routing keys kept for records not yet sent; the others are read from the body.
_KEYS_KEPT = 100_000
#: Seconds between heartbeats unless the URL says: a hung broker is seen after
#: about one and a half to two and a half of them.
HEARTBEAT = 10
#: Seconds a connection attempt (TCP, AMQP handshake, channel) may take.
ATTEMPT_TIMEOUT = 30.0
#: Seconds the broker has to answer a close before the connection is cut.
CLOSE_TIMEOUT = 2.0

# pika logs through the standard library; what matters it tells us through
# its Deferreds, and the publisher logs that once, in Twisted's log.
logging.getLogger("pika").addHandler(logging.NullHandler())
logging.getLogger("pika").propagate = False


class AMQPPublisher(Service):
    """
    Publishes records (mappings, as the monitor writes them) to
    C{settings.exchange}, a durable topic exchange declared if missing,
    each as a persistent JSON message routed by L{routingKey}.

    @param spool: where records wait until confirmed; it stamps each with
        C{seq} and C{monitor}.
    @param window: how many records may be unconfirmed at once.
    """

    def __init__(
        self,
        settings: AMQPSettings,
        spool: Spool,
        reactor: ThreadsReactor | None = None,
        window: int = 1000,
        retryPolicy: Callable[[int], float] | None = None,
        clock: Scheduler | None = None,
    ) -> None:
        pikaOrExit()
        # Imported here: the adapter imports the global reactor.
        import pika.adapters.twisted_connection

        self.settings = settings
        self.spool = spool
        self.window = window
        self.published = 0
        self.confirmed = 0
        #: Records the spool could not take (a full disk...): not published.
        self.unspooled = 0
        self._pika: Any = pika
        self._properties = pika.BasicProperties(  # type: ignore[no-untyped-call]
            content_type="application/json", delivery_mode=2
        )
        self._reactor: ThreadsReactor = resolve(reactor)
        self._parameters = settings.parameters()
        if "heartbeat=" not in settings.url:
            self._parameters.heartbeat = HEARTBEAT
        self._keys: dict[int, str] = {}
        self._connection: Any = None
        self._channel: Any = None
        self._inFlight = 0
        self._lastError: str | None = None
        self._stopping = False
        self._endpoint = self._makeEndpoint()
        self._retryPolicy = retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self._clock: Scheduler = clock or self._reactor
        self._failures = 0
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<AMQPPublisher {self.settings.maskedURL} exchange={self.settings.exchange}>"

    # Records in.

    def publish(self, record: Mapping[str, Any]) -> SpoolItem:
        """Spool C{record} (stamped with C{seq} and C{monitor}) and send it when it can."""
        item = self.spool.add(record)
        keys = self._keys
        keys[item.seq] = routingKey(record)
        if len(keys) > _KEYS_KEPT:
            # The oldest were dropped from a full spool, or will be parsed again.
            del keys[next(iter(keys))]
        self._pump()
        return item

    # The connection.

    def _makeEndpoint(self) -> Any:
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
        if self._lastError is not None:
            log.info("AMQP: publishing to {url} again", url=self.settings.maskedURL)
        else:
            log.info("AMQP: publishing to {url}", url=self.settings.maskedURL)
        self._lastError = None
        self._failures = 0
        self._connection, self._channel = connection, channel
        self._inFlight = 0
        self.spool.rewind()
        self._pump()

    def _refused(self, failure: Failure, connection: Any) -> None:
        if connection.transport is not None:
            connection.transport.loseConnection()
        if not self._stopping:
            self._report(failure, "cannot publish to")
            self._reactor.callLater(0, self._again)

    def _lost(self, connection: Any, reason: Failure) -> None:
        if connection is self._connection:
            # No channel: the publisher closed it itself, and said why.
            unexpected = self._channel is not None
            self._connection = self._channel = None
            if not self._stopping and not unexpected:
                self._again()
            elif not self._stopping:
                # Why pika closed it (a heartbeat timeout...), if it says.
                why = getattr(connection, "closedByBroker", None)
                if why is not None:
                    reason = Failure(why)  # type: ignore[no-untyped-call]
                self._report(reason, "lost")
                self._again()

    def _report(self, failure: Failure, what: str) -> None:
        """Log a broker error once, not at every retry."""
        error = _describe(failure)
        if error != self._lastError:
            log.error(
                "AMQP: {what} {url}: {error}; retrying, records wait in the spool",
                what=what,
                url=self.settings.maskedURL,
                error=error,
            )
        else:
            log.debug(
                "AMQP: {what} {url} again: {error}",
                what=what,
                url=self.settings.maskedURL,
                error=error,
            )
        self._lastError = error

    # Records out.

    def _pump(self) -> None:
        channel = self._channel
        if channel is None or self._stopping or self._inFlight >= self.window:
            return
        properties = self._properties
        for item in self.spool.unsent(self.window - self._inFlight):
            key = self._keys.pop(item.seq, None) or routingKey(json.loads(item.body))
            self._inFlight += 1
            self.published += 1
            d = channel.basic_publish(self.settings.exchange, key, item.body, properties)
            d.addCallbacks(
                self._confirmed, self._unconfirmed, (item.seq, channel), None, (channel,)
            )

    def _confirmed(self, result: object, seq: int, channel: Any) -> None:
        self.spool.confirm(seq)
        self.confirmed += 1
        if channel is self._channel:
            self._inFlight -= 1
            self._pump()

    def _unconfirmed(self, failure: Failure, channel: Any) -> None:
        """
        A nack, a channel the broker closed (a deleted exchange...), or the
        connection went: the record stays in the spool, and the connection
        is made again, so that everything unconfirmed goes once more, in order.
        """
        connection = self._connection
        if channel is not self._channel or connection is None:
            return
        if failure.check(self._pika.exceptions.NackError):  # type: ignore[no-untyped-call]
            self._report(failure, "refused by")
        elif connection.is_open:
            self._report(failure, "channel closed by")
        else:
            return  # the connection is going: _lost reports it and reconnects
        # Closing it ends in _lost, which schedules the next attempt.
        self._channel = None
        _close(connection)

    # Service.

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        self._connect()

    def stopService(self) -> Deferred[None]:
        """
        Wait a little for the records under way to be confirmed, then close
        the connection; whatever is unconfirmed stays in the spool for the
        next start.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        done: Deferred[Any] = self._drained(2.0)
        done.addCallback(lambda _: self._disconnect())
        done.addBoth(lambda result: self.spool.close())
        return done

    def _disconnect(self) -> Deferred[None] | None:
        """Close the connection; a broker that does not answer is cut off."""
        connection, self._connection, self._channel = self._connection, None, None
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

    def _drained(self, patience: float) -> Deferred[None]:
        if self._channel is None or self._inFlight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        deadline = self._reactor.seconds() + patience

        def check() -> None:
            if self._channel is None or self._inFlight == 0 or self._reactor.seconds() > deadline:
                d.callback(None)
            else:
                self._reactor.callLater(0.01, check)

        check()
        return d


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
