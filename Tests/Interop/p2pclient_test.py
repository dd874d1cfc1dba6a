#!/usr/bin/env python3
"""Cairn as a libp2p daemon, driven by the unchanged Python client p2pclient 0.3.0.

    p2pclient_test.py CAIRN_BINARY [TEST ...]

Starts `cairn p2pd` daemons on loopback (Unix control sockets, go-libp2p-daemon's flags),
runs each test against them through p2pclient, prints one JSON line per test
({"test", "ok", "detail"}) and exits 0 only if every test passed. The daemons are stopped
with SIGTERM, as p2pclient's own harness does.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import anyio
from multiaddr import Multiaddr
from p2pclient import Client
from p2pclient.exceptions import ControlFailure

CAIRN = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="p2pd-")
READY_TIMEOUT = 30


class Daemon:
    """One `cairn p2pd`, as p2pclient's harness starts `p2pd`."""

    count = 0

    def __init__(self, *flags):
        Daemon.count += 1
        n = Daemon.count
        self.control = f"{TMP}/control{n}.sock"
        self.listen = f"{TMP}/client{n}.sock"
        self.log = open(f"{TMP}/daemon{n}.log", "w+")
        self.proc = subprocess.Popen(
            [CAIRN, "p2pd", f"-listen=/unix{self.control}", "-hostAddrs=/ip4/127.0.0.1/tcp/0", *flags],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines = {}
        addrs = []
        deadline = time.time() + READY_TIMEOUT
        in_addrs = False
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            line = line.strip()
            if line.startswith("Control socket:"):
                lines["control"] = line.split(":", 1)[1].strip()
            elif line.startswith("Peer ID:"):
                lines["id"] = line.split(":", 1)[1].strip()
            elif line.startswith("Peer Addrs:"):
                in_addrs = True
                continue
            elif in_addrs and line.startswith("/"):
                addrs.append(line)
                break  # one listen address (-hostAddrs has one)
        if "control" not in lines or "id" not in lines or not addrs:
            raise RuntimeError(f"daemon did not start: {lines} {addrs}; log: {self.tail()}")
        assert lines["control"] == f"/unix{self.control}", lines
        self.peer_id = lines["id"]
        self.addr = Multiaddr(addrs[0])
        self.client = Client(Multiaddr(f"/unix{self.control}"), Multiaddr(f"/unix{self.listen}"))

    def tail(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def eventually(check, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        if await check():
            return
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.05)


async def connect(a, b):
    peer, _ = await b.client.identify()
    await a.client.connect(peer, [b.addr])
    return peer


# ---------------------------------------------------------------------------------------------


async def test_identify(ds):
    a = ds(1)[0]
    peer, addrs = await a.client.identify()
    assert peer.to_base58() == a.peer_id, (peer, a.peer_id)
    assert a.addr in addrs, (a.addr, addrs)
    return f"{peer.to_base58()} {[str(x) for x in addrs]}"


async def test_connect_list_disconnect(ds):
    a, b = ds(2)
    pb = await connect(a, b)
    pa, _ = await a.client.identify()
    # Connecting again to a connected peer is fine.
    await a.client.connect(pb, [b.addr])
    peers_a = await a.client.list_peers()
    assert [p.peer_id for p in peers_a] == [pb], peers_a
    await eventually(lambda: _has_peers(b, [pa]), what="B lists A")
    await a.client.disconnect(pb)
    await eventually(lambda: _has_peers(a, []), what="A lists nobody")
    await eventually(lambda: _has_peers(b, []), what="B lists nobody")
    # A wrong peer ID at B's address is refused.
    wrong = (await ds(1)[0].client.identify())[0]
    try:
        await a.client.connect(wrong, [b.addr])
        raise AssertionError("connected to the wrong identity")
    except ControlFailure as e:
        return f"wrong identity refused: {e}"


async def _has_peers(d, expected):
    return sorted(p.peer_id.to_base58() for p in await d.client.list_peers()) == sorted(p.to_base58() for p in expected)


async def _echo_handler(info, stream):
    try:
        while True:
            data = await stream.receive(65536)
            await stream.send(data)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def _round_trip(opener, handler_daemon, proto, size):
    peer, _ = await handler_daemon.client.identify()
    info, stream = await opener.client.stream_open(peer, [proto])
    assert info.proto == proto and info.peer_id == peer, info
    payload = os.urandom(size)
    got = bytearray()
    async with anyio.create_task_group() as tg:
        async def writer():
            for i in range(0, size, 16384):
                await stream.send(payload[i:i + 16384])
        tg.start_soon(writer)
        while len(got) < size:
            got += await stream.receive(65536)
    await stream.aclose()
    assert bytes(got) == payload, "echo differs"
    return info


async def test_streams_both_ways(ds):
    a, b = ds(2)
    await connect(a, b)
    async with a.client.listen(), b.client.listen():
        await a.client.stream_handler("/test/echo/1.0.0", _echo_handler)
        await b.client.stream_handler("/test/echo/1.0.0", _echo_handler)
        info_ab = await _round_trip(a, b, "/test/echo/1.0.0", 256 * 1024)
        info_ba = await _round_trip(b, a, "/test/echo/1.0.0", 256 * 1024)
        # The address in StreamInfo is the remote's connection address.
        _, b_addrs = await b.client.identify()
        assert info_ab.addr in b_addrs, (info_ab.addr, b_addrs)
        # A protocol nobody handles is refused with an error.
        pb, _ = await b.client.identify()
        try:
            await a.client.stream_open(pb, ["/nobody/1.0.0"])
            raise AssertionError("opened a stream on an unhandled protocol")
        except ControlFailure:
            pass
        # Re-registering replaces: the new handler answers.
        async def upper(info, stream):
            data = await stream.receive(1024)
            await stream.send(data.upper())
            await stream.aclose()
        await b.client.stream_handler("/test/echo/1.0.0", upper)
        _, s = await a.client.stream_open(pb, ["/test/echo/1.0.0"])
        await s.send(b"cairn")
        assert await s.receive(1024) == b"CAIRN"
        await s.aclose()
    return f"256 KiB each way; addr {info_ab.addr}"


async def test_dht(ds):
    a, b, c = ds(3, "-dhtServer")
    await connect(a, b)
    await connect(c, b)
    pc, _ = await c.client.identify()
    pa, _ = await a.client.identify()
    # A finds C (never connected to it) through B.
    info = await a.client.dht_find_peer(pc)
    assert info.peer_id == pc and c.addr in info.addrs, info
    # Values: put on A, got from C.
    await a.client.dht_put_value(b"/test/hello", b"world")
    assert await c.client.dht_get_value(b"/test/hello") == b"world"
    assert b"world" in await c.client.dht_search_value(b"/test/hello")
    # Providers of a CIDv1 (raw codec, sha2-256 multihash).
    cid = bytes([0x01, 0x55, 0x12, 0x20]) + os.urandom(32)
    await a.client.dht_provide(cid)
    providers = await c.client.dht_find_providers(cid, 5)
    assert pa in [p.peer_id for p in providers], providers
    closest = await c.client.dht_get_closest_peers(b"some key")
    assert pa in closest or pc in closest or len(closest) > 0, closest
    key = await c.client.dht_get_public_key(pa)
    assert key.key_type == 1 and len(key.data) == 32, key  # Ed25519
    try:
        await a.client.dht_get_value(b"/test/absent")
        raise AssertionError("got a value nobody put")
    except ControlFailure:
        pass
    return f"{len(providers)} provider(s), {len(closest)} closest"


async def test_connection_manager(ds):
    a = ds(1, "-connManager=true", "-connLo=1", "-connHi=2", "-connGrace=0")[0]
    b, c, d = ds(3)
    pb, pc, pd = [(await x.client.identify())[0] for x in (b, c, d)]
    await a.client.connmgr_tag_peer(pb, "keep", 100)
    await a.client.connmgr_tag_peer(pc, "some", 10)
    await a.client.connmgr_untag_peer(pc, "some")
    for x in (b, c, d):
        await connect(a, x)
    # Three peers is over the high mark (2): trimmed down to the low mark (1), the tagged one kept.
    await eventually(lambda: _has_peers(a, [pb]), what="A trimmed to the tagged peer")
    await connect(a, c)
    await a.client.connmgr_trim()
    await eventually(lambda: _has_peers(a, [pb]), what="TRIM keeps the tagged peer")
    return "trimmed to the tagged peer, twice"


async def test_errors_and_bad_input(ds):
    a, b = ds(2)
    pb, _ = await b.client.identify()
    before = a.fds()
    # PUBSUB is refused clearly.
    try:
        await a.client.pubsub_get_topics()
        raise AssertionError("pubsub answered")
    except ControlFailure as e:
        assert "not supported" in str(e), e
    # DHT not enabled.
    try:
        await a.client.dht_get_value(b"/x")
        raise AssertionError("dht answered")
    except ControlFailure as e:
        assert "DHT" in str(e), e
    # STREAM_OPEN to a peer with no known address.
    stranger = (await ds(1)[0].client.identify())[0]
    try:
        await a.client.stream_open(stranger, ["/x/1.0.0"])
        raise AssertionError("stream to a stranger")
    except ControlFailure:
        pass
    # Raw sockets: garbage, a truncated message, an oversized length, an unknown type.
    def raw(payload, read=True):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(a.control)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while read:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        s.close()
        return out
    garbage = raw(b"\x05\xff\xff\xff\xff\xff")
    truncated = raw(b"\x10\x08")
    oversized = raw(b"\xff\xff\xff\x07")  # ~16 MiB announced
    unknown = raw(b"\x02\x08\x2a")  # Request{type=42}
    for name, reply in [("garbage", garbage), ("unknown", unknown)]:
        assert b"\x08\x01" in reply[:4], (name, reply)  # Response{type=ERROR}
    assert oversized == b"" and truncated == b"", (oversized, truncated)
    # A handler socket that does not answer: the opener's stream ends, the daemon keeps serving.
    async with b.client.listen():
        await b.client.stream_handler("/test/gone/1.0.0", _echo_handler)
    os.unlink(b.listen) if os.path.exists(b.listen) else None
    await connect(a, b)
    try:
        _, s = await a.client.stream_open(pb, ["/test/gone/1.0.0"])
        try:
            await s.send(b"hello?")
            data = await s.receive(10)
            raise AssertionError(f"a dead handler answered {data!r}")
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
    except ControlFailure:
        pass
    # A client that goes away mid-stream.
    async with b.client.listen():
        await b.client.stream_handler("/test/echo/1.0.0", _echo_handler)
        for _ in range(5):
            _, s = await a.client.stream_open(pb, ["/test/echo/1.0.0"])
            await s.send(b"x" * 1000)
            await s.aclose()
    peer, _ = await a.client.identify()
    assert peer.to_base58() == a.peer_id
    await eventually(lambda: _fds_back(a, before), timeout=10, what=f"file descriptors back to {before}")
    return f"fds {before} -> {a.fds()}"


async def _fds_back(d, before):
    return d.fds() <= before + 2  # the listener's and a connection the client may still hold


async def test_p2pclient_harness(ds):
    """p2pclient's own daemon harness starts `p2pd`: here a `p2pd` on PATH that runs `cairn p2pd`."""
    from p2pclient.daemon import make_p2pd_pair_ip4, make_p2pd_pair_unix
    bindir = tempfile.mkdtemp(prefix="p2pd-bin-")
    with open(f"{bindir}/p2pd", "w") as f:
        f.write(f"#!/bin/sh\nexec {CAIRN} p2pd \"$@\"\n")
    os.chmod(f"{bindir}/p2pd", 0o755)
    os.environ["PATH"] = bindir + os.pathsep + os.environ["PATH"]
    async with make_p2pd_pair_ip4("p2pd", True, True, True, False) as one, \
            make_p2pd_pair_unix("p2pd", True, True, True, False) as two:
        p1, addrs1 = await one.client.identify()
        p2, addrs2 = await two.client.identify()
        await one.client.connect(p2, addrs2)
        peers = await one.client.list_peers()
        assert [p.peer_id for p in peers] == [p2], peers
        # The harness's clients already listen for inbound streams.
        await two.client.stream_handler("/harness/echo/1.0.0", _echo_handler)
        _, s = await one.client.stream_open(p2, ["/harness/echo/1.0.0"])
        await s.send(b"through the harness")
        assert await s.receive(1024) == b"through the harness"
        await s.aclose()
        info = await one.client.dht_find_peer(p2)
        assert info.peer_id == p2, info
    for log in (one.daemon.log_filename, two.daemon.log_filename):  # the harness's logs in /tmp
        if os.path.exists(log):
            os.unlink(log)
    return f"harness daemons {p1.to_base58()[:16]}… and {p2.to_base58()[:16]}…"


TESTS = [test_identify, test_connect_list_disconnect, test_streams_both_ways, test_dht,
         test_connection_manager, test_errors_and_bad_input, test_p2pclient_harness]


def main():
    wanted = set(sys.argv[2:])
    failures = 0
    for t in TESTS:
        if wanted and t.__name__ not in wanted:
            continue
        daemons = []

        def ds(n, *flags):
            new = [Daemon(*flags) for _ in range(n)]
            daemons.extend(new)
            return new

        try:
            detail = anyio.run(lambda: _with_timeout(t, ds))
            print(json.dumps({"test": t.__name__, "ok": True, "detail": detail}), flush=True)
        except BaseException as e:  # noqa: BLE001 (report everything, keep going)
            failures += 1
            logs = "\n".join(f"--- daemon {i}\n{d.tail()}" for i, d in enumerate(daemons))
            print(json.dumps({"test": t.__name__, "ok": False,
                              "detail": f"{type(e).__name__}: {e}\n{traceback.format_exc()}\n{logs}"}), flush=True)
        finally:
            for d in daemons:
                d.stop()
            for d in daemons:
                assert not os.path.exists(d.control), f"control socket {d.control} left behind"
    sys.exit(1 if failures else 0)


async def _with_timeout(t, ds):
    with anyio.fail_after(120):
        return await t(ds)


if __name__ == "__main__":
    main()
