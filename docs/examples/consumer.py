"""
A Twisted consumer of libvirt-monitor's records in RabbitMQ: binds a durable
queue to the monitor's exchange and prints each record's JSON, one per line,
acknowledging it once printed, and dropping duplicates by (monitor, seq).

    python docs/examples/consumer.py amqp://guest:guest@127.0.0.1/%2F \\
        --queue audit --bind '*.domain.lifecycle.#' [--count N]

Needs pika (pip install 'libvirt-twisted[amqp]').  It stops after --count
records, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import defer, endpoints, protocol, task


async def consume(reactor: Any, arguments: argparse.Namespace) -> None:
    parameters = pika.URLParameters(arguments.url)
    endpoint = endpoints.HostnameEndpoint(reactor, parameters.host, parameters.port)
    connection: Any = await endpoints.connectProtocol(
        endpoint, TwistedProtocolConnection(parameters)
    )
    await connection.ready
    try:
        channel = await connection.channel()
        await channel.exchange_declare(arguments.exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(arguments.queue, durable=True)
        for key in arguments.bind:
            await channel.queue_bind(arguments.queue, arguments.exchange, routing_key=key)
        await channel.basic_qos(prefetch_count=100)
        messages, _ = await channel.basic_consume(arguments.queue)
        seen: set[tuple[str, int]] = set()
        printed = 0
        while arguments.count is None or printed < arguments.count:
            _, method, _, body = await messages.get()
            record = json.loads(body)
            identity = (record.get("monitor"), record.get("seq"))
            # At least once: a record may come twice.  (A long-running
            # consumer would forget old identities, e.g. per monitor below
            # its lowest unacknowledged seq.)
            if identity not in seen:
                seen.add(identity)
                print(body.decode(), flush=True)
                printed += 1
            channel.basic_ack(method.delivery_tag)
    finally:
        closed = connection.close()
        if closed is not None:
            await closed


def main(reactor: Any) -> defer.Deferred[None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--exchange", default="libvirt")
    parser.add_argument("--queue", default="libvirt-records")
    parser.add_argument("--bind", action="append", default=None, help="binding key (#: all)")
    parser.add_argument("--count", type=int, default=None)
    arguments = parser.parse_args(sys.argv[1:])
    arguments.bind = arguments.bind or ["#"]
    return defer.Deferred.fromCoroutine(consume(reactor, arguments))


if __name__ == "__main__":
    protocol.Factory.noisy = False
    task.react(main)
