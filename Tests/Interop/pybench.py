#!/usr/bin/env python3
"""pybench: loopback benchmark of py-libp2p 0.8.1, to set beside Cairn's own numbers.

One process and one trio run hold two hosts on 127.0.0.1, built exactly as in
pypeer.py: TCP + /noise + /yamux/1.0.0 and Ed25519 keys. A listens on port 0. B also
listens on port 0 (see "identify" below), and B dials A.

  1. connections_per_second. --warmup K uncounted connections come first, then N
     sequential iterations (--conns N). In each one, B dials A fresh with
     Swarm.dial_addr() (TCP + multistream + Noise XX + multistream + Yamux), opens
     /ipfs/ping/1.0.0 through host.new_stream(), does one 32-byte ping round trip,
     half-closes the stream, and closes the connection. The iteration ends when B's
     TCP socket is closed (see "closing" below). Reported as N / elapsed wall time,
     plus the median time per iteration. The script's own checks are left out of
     both figures.
     Freshness is checked on every iteration. B holds no open connection to A
     before the dial. dial_addr() returns a new SwarmConn and Yamux session. The
     ping stream runs on that session. A holds exactly one live connection from
     B's new local port. B's socket fd is -1 after the close. After the loop, A's
     notifee must have counted exactly N new connections, both connection tables
     must drain to empty, and the process's count of socket fds must be back where
     it started. Local ports are not required to be unique: with
     net.ipv4.tcp_tw_reuse=2 (the Linux default), loopback connects may reuse
     TIME_WAIT ports.
  2. stream_throughput_mib_s. On a fresh connection, B opens /bench/sink/1.0.0 and
     writes --mib M MiB in 64 KiB writes, then half-closes. A reads to EOF, counts
     the bytes, writes back the 8-byte big-endian count and closes. Timing runs from
     B's first write until B has the 8-byte count, which must equal the bytes sent.

stdout: one JSON line,
  {"impl":"py-libp2p 0.8.1","conns":N,"connections_per_second":..,
   "median_connect_ms":..,"mib":M,"stream_throughput_mib_s":..}
On failure: {"impl":...,"error":"..."}, exit 1 (exit 2 for bad arguments). Logs go
to stderr: one "connections:" line and one "throughput:" line. They carry the
per-phase medians (dial, ping stream, ping RTT, close), p10/p90/max, streams per
connection, and the sender's zero-window waits.

py-libp2p 0.8.1 behaviour that shapes the measurement:
  * closing: SwarmConn.close() sleeps for 2 x 100 ms. Yamux.close() ends with
    trio.sleep(0.1) after the socket is closed, and SwarmConn._cleanup() sleeps
    another 0.1 s "for stream handlers" before it sends the disconnected
    notification. If each iteration awaited that, the benchmark would time those
    sleeps and cap out below 5 conn/s. So by default (--close-mode socket) close()
    runs in a background task, and the iteration waits for the Yamux muxer's
    event_closed. That event is set right after GO_AWAY has been sent and the
    secured (TCP) connection has been closed; the socket's fd is checked to be -1.
    --close-mode full awaits close() inline instead, for reference.
  * dialing: host.connect() sleeps 250 ms (happy eyeballs), so Swarm.dial_addr()
    is used, as in pypeer.py.
  * identify: BasicHost identifies each new connection in both directions unless
    the peerstore already lists the peer's protocols. In steady state that means
    only the first (warm-up) connection does it. A host with no listen addresses
    delays its identify *reply* by up to 0.5 s (it polls get_addrs() every 10 ms),
    so B listens as well. The streams opened per counted connection are logged.
  * limits: by default the resource manager rate-limits connections to 10/s per
    peer (token bucket, burst 50). It also allows only 8 established connections
    per peer, and a closed connection still counts until its delayed cleanup runs.
    Sequential redials of one peer hit these limits within a fraction of a
    second, so both hosts turn the rate limiter off and raise the per-peer limit to
    256. Separately, a TCP listener holds one of its 250 inbound slots for each
    connection until the swarm stops, even after the connection has closed, so
    it accepts only 250 inbound connections in its lifetime. That limit is raised
    too (see _lift_redial_limits). --default-limits keeps all of these defaults,
    and then the dials are refused.
  * Both hosts share one Python thread, so every figure includes the CPU cost of
    both ends. The occasional ~50 ms iteration is a CPython gen-2 GC pause (it
    goes away with gc.disable()); GC is left on, as it is for users.
  * Each connection ends with a TCP RST, not a FIN handshake: the kernel's
    OutRsts counter rises by exactly one per connection. B closes its socket
    right after GO_AWAY, while frames from A may still be unread or in flight.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pypeer redirects sys.stdout to stderr on import and keeps the real stdout for JSON.
import pypeer  # noqa: E402
from pypeer import (  # noqa: E402
    PING_PROTOCOL_ID,
    _describe,
    _has,
    _socket_of,
    emit,
    make_host,
    ping_once,
)

import trio  # noqa: E402
from multiaddr import Multiaddr  # noqa: E402

import libp2p  # noqa: E402
from libp2p.abc import INotifee  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.io.utils import read_exactly  # noqa: E402
from libp2p.network.stream.exceptions import StreamEOF  # noqa: E402

IMPL = f"py-libp2p {libp2p.__version__}"
SINK_PROTOCOL = TProtocol("/bench/sink/1.0.0")
WRITE_SIZE = 64 * 1024
MIB = 1024 * 1024
PER_PEER_LIMIT = 256  # same as py-libp2p's default per-direction established limit
INBOUND_SLOTS = 1_000_000  # py-libp2p leaks one per inbound connection (default 250)

log = logging.getLogger("pybench")


class BenchError(Exception):
    pass


class _Counter(INotifee):
    """Counts connections and streams (both directions) opened on one swarm."""

    def __init__(self) -> None:
        self.opened = 0
        self.connected_count = 0

    async def opened_stream(self, network, stream) -> None:
        self.opened += 1

    async def connected(self, network, conn) -> None:
        self.connected_count += 1

    async def disconnected(self, network, conn) -> None:
        return None

    async def closed_stream(self, network, stream) -> None:
        return None

    async def listen(self, network, multiaddr) -> None:
        return None

    async def listen_close(self, network, multiaddr) -> None:
        return None


def _lift_redial_limits(host, per_peer: int) -> None:
    """Relax three policies that stop sequential redials of one peer. Nothing else
    in the host changes.

    * The per-peer connection rate limiter (token bucket: 10 connections/s per
      peer, burst 50) is turned off. Otherwise the 51st connection in a burst is
      refused with "Connection denied by resource manager".
    * The per-peer limit on established connections (default 8) is raised. A
      closed connection still counts for about 100 ms after its socket is closed,
      until SwarmConn._cleanup() calls remove_conn(), so fast redials hit 8
      ("ResourceLimitExceeded: Established per peer limit exceeded") within a few
      dozen milliseconds.
    * The swarm's inbound slot limiter (a trio.CapacityLimiter with
      max_connections - min_connections = 250 tokens) is made effectively
      unlimited. For TCP, Swarm._handle_inbound_connection() keeps its slot until
      the *swarm* stops: after the upgrade it awaits manager.wait_finished() and
      only then releases the slot. So a listener refuses every inbound connection
      after its 250th in its lifetime, even when all the earlier ones are closed.
      It closes the socket right after accept(), and the dialer fails in
      multistream with IncompleteReadError.
    """
    swarm = host.get_network()
    limiter = getattr(swarm, "_inbound_limiter", None)
    if isinstance(limiter, trio.CapacityLimiter):
        limiter.total_tokens = INBOUND_SLOTS
    else:
        log.warning("no inbound limiter found; left as it is")
    rm = getattr(swarm, "_resource_manager", None)
    if rm is None:
        log.warning("host has no resource manager; limits left as they are")
        return
    rm.connection_rate_limiter = None
    limits = getattr(rm, "connection_limits", None)
    if limits is not None:
        # The connection tracker and the lifecycle manager share this object.
        limits.max_established_per_peer = per_peer


def _tcp_socket(conn):
    """The OS socket under a SwarmConn. The direct attribute chain is cheap; if it
    fails, fall back to pypeer's generic walk."""
    try:
        s = conn.muxed_conn.secured_conn.conn.read_writer.read_write_closer.stream.stream
        if isinstance(s, trio.SocketStream):
            return s.socket
    except AttributeError:
        pass
    return _socket_of(conn)


def _remote_port(conn) -> int | None:
    try:
        return conn.muxed_conn.get_remote_address()[1]
    except Exception:  # noqa: BLE001
        return None


def _socket_fds() -> int | None:
    """Open socket fds of this process (Linux), or None."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    n = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def _sink_handler(stream) -> None:
    """A's side of /bench/sink/1.0.0: count bytes to EOF, reply with an 8-byte count."""
    total = 0
    try:
        while True:
            try:
                chunk = await stream.read(_sink_handler.read_size)
            except StreamEOF:
                break
            if not chunk:
                break
            total += len(chunk)
        _sink_handler.last_total = total
        ms = getattr(stream, "muxed_stream", None)
        _sink_handler.recv_window_target = getattr(ms, "target_recv_window", None)
        await stream.write(total.to_bytes(8, "big"))
        await stream.close()
    except Exception as e:  # noqa: BLE001
        log.error("sink handler failed after %d bytes: %s", total, _describe(e))
        _sink_handler.error = _describe(e)
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001
            pass


_sink_handler.read_size = WRITE_SIZE
_sink_handler.last_total = None
_sink_handler.error = None
_sink_handler.recv_window_target = None


class Bench:
    def __init__(self, args, host_a, host_b, nursery) -> None:
        self.args = args
        self.host_a = host_a
        self.host_b = host_b
        self.swarm_a = host_a.get_network()
        self.swarm_b = host_b.get_network()
        self.peer_a = host_a.get_id()
        self.nursery = nursery  # background close() tasks
        tcp = [a for a in host_a.get_transport_addrs() if "/tcp/" in str(a)]
        if not tcp:
            raise BenchError("host A has no TCP listen address (bind failed?)")
        self.addr_a: Multiaddr = tcp[0]
        self.seen_ports: set[int] = set()
        self.prev_conn = None
        self.close_errors = 0

    def _open_conns_b(self) -> list:
        return [c for c in self.swarm_b.get_connections(self.peer_a) if not c.is_closed]

    async def _close_bg(self, conn) -> None:
        try:
            await conn.close()
        except Exception as e:  # noqa: BLE001
            self.close_errors += 1
            log.warning("background close failed: %s", _describe(e))

    async def one_connection(self) -> dict:
        """One iteration. Returns phase times in seconds, plus the time spent on
        our own checks, which the caller leaves out of the totals."""
        if self._open_conns_b():
            raise BenchError("B still has an open connection to A before dialing")
        t0 = time.perf_counter()
        conn = await self.swarm_b.dial_addr(self.addr_a, self.peer_a)
        await conn.event_started.wait()
        t1 = time.perf_counter()

        # Checks (not timed).
        sock = _tcp_socket(conn)
        if sock is None:
            raise BenchError("could not find the TCP socket of the new connection")
        try:
            port = sock.getsockname()[1]
        except OSError as e:
            # The peer refused the connection after the handshake (e.g. limits).
            raise BenchError(f"connection closed right after the dial: {e}") from e
        # A port can come back within a run: with net.ipv4.tcp_tw_reuse=2 (the Linux
        # default) the kernel reuses TIME_WAIT ports for loopback connects. So
        # freshness is checked on A's side below, not through the port.
        reused = port in self.seen_ports
        self.seen_ports.add(port)
        if conn is self.prev_conn or (self.prev_conn is not None
                                      and conn.muxed_conn is self.prev_conn.muxed_conn):
            raise BenchError("dial_addr returned the previous connection")
        self.prev_conn = conn
        t2 = time.perf_counter()

        stream = await self.host_b.new_stream(self.peer_a, [PING_PROTOCOL_ID])
        if stream.muxed_conn is not conn.muxed_conn:
            raise BenchError("ping stream was opened on a different connection")
        rtt_ms = await ping_once(stream)
        await stream.close()
        t3 = time.perf_counter()

        # A must hold a live inbound connection from exactly this local port. The
        # ping was served on it, so A has already registered it.
        live_on_a = [c for c in self.swarm_a.get_connections(self.host_b.get_id())
                     if not c.is_closed and _remote_port(c) == port]
        if len(live_on_a) != 1:
            raise BenchError(f"A has {len(live_on_a)} live connections from port {port}")
        t4 = time.perf_counter()

        if self.args.close_mode == "full":
            await conn.close()
        else:
            self.nursery.start_soon(self._close_bg, conn)
            await conn.muxed_conn.event_closed.wait()
        t5 = time.perf_counter()

        if not conn.is_closed:
            raise BenchError("SwarmConn not marked closed after close")
        if sock.fileno() != -1:
            raise BenchError("TCP socket still open after close")
        dial, ping, close = t1 - t0, t3 - t2, t5 - t4
        return {"dial": dial, "ping": ping, "rtt": rtt_ms / 1000.0, "close": close,
                "total": dial + ping + close, "overhead": (t2 - t1) + (t4 - t3),
                "port": port, "port_reused": reused}

    async def _iteration(self, what: str) -> dict:
        try:
            return await self.one_connection()
        except Exception as e:  # noqa: BLE001
            raise BenchError(f"{what}: {_describe(e)}") from None

    async def drain(self, timeout: float = 10.0) -> float:
        """Wait until both swarms have no connections left. Returns seconds waited."""
        t0 = time.perf_counter()
        with trio.move_on_after(timeout):
            while self.swarm_a.get_connections() or self.swarm_b.get_connections():
                await trio.sleep(0.01)
        left_a = len(self.swarm_a.get_connections())
        left_b = len(self.swarm_b.get_connections())
        if left_a or left_b:
            raise BenchError(f"connections left after {timeout:g} s: A={left_a} B={left_b}")
        return time.perf_counter() - t0

    async def connections(self) -> dict:
        a = self.args
        for i in range(a.warmup):
            await self._iteration(f"warm-up connection {i + 1}")
        await self.drain()
        sa, sb = self.args.counters
        streams_a0, streams_b0 = sa.opened, sb.opened
        conns_a0 = sa.connected_count
        fds0 = _socket_fds()
        max_b_table = 0
        results = []
        t_start = time.perf_counter()
        for i in range(a.conns):
            results.append(await self._iteration(f"connection {i + 1}"))
            max_b_table = max(max_b_table, len(self.swarm_b.get_connections()))
        elapsed = time.perf_counter() - t_start - sum(r["overhead"] for r in results)
        drain_s = await self.drain()
        fds1 = _socket_fds()
        per = {k: [r[k] for r in results]
               for k in ("total", "dial", "ping", "rtt", "close")}
        detail = {
            "elapsed_s": round(elapsed, 4),
            "median_ms": {k: _ms(statistics.median(v)) for k, v in per.items()},
            "p10_total_ms": _ms(_pct(per["total"], 0.10)),
            "p90_total_ms": _ms(_pct(per["total"], 0.90)),
            "max_total_ms": _ms(max(per["total"])),
            "max_total_at": per["total"].index(max(per["total"])) + 1,
            "unique_local_ports": len({r["port"] for r in results}),
            "port_reuses_tw_reuse": sum(r["port_reused"] for r in results),
            "inbound_conns_seen_by_A": sa.connected_count - conns_a0,
            "streams_opened_per_conn_A": round((sa.opened - streams_a0) / a.conns, 3),
            "streams_opened_per_conn_B": round((sb.opened - streams_b0) / a.conns, 3),
            "max_B_table_size_incl_closing": max_b_table,
            "drain_after_loop_s": round(drain_s, 3),
            "socket_fds_before_after": [fds0, fds1],
            "close_mode": a.close_mode,
            "close_errors": self.close_errors,
        }
        if fds0 is not None and fds1 != fds0:
            raise BenchError(f"socket fds {fds0} before the loop, {fds1} after: "
                             "connections not fully closed")
        if detail["inbound_conns_seen_by_A"] != a.conns:
            raise BenchError(f"A saw {detail['inbound_conns_seen_by_A']} new "
                             f"connections, expected {a.conns}")
        return {
            "connections_per_second": round(a.conns / elapsed, 2),
            "median_connect_ms": _ms(statistics.median(per["total"])),
            "detail": detail,
        }

    async def throughput(self) -> dict:
        a = self.args
        total = a.mib * MIB
        payload = os.urandom(WRITE_SIZE)
        writes, rest = divmod(total, WRITE_SIZE)
        conn = await self.swarm_b.dial_addr(self.addr_a, self.peer_a)
        await conn.event_started.wait()
        stream = await self.host_b.new_stream(self.peer_a, [SINK_PROTOCOL])
        if stream.muxed_conn is not conn.muxed_conn:
            raise BenchError("sink stream was opened on a different connection")
        _sink_handler.last_total = None
        slowest_write = 0.0
        t0 = time.perf_counter()
        for _ in range(writes):
            w0 = time.perf_counter()
            await stream.write(payload)
            slowest_write = max(slowest_write, time.perf_counter() - w0)
        if rest:
            await stream.write(payload[:rest])
        t_written = time.perf_counter()
        await stream.close()  # half-close: FIN
        reply = await read_exactly(stream, 8)
        t1 = time.perf_counter()
        count = int.from_bytes(reply, "big")
        if _sink_handler.error:
            raise BenchError(f"sink failed: {_sink_handler.error}")
        if count != total:
            raise BenchError(f"sink counted {count} bytes, sent {total}")
        # Expect EOF after the count (A closes its side).
        try:
            extra = await stream.read(1)
        except StreamEOF:
            extra = b""
        if extra:
            raise BenchError("unexpected data after the count")
        self.nursery.start_soon(self._close_bg, conn)
        await conn.muxed_conn.event_closed.wait()
        await self.drain()
        elapsed = t1 - t0
        return {
            "stream_throughput_mib_s": round(a.mib / elapsed, 2),
            "detail": {"elapsed_s": round(elapsed, 4),
                       "write_loop_s": round(t_written - t0, 4),
                       "slowest_write_ms": _ms(slowest_write),
                       "sender_zero_window_waits": getattr(
                           stream.muxed_stream, "_zero_window_waits", None),
                       "receiver_final_window_target": _sink_handler.recv_window_target,
                       "count": count},
        }


async def run(args) -> int:
    listen_a = Multiaddr("/ip4/127.0.0.1/tcp/0")
    listen_b = Multiaddr("/ip4/127.0.0.1/tcp/0")
    host_a = make_host(None, [listen_a])
    host_b = make_host(None, [listen_b])
    if not args.default_limits:
        for h in (host_a, host_b):
            _lift_redial_limits(h, PER_PEER_LIMIT)
    host_a.set_stream_handler(SINK_PROTOCOL, _sink_handler)
    ca, cb = _Counter(), _Counter()
    args.counters = (ca, cb)
    result: dict | None = None
    try:
        with trio.fail_after(args.timeout):
            async with host_a.run(listen_addrs=[listen_a]), \
                    host_b.run(listen_addrs=[listen_b]):
                host_a.get_network().register_notifee(ca)
                host_b.get_network().register_notifee(cb)
                async with trio.open_nursery() as nursery:
                    bench = Bench(args, host_a, host_b, nursery)
                    log.info("A %s at %s, B %s", host_a.get_id(), bench.addr_a,
                             host_b.get_id())
                    c = await bench.connections() if args.conns > 0 else None
                    if c:
                        log.info("connections: %s", json.dumps(c["detail"]))
                    t = await bench.throughput() if args.mib > 0 else None
                    if t:
                        log.info("throughput: %s", json.dumps(t["detail"]))
                    result = {
                        "impl": IMPL,
                        "conns": args.conns,
                        "connections_per_second": c and c["connections_per_second"],
                        "median_connect_ms": c and c["median_connect_ms"],
                        "mib": args.mib,
                        "stream_throughput_mib_s": t and t["stream_throughput_mib_s"],
                    }
                    emit(result)
                # Leave quickly rather than waiting on py-libp2p's background tasks.
                with trio.move_on_after(3) as cs:
                    cs.shield = True
                    for h in (host_b, host_a):
                        try:
                            await h.close()
                        except Exception as e:  # noqa: BLE001
                            log.debug("close: %s", _describe(e))
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        if result is not None:
            log.debug("teardown error after result: %s", _describe(e))
            return 0
        if _has(e, trio.TooSlowError):
            err = f"timeout after {args.timeout:g} s"
        else:
            err = _describe(e)
        emit({"impl": IMPL, "error": err})
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conns", type=int, default=200,
                   help="counted connections (default 200; 0 skips the test)")
    p.add_argument("--warmup", type=int, default=5,
                   help="uncounted connections first (default 5)")
    p.add_argument("--mib", type=int, default=64,
                   help="MiB to send through the sink stream (default 64; 0 skips)")
    p.add_argument("--read-size", type=int, default=WRITE_SIZE,
                   help="sink read size in bytes (default 65536)")
    p.add_argument("--close-mode", choices=("socket", "full"), default="socket",
                   help="socket: the iteration ends when the TCP socket is closed, "
                        "and py-libp2p's 2x100 ms cleanup sleeps run in the "
                        "background (default). full: await SwarmConn.close() inline.")
    p.add_argument("--default-limits", action="store_true",
                   help="keep py-libp2p's per-peer connection rate limit (10/s, "
                        "burst 50), per-peer limit of 8 established connections, and "
                        "250 inbound connections per listener lifetime (the dials "
                        "are then refused)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="bound for the whole run in seconds (default 300)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="py-libp2p DEBUG logs on stderr")
    args = p.parse_args(argv)
    if args.conns < 0 or args.warmup < 0 or args.mib < 0 or args.read_size <= 0:
        emit({"impl": IMPL, "error": "negative --conns/--warmup/--mib or bad --read-size"})
        return 2
    _sink_handler.read_size = args.read_size

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for lg in (log, pypeer.log):
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    if args.verbose:
        lp = logging.getLogger("libp2p")
        lp.addHandler(handler)
        lp.setLevel(logging.DEBUG)
    log.info("%s, trio %s, python %s, pid %d", IMPL, trio.__version__,
             sys.version.split()[0], os.getpid())
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
