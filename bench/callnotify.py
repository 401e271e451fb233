"""Callnotify TCP and UDP delivery benchmarks. Run: ``python -m bench.callnotify``.

(a) the stream sender alone (``senders.send_stream``, what one attempt costs): TCP lines and
    UDP datagrams per second to loopback listeners, one thread and 10 threads;
(b) the whole engine: call events published to a customer with one TCP and one UDP notifier,
    then the work queue drained through the real dispatcher (``engine.on_work_batch``): delivery
    records, leases and attempts in DynamoDB, messages in SQS. Over moto, not AWS: moto
    serialises every call, so (b) measures our overhead on a laptop, not production throughput.

Each figure reports how many lines/datagrams the listener actually received.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import receive_all, show, start_embedded_aws, timed

PAYLOAD = (
    b'{"event":"CALL_END","selection":"MVNO","callid":"a1b2c3d4@10.0.0.1","from":"+4512345678",'
    b'"to":"+4587654321","direction":"in","timestamp":"2016-05-27T09:30:00Z","duration":42,'
    b'"cause":"normal","customerid":"52f4fd7734697b2800000000",'
    b'"notifyid":"52f4fd7734697b2800000001","eventid":"6657a1f0c0ffee0000000042","attempt":1}\n'
)


class TcpSink:
    """A threaded loopback TCP listener: reads each connection to EOF, counts lines, closes."""

    def __init__(self) -> None:
        self.lines = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while chunk := conn.recv(65536):
                data += chunk
        with self._lock:
            self.lines += data.count(b"\n")


class UdpSink:
    """A loopback UDP socket with a large receive buffer, counting datagrams."""

    def __init__(self) -> None:
        self.datagrams = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                self.sock.recv(65536)
            except OSError:
                return
            self.datagrams += 1


def _settle(read: Any, expected: int, timeout: float = 5.0) -> int:
    """Wait for the listener to count ``expected`` (or give up) and return what it counted."""
    deadline = time.monotonic() + timeout
    while read() < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(read())


def bench_sender(tcp: TcpSink, udp: UdpSink, total: int = 2000) -> dict[str, Any]:
    from chalicelib.delivery.registry import StreamOutbound
    from chalicelib.delivery.senders import send_stream

    figures: dict[str, Any] = {"attempts_per_case": total}
    for protocol, port in (("tcp", tcp.port), ("udp", udp.port)):
        outbound = StreamOutbound(protocol, "127.0.0.1", port, PAYLOAD)

        def one(_: int = 0, outbound: StreamOutbound = outbound) -> bool:
            return send_stream(outbound, timeout=5.0, allow_private=True).success

        for threads in (1, 10):
            before = tcp.lines if protocol == "tcp" else udp.datagrams
            with ThreadPoolExecutor(threads) as pool:
                elapsed = timed(lambda pool=pool: all(pool.map(one, range(total))))
            received = _settle(
                (lambda: tcp.lines) if protocol == "tcp" else (lambda: udp.datagrams),
                before + total,
            )
            figures[f"{protocol}_{threads}_thread_per_s"] = round(total / elapsed, 1)
            figures[f"{protocol}_{threads}_thread_received"] = received - before
    return figures


def _customer(tcp: TcpSink, udp: UdpSink) -> str:
    from datetime import UTC, datetime

    from chalicelib.storage import callnotify, tenants

    customer = tenants.create_tenant("bench-callnotify", None).tenant_id
    now = datetime.now(UTC)
    for url in (f"tcp://127.0.0.1:{tcp.port}", f"udp://127.0.0.1:{udp.port}"):
        callnotify.create(customer, {"url": url, "method": "POSTJSON", "selection": "ALL"}, now)
    return customer


def bench_engine(tcp: TcpSink, udp: UdpSink, events: int = 150) -> dict[str, Any]:
    from chalicelib.delivery import engine, ingest

    customer = _customer(tcp, udp)
    payload = {
        "call_id": "bench",
        "from": "+4512345678",
        "to": "+4587654321",
        "direction": "in",
        "timestamp": "2016-05-27T11:30:00+02:00",
        "duration": 42,
        "cause": "normal",
    }
    tcp_before, udp_before = tcp.lines, udp.datagrams
    publish_s = timed(
        lambda: [
            ingest.publish(customer, "CALL_END", payload, selection="SIP") for _ in range(events)
        ]
    )
    records = receive_all(events * 2)
    drain_s = timed(
        lambda: [engine.on_work_batch(records[i : i + 10]) for i in range(0, len(records), 10)]
    )
    tcp_got = _settle(lambda: tcp.lines, tcp_before + events) - tcp_before
    udp_got = _settle(lambda: udp.datagrams, udp_before + events) - udp_before
    return {
        "events": events,
        "deliveries": len(records),
        "publish_events_per_s": round(events / publish_s, 1),
        "engine_deliveries_per_s": round(len(records) / drain_s, 1),
        "tcp_lines_received": tcp_got,
        "udp_datagrams_received": udp_got,
        "note": "over moto: every delivery also pays a claim and a record in DynamoDB",
    }


def main() -> None:
    start_embedded_aws()
    os.environ["RINGBACK_HTTP_TIMEOUT"] = "5"
    tcp, udp = TcpSink(), UdpSink()
    show("(a) stream sender to loopback listeners", bench_sender(tcp, udp))
    show("(b) through the engine (publish + dispatcher, over moto)", bench_engine(tcp, udp))


if __name__ == "__main__":
    main()
