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
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall

from ._amqpsettings import DEFAULT_EXCHANGE, AMQPSettings, amqpSettings, pikaOrExit, routingKey
from ._brokerlink import BrokerLink
from ._eventrecords import eventRecord
from ._reactor import Scheduler, ThreadsReactor, resolve
from ._spool import Spool
from .events import Event

#: Routing keys kept for records not yet sent; the others are read from the body.
_KEYS_KEPT = 100_000
#: The spool's size limit when none is given: 256 MiB.
SPOOL_SIZE = 256 << 20
#: Seconds a record may wait for others to be sent with it.
LINGER = 0.002


class AMQPPublisher(Service):
    """
    A Twisted service that publishes records (the flat mappings the monitor
    writes) or decoded events to a durable topic exchange on RabbitMQ,
    declared if missing, each as a persistent JSON message routed by
    C{<host>.<family>.<kind>.<event>}, at least once: a record waits in an
    on-disk spool until the broker confirms it, across reconnections and
    restarts.

    @param broker: the broker's URL, C{amqp://user:password@host:port/vhost}
        (C{amqps://} for TLS), checked at once; or settings made already.
    @param spool: the spool's directory (made if missing; one publisher at a
        time), or an open L{Spool}.  It stamps each record with C{seq} and
        C{monitor}, kept across restarts, so that a consumer can drop
        duplicates.
    @param exchange: with a URL, the exchange to publish to.
    @param password: with a URL, the password, in place of the URL's.
    @param spoolSize: with a directory, the spool's size limit in bytes;
        when it is full, the oldest records are dropped and counted.
    @param window: how many records may be unconfirmed at once.
    @param retryPolicy: seconds before the Nth reconnection attempt.
    @param clock: schedules retries, timeouts and lingering.
    @param linger: seconds a record may wait to be sent with the next ones.
    @raise AMQPSettingsError: the URL or the exchange cannot work, or pika
        is not installed.
    @raise SpoolError: the spool cannot be opened.
    @raise ValueError: C{window} or C{spoolSize} is too small.
    @raise TypeError: C{exchange} or C{password} with settings.
    """

    def __init__(
        self,
        broker: str | AMQPSettings,
        spool: str | Spool,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        password: str | None = None,
        spoolSize: int = SPOOL_SIZE,
        reactor: ThreadsReactor | None = None,
        window: int = 1000,
        retryPolicy: Callable[[int], float] | None = None,
        clock: Scheduler | None = None,
        linger: float = LINGER,
    ) -> None:
        if isinstance(broker, AMQPSettings):
            if password is not None or exchange != DEFAULT_EXCHANGE:
                raise TypeError("exchange and password go with a URL: settings carry their own")
            settings = broker
        else:
            settings = amqpSettings(broker, exchange)
            if password is not None:
                settings = AMQPSettings(settings.url, settings.exchange, password)
        if window < 1:
            raise ValueError(f"window must be at least 1 record, not {window!r}")
        self.settings = settings
        self._reactor: ThreadsReactor = resolve(reactor)
        self._clock: Scheduler = clock or self._reactor
        # The link first: it checks pika and the URL before the spool is locked.
        self._link = BrokerLink(settings, self._reactor, self._opened, retryPolicy, self._clock)
        self.spool = spool if isinstance(spool, Spool) else Spool(spool, spoolSize)
        self.window = window
        self.linger = linger
        self.published = 0
        self.confirmed = 0
        #: Records the spool could not take (a full disk...): not published.
        self.unspooled = 0
        pika = pikaOrExit()
        self._properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        self._keys: dict[int, str] = {}
        #: The host word of local URIs' routing keys, asked of the system once.
        self._localHost = socket.gethostname()
        self._inFlight = 0
        self._lingering: IDelayedCall | None = None
        self._waiters: list[tuple[int, Deferred[None]]] = []
        self._stopping = False

    def __repr__(self) -> str:
        return f"<AMQPPublisher {self.settings.maskedURL} exchange={self.settings.exchange}>"

    # Records in.

    def publish(self, record: Mapping[str, Any] | Event, uri: str | None = None) -> bytes:
        """
        Spool C{record} (stamped with C{seq} and C{monitor}) and send it when
        it can; returns its JSON body as published.  An L{Event} becomes the
        monitor's record of it, for C{uri}, the connection it came from.

        @raise SpoolError: the spool cannot take it (closed, or a full disk).
        """
        if isinstance(record, Event):
            if uri is None:
                raise TypeError("publish(event, uri): an event needs the URI it came from")
            record = eventRecord(uri, record)
        elif uri is not None:
            raise TypeError("publish(record, uri): a record carries its own uri")
        item = self.spool.add(record)
        keys = self._keys
        keys[item.seq] = routingKey(record, self._localHost)
        if len(keys) > _KEYS_KEPT:
            # The oldest were dropped from a full spool, or will be parsed again.
            del keys[next(iter(keys))]
        self._soon()
        if self._waiters:
            self._wake()  # a full spool may have dropped what they wait for
        return item.body

    def whenConfirmed(self) -> Deferred[None]:
        """
        Fires once the broker has confirmed every record published so far
        (or a full spool dropped it): at once if nothing waits.  Fails with
        C{CancelledError} if the publisher stops first; cancelling it
        leaves nothing behind.
        """
        target = self.spool.last
        if self.spool.confirmed >= target:
            return succeed(None)
        if self._stopping:
            return fail(CancelledError("the publisher stopped"))

        def cancel(waiting: Deferred[None]) -> None:
            self._waiters = [(t, d) for t, d in self._waiters if d is not waiting]

        waiting: Deferred[None] = Deferred(cancel)
        self._waiters.append((target, waiting))
        return waiting

    def _wake(self) -> None:
        confirmed = self.spool.confirmed
        due = [d for target, d in self._waiters if target <= confirmed or d.called]
        if due:
            self._waiters = [(t, d) for t, d in self._waiters if d not in due]
            for d in due:
                if not d.called:
                    d.callback(None)

    def _opened(self, channel: Any) -> None:
        """A new channel: everything unconfirmed goes again, in order."""
        self._inFlight = 0
        self.spool.rewind()
        self._pump()

    # Records out.

    def _soon(self) -> None:
        """
        Send what waits after C{linger} seconds: the records of a burst go
        in one write to the broker, where one each would cost a system call
        and a TCP segment apiece.
        """
        if self._lingering is None and self._link.channel is not None and not self._stopping:
            self._lingering = self._clock.callLater(self.linger, self._pump)

    def _cancelLingering(self) -> None:
        if self._lingering is not None:
            if self._lingering.active():
                self._lingering.cancel()
            self._lingering = None

    def _pump(self) -> None:
        self._cancelLingering()
        channel = self._link.channel
        if channel is None or self._stopping or self._inFlight >= self.window:
            return
        properties = self._properties
        for item in self.spool.unsent(self.window - self._inFlight):
            key = self._keys.pop(item.seq, None)
            key = key or routingKey(json.loads(item.body), self._localHost)
            self._inFlight += 1
            self.published += 1
            d = channel.basic_publish(self.settings.exchange, key, item.body, properties)
            d.addCallbacks(
                self._confirmed, self._link.failed, (item.seq, channel), None, (channel,)
            )

    def _confirmed(self, result: object, seq: int, channel: Any) -> None:
        self.spool.confirm(seq)
        self.confirmed += 1
        if self._waiters:
            self._wake()
        if channel is self._link.channel:
            self._inFlight -= 1
            self._soon()

    # Service.

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        self._link.start()

    def stopService(self) -> Deferred[None]:
        """
        Wait a little for the records under way to be confirmed, then close
        the connection; whatever is unconfirmed stays in the spool for the
        next start.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        self._pump()  # what lingers goes now
        self._stopping = True
        done: Deferred[Any] = self._drained(2.0)
        done.addCallback(self._giveUpWaiting)
        done.addCallback(lambda _: self._cancelLingering())
        done.addCallback(lambda _: self._link.stop())
        done.addBoth(lambda result: self.spool.close())
        return done

    def _giveUpWaiting(self, result: object) -> None:
        """Stopped: what L{whenConfirmed} still waits for will not come."""
        waiters, self._waiters = self._waiters, []
        for _, waiting in waiters:
            if not waiting.called:
                waiting.errback(CancelledError("the publisher stopped"))

    def _drained(self, patience: float) -> Deferred[None]:
        if self._link.channel is None or self._inFlight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        deadline = self._reactor.seconds() + patience

        def check() -> None:
            link = self._link
            if link.channel is None or self._inFlight == 0 or self._reactor.seconds() > deadline:
                d.callback(None)
            else:
                self._reactor.callLater(0.01, check)

        check()
        return d
