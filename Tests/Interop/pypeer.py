#!/usr/bin/env python3
"""pypeer: a small py-libp2p 0.8.1 peer for Cairn's interop tests.

Stack: TCP + /noise (Noise XX) + /yamux/1.0.0 only, Ed25519 identity.
stdout: machine-readable JSON, one object per line, flushed.  stderr: logs.

Modes (all take --seed HEX32 for a deterministic Ed25519 key, --timeout S (default 20),
--retries N (dial retries, default 0), -v for py-libp2p debug logs on stderr):

  pypeer.py listen [--port N] [--host 127.0.0.1] [--identify-peers] [--ignore-stdin]
      first line:  {"event":"listening","peer_id":"12D3KooW...","addrs":[".../p2p/12D3..."]}
      then:        {"event":"connected","peer_id":...,"direction":"inbound"|"outbound",
                    "remote_addr":"/ip4/../tcp/..","local_addr":"/ip4/../tcp/.."}
                   {"event":"disconnected","peer_id":...}
                   with --identify-peers, an "identify" line (format below) for every
                   peer that connects (we identify *them*).
      Runs until stdin reaches EOF (unless --ignore-stdin) or SIGTERM/SIGINT; exit 0.

  pypeer.py ping MULTIADDR/p2p/ID [--count 3] [--hold S]
      {"event":"ping","peer_id":...,"rtts_ms":[float,...],"local_addr":...,"remote_addr":...}

  pypeer.py identify MULTIADDR/p2p/ID [--hold S]
      {"event":"identify","peer_id":...,"framing":"varint"|"raw","message_len":int,
       "protocol_version":...,
       "agent_version":...,"public_key_hex":...,"public_key_matches_peer_id":bool,
       "listen_addrs":[...],"observed_addr":str|null,"protocols":[...],
       "local_addr":"/ip4/x/tcp/p","remote_addr":"/ip4/y/tcp/q",
       "signed_peer_record":null|{"valid":bool,"error":str|null,"peer_id":...,
                                   "seq":int,"addrs":[...],"payload_type_hex":"0301"}}
      public_key_hex is the protobuf-encoded PublicKey (08 01 12 20 <32 bytes> for
      Ed25519).  "valid" is py-libp2p's consume_envelope() (signature, domain
      "libp2p-peer-record", payload type 0x0301) plus: envelope key's peer ID ==
      record peer_id == the peer we dialed.

  On failure: {"event":"error","error":"..."} and exit code 1 (2 for a bad --seed);
  listen mode also fails this way if it cannot bind.  --hold S keeps the connection open S seconds after the result line (e.g.
  so the remote can identify or ping us back).

py-libp2p 0.8.1 quirks worked around here (see NOTES.md next to this file):
  * host.connect() -> Swarm.dial_peer() always waits a fixed 250 ms "happy eyeballs"
    head start after starting the dial, even for a single address that succeeded at
    once.  We call Swarm.dial_addr() directly instead (same upgrade path, no delay).
  * BasicHost runs identify automatically on every new connection (both directions),
    so the remote sees an extra /ipfs/id/1.0.0 stream from us besides the one we open.
  * Its Yamux sends a PING (SYN, opaque = 1, 2, ...) 0.5 s after the session starts and
    then every 30 s; the remote must answer with PING|ACK echoing the opaque value.
  * There is no API for the local address of a connection; we walk from the SwarmConn
    down to trio's SocketStream and call getsockname() (see _socket_of()).
  * trio 0.35 uses strict exception groups: errors surface as ExceptionGroups, which
    _describe() flattens for the error JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import time

# Keep a private handle on the real stdout and point sys.stdout at stderr, so that
# any stray print() inside libraries can never corrupt the JSON stream.
_JSON_OUT = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
sys.stdout = sys.stderr

log = logging.getLogger("pypeer")


def emit(obj: dict) -> None:
    _JSON_OUT.write(json.dumps(obj, separators=(",", ":")) + "\n")
    _JSON_OUT.flush()


def _describe(exc: BaseException) -> str:
    """Flatten (nested) exception groups / causes into one readable string."""
    parts: list[str] = []

    def walk(e: BaseException, depth: int = 0) -> None:
        if depth > 6:
            return
        subs = getattr(e, "exceptions", None)
        if subs:
            for s in subs:
                walk(s, depth + 1)
            return
        msg = f"{type(e).__name__}: {e}".rstrip(": ")
        if msg not in parts:
            parts.append(msg)
        cause = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        if cause is not None:
            walk(cause, depth + 1)

    walk(exc)
    return " <- ".join(parts) if parts else repr(exc)


def _has(exc: BaseException, kind: type) -> bool:
    """True if exc, a member of a (nested) exception group, or a cause is a `kind`."""
    if isinstance(exc, kind):
        return True
    for s in getattr(exc, "exceptions", None) or ():
        if _has(s, kind):
            return True
    return exc.__cause__ is not None and _has(exc.__cause__, kind)


# --------------------------------------------------------------------------------------
# py-libp2p imports (after the stdout redirect)
# --------------------------------------------------------------------------------------
import trio  # noqa: E402
from multiaddr import Multiaddr  # noqa: E402

import libp2p  # noqa: E402
from libp2p import new_host  # noqa: E402
from libp2p.abc import INotifee  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair  # noqa: E402
from libp2p.crypto.serialization import deserialize_public_key  # noqa: E402
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.host.ping import ID as PING_PROTOCOL_ID, PING_LENGTH  # noqa: E402
from libp2p.identity.identify.identify import (  # noqa: E402
    ID as IDENTIFY_PROTOCOL_ID,
    parse_identify_response,
)
from libp2p.identity.identify.pb.identify_pb2 import Identify  # noqa: E402
from libp2p.io.utils import read_exactly  # noqa: E402
from libp2p.network.config import RetryConfig  # noqa: E402
from libp2p.network.stream.exceptions import StreamEOF  # noqa: E402
from libp2p.peer.envelope import consume_envelope, unmarshal_envelope  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peer_record import PEER_RECORD_ENVELOPE_DOMAIN  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.security.noise.transport import (  # noqa: E402
    PROTOCOL_ID as NOISE_PROTOCOL_ID,
    Transport as NoiseTransport,
)
from libp2p.stream_muxer.yamux.yamux import (  # noqa: E402
    PROTOCOL_ID as YAMUX_PROTOCOL_ID,
    Yamux,
)

MAX_IDENTIFY_BYTES = 1 << 20  # what py-libp2p's read_length_prefixed_protobuf allows


# --------------------------------------------------------------------------------------
# host construction
# --------------------------------------------------------------------------------------
def make_host(seed_hex: str | None, listen: list[Multiaddr] | None = None,
              retries: int = 0):
    if seed_hex:
        key_pair = ed25519_key_pair(bytes.fromhex(seed_hex))  # checked in main()
    else:
        key_pair = ed25519_key_pair()
    # Only Noise + Yamux.  new_host()'s defaults would also offer TLS, secio and
    # plaintext (security) and mplex (muxer).
    sec_opt = {
        TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(
            key_pair, noise_privkey=x25519_key_pair().private_key
        )
    }
    muxer_opt = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    host = new_host(
        key_pair=key_pair,
        sec_opt=sec_opt,
        muxer_opt=muxer_opt,
        listen_addrs=listen,
    )
    # py-libp2p retries a failed dial 3 times with backoff by default (even for a
    # peer-ID mismatch), so the remote would see several handshakes.  Default 0 here.
    host.get_network().retry_config = RetryConfig(max_retries=retries)
    return host


# --------------------------------------------------------------------------------------
# connection address helpers
# --------------------------------------------------------------------------------------
def _socket_of(conn) -> object | None:
    """Find the OS socket under a SwarmConn / muxed conn / stream.

    py-libp2p 0.8.1 only exposes the *remote* address (get_remote_address()).  The
    chain for TCP is SwarmConn.muxed_conn (Yamux) .secured_conn (SecureSession)
    .conn (NoiseTransportReadWriter) .read_writer (NoisePacketReadWriter)
    .read_write_closer (RawConnection) .stream (TrioTCPStream) .stream
    (trio.SocketStream) .socket.  Walk it generically (bounded BFS over attributes of
    libp2p objects) so small refactors do not break it.
    """
    seen: set[int] = set()
    queue = [conn]
    steps = 0
    while queue and steps < 400:
        obj = queue.pop(0)
        steps += 1
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, trio.SocketStream):
            return obj.socket
        mod = type(obj).__module__ or ""
        if not mod.startswith("libp2p"):
            continue
        try:
            attrs = vars(obj)
        except TypeError:
            continue
        for name, val in attrs.items():
            if name.startswith("__") or isinstance(
                val, (str, bytes, int, float, bool, dict, list, tuple, set)
            ):
                continue
            queue.append(val)
    return None


def _sockaddr_to_maddr(sa) -> str | None:
    if not sa:
        return None
    host, port = sa[0], sa[1]
    if host.lower().startswith("::ffff:"):
        host = host[7:]
    proto = "ip6" if ":" in host else "ip4"
    return f"/{proto}/{host}/tcp/{port}"


def conn_addrs(conn) -> tuple[str | None, str | None]:
    """(local, remote) TCP multiaddrs of a connection, as text."""
    sock = _socket_of(conn)
    local = remote = None
    if sock is not None:
        try:
            local = _sockaddr_to_maddr(sock.getsockname())
        except OSError:
            pass
        try:
            remote = _sockaddr_to_maddr(sock.getpeername())
        except OSError:
            pass
    if remote is None:
        try:
            remote = _sockaddr_to_maddr(conn.muxed_conn.get_remote_address())
        except Exception:
            pass
    return local, remote


def _maddr_text(raw: bytes) -> str:
    try:
        return str(Multiaddr(raw))
    except Exception:
        return "invalid:" + raw.hex()


# --------------------------------------------------------------------------------------
# identify client
# --------------------------------------------------------------------------------------
def _uvarint(buf: bytes) -> tuple[int, int] | None:
    """Decode a complete unsigned varint: (value, size), or None if incomplete."""
    value = shift = 0
    for i, b in enumerate(buf[:10]):
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i + 1
        shift += 7
    return None


def verify_signed_peer_record(data: bytes, expected_peer: ID) -> dict:
    """Verify a signedPeerRecord with py-libp2p's own envelope code.

    consume_envelope() checks the Ed25519/RSA/secp256k1 signature over
    varint(len(domain))|domain|varint(len(type))|type|varint(len(payload))|payload
    with domain "libp2p-peer-record" and payload type 0x0301, and decodes the record.
    It does NOT check that the signing key belongs to the record's peer ID; py-libp2p
    does that separately (peerstore._peer_record_signer_matches, and identify's
    update_peerstore_from_identify compares record.peer_id to the sender).  We do both.
    """
    out: dict = {"valid": False, "error": None, "peer_id": None, "seq": None,
                 "addrs": [], "payload_type_hex": None}
    # Decode first without verification so we can report the contents even if invalid.
    try:
        env = unmarshal_envelope(data)
        out["payload_type_hex"] = env.payload_type.hex()
        rec = env.record()
        out["peer_id"] = str(rec.peer_id)
        out["seq"] = int(rec.seq)
        out["addrs"] = [str(a) for a in rec.addrs]
    except Exception as e:  # noqa: BLE001
        out["error"] = f"decode: {_describe(e)}"
        return out
    try:
        env, rec = consume_envelope(data, PEER_RECORD_ENVELOPE_DOMAIN)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"verify: {_describe(e)}"
        return out
    signer = ID.from_pubkey(env.public_key)
    if signer != rec.peer_id:
        out["error"] = f"envelope key is {signer}, record peer_id is {rec.peer_id}"
        return out
    if rec.peer_id != expected_peer:
        out["error"] = f"record peer_id {rec.peer_id} != remote peer {expected_peer}"
        return out
    out["valid"] = True
    return out


def _complete_varint_identify(buf: bytes, require_public_key: bool = True) -> bool:
    """buf is exactly uvarint(len) + an Identify protobuf carrying a public key.

    The length check alone is not enough while data is still arriving: a raw
    (unframed) Identify starts with 0x0a (field 1, publicKey), which also reads as
    "length 10", so its first 11 bytes would look like a complete framed message.
    Requiring the body to parse as an Identify with publicKey rules that out (the
    raw message's second byte, the key length 0x24, is not a valid field tag).
    """
    v = _uvarint(buf)
    if v is None or v[0] == 0 or v[0] + v[1] != len(buf):
        return False
    msg = Identify()
    try:
        msg.ParseFromString(buf[v[1]:])
    except Exception:  # noqa: BLE001
        return False
    return msg.HasField("public_key") or not require_public_key


async def read_identify(stream) -> tuple[bytes, str]:
    """Read one identify message; return (raw bytes as received, framing).

    py-libp2p 0.8.1 *sends* identify varint-length-prefixed (one write:
    uvarint(len) + protobuf) and then closes the stream.  Its own client reads a
    varint-prefixed message and falls back to raw; parse_identify_response() accepts
    both.  We read until the varint-framed message is complete or until EOF (raw,
    legacy framing), then hand the bytes to parse_identify_response().
    """
    buf = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except StreamEOF:
            chunk = b""
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_IDENTIFY_BYTES + 10:
            raise ValueError(f"identify message larger than {MAX_IDENTIFY_BYTES} bytes")
        if _complete_varint_identify(bytes(buf)):
            return bytes(buf), "varint"
    if not buf:
        raise EOFError("identify stream closed without data")
    framing = "varint" if _complete_varint_identify(bytes(buf), False) else "raw"
    return bytes(buf), framing


async def identify_peer(host, peer_id: ID) -> dict:
    stream = await host.new_stream(peer_id, [IDENTIFY_PROTOCOL_ID])
    try:
        raw, framing = await read_identify(stream)
    finally:
        with trio.CancelScope(shield=True):
            try:
                await stream.close()
            except Exception:  # noqa: BLE001
                pass
    msg = parse_identify_response(raw)  # py-libp2p's own parser (varint or raw)

    pk_hex = msg.public_key.hex() if msg.HasField("public_key") else None
    pk_matches = None
    if msg.HasField("public_key"):
        try:
            pk_matches = ID.from_pubkey(deserialize_public_key(msg.public_key)) == peer_id
        except Exception:  # noqa: BLE001
            pk_matches = False

    conns = host.get_network().get_connections(peer_id)
    local, remote = conn_addrs(conns[0]) if conns else (None, None)

    spr = None
    if msg.HasField("signedPeerRecord"):
        spr = verify_signed_peer_record(msg.signedPeerRecord, peer_id)

    return {
        "event": "identify",
        "peer_id": str(peer_id),
        "framing": framing,
        "message_len": len(raw),
        "protocol_version": msg.protocol_version if msg.HasField("protocol_version") else None,
        "agent_version": msg.agent_version if msg.HasField("agent_version") else None,
        "public_key_hex": pk_hex,
        "public_key_matches_peer_id": pk_matches,
        "listen_addrs": [_maddr_text(a) for a in msg.listen_addrs],
        "observed_addr": (_maddr_text(msg.observed_addr)
                          if msg.HasField("observed_addr") and msg.observed_addr else None),
        "protocols": list(msg.protocols),
        "local_addr": local,
        "remote_addr": remote,
        "signed_peer_record": spr,
    }


# --------------------------------------------------------------------------------------
# dialing
# --------------------------------------------------------------------------------------
async def dial(host, target: str):
    maddr = Multiaddr(target)
    info = info_from_p2p_addr(maddr)  # raises unless the address ends in /p2p/<id>
    host.get_peerstore().add_addrs(info.peer_id, info.addrs, 120)
    # Not host.connect(): Swarm.dial_peer() sleeps 250 ms (happy-eyeballs head start)
    # even after a successful single-address dial.  dial_addr() runs the same
    # transport + multistream(/noise) + Noise XX + multistream(/yamux) upgrade.
    conn = await host.get_network().dial_addr(info.addrs[0], info.peer_id)
    started = getattr(conn, "event_started", None)
    if started is not None:
        await started.wait()
    return info.peer_id, conn


async def ping_once(stream) -> float:
    payload = secrets.token_bytes(PING_LENGTH)
    t0 = time.perf_counter()
    await stream.write(payload)
    pong = await read_exactly(stream, PING_LENGTH)
    rtt = (time.perf_counter() - t0) * 1000.0
    if pong != payload:
        raise ValueError(f"pong mismatch: sent {payload.hex()} got {pong.hex()}")
    return rtt


async def run_dial_mode(args) -> int:
    host = make_host(args.seed, retries=args.retries)
    result: dict | None = None
    try:
        # Outer safety net (host start-up/teardown); the protocol work itself is
        # bounded by --timeout below.
        with trio.fail_after(args.timeout + args.hold + 5):
            async with host.run(listen_addrs=[]):
                with trio.fail_after(args.timeout):
                    peer_id, conn = await dial(host, args.multiaddr)
                    if args.mode == "ping":
                        stream = await host.new_stream(peer_id, [PING_PROTOCOL_ID])
                        rtts = [round(await ping_once(stream), 3)
                                for _ in range(args.count)]
                        await stream.close()
                        local, remote = conn_addrs(conn)
                        result = {"event": "ping", "peer_id": str(peer_id),
                                  "rtts_ms": rtts, "local_addr": local,
                                  "remote_addr": remote}
                    else:
                        result = await identify_peer(host, peer_id)
                emit(result)
                if args.hold > 0:
                    # Keep the connection up (e.g. so the remote can identify us).
                    await trio.sleep(args.hold)
                # Leave quickly rather than waiting on background tasks.
                with trio.move_on_after(2):
                    await host.close()
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        if result is not None:
            # The answer is out; a teardown error should not turn it into a failure.
            log.debug("teardown error after result: %s", _describe(e))
            return 0
        if _has(e, trio.TooSlowError):
            err = f"timeout after {args.timeout:g} s"
        else:
            err = _describe(e)
        emit({"event": "error", "error": err})
        return 1
    return 0


# --------------------------------------------------------------------------------------
# listen mode
# --------------------------------------------------------------------------------------
class _ConnNotifee(INotifee):
    def __init__(self, host, send_channel, identify: bool) -> None:
        self.host = host
        self.identify = identify
        self.send = send_channel

    async def connected(self, network, conn) -> None:
        peer = getattr(conn.muxed_conn, "peer_id", None)
        local, remote = conn_addrs(conn)
        initiator = getattr(conn.muxed_conn, "is_initiator", None)
        emit({"event": "connected", "peer_id": str(peer),
              "direction": "outbound" if initiator else "inbound",
              "remote_addr": remote, "local_addr": local})
        if self.identify and peer is not None:
            try:
                self.send.send_nowait(peer)
            except trio.WouldBlock:
                pass

    async def disconnected(self, network, conn) -> None:
        peer = getattr(conn.muxed_conn, "peer_id", None)
        emit({"event": "disconnected", "peer_id": str(peer)})

    async def opened_stream(self, network, stream) -> None:
        return None

    async def closed_stream(self, network, stream) -> None:
        return None

    async def listen(self, network, multiaddr) -> None:
        return None

    async def listen_close(self, network, multiaddr) -> None:
        return None


async def _wait_stdin_eof() -> None:
    try:
        stdin = trio.lowlevel.FdStream(os.dup(0))
    except OSError as e:
        log.info("stdin unusable (%s); running until a signal", e)
        await trio.sleep_forever()
    async with stdin:
        while True:
            try:
                data = await stdin.receive_some(4096)
            except (OSError, trio.BrokenResourceError) as e:
                log.info("stdin error (%s); running until a signal", e)
                await trio.sleep_forever()
            if not data:
                log.info("stdin EOF; shutting down")
                return


async def _wait_signal(sigs) -> None:
    async for signum in sigs:
        log.info("got signal %d; shutting down", signum)
        return


async def run_listen(args) -> int:
    # Install the signal handlers before anything is printed, so a SIGTERM sent right
    # after the "listening" line is handled (exit 0) instead of killing us.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        try:
            return await _run_listen(args, sigs)
        except Exception as e:  # noqa: BLE001  (e.g. port in use)
            emit({"event": "error", "error": _describe(e)})
            return 1


async def _run_listen(args, sigs) -> int:
    listen = Multiaddr(f"/ip4/{args.host}/tcp/{args.port}")
    host = make_host(args.seed, [listen], retries=args.retries)
    send, recv = trio.open_memory_channel(64)

    async def identify_worker() -> None:
        async with recv:
            async for peer in recv:
                try:
                    with trio.fail_after(args.timeout):
                        emit(await identify_peer(host, peer))
                except Exception as e:  # noqa: BLE001
                    emit({"event": "identify_error", "peer_id": str(peer),
                          "error": _describe(e)})

    async with host.run(listen_addrs=[listen]):
        if not host.get_transport_addrs():
            # Swarm.listen() logs and swallows bind errors (returns False), and
            # host.run() ignores that, so check ourselves.
            raise OSError(f"could not listen on {listen} (address in use?)")
        host.get_network().register_notifee(_ConnNotifee(host, send, args.identify_peers))
        emit({"event": "listening", "peer_id": str(host.get_id()),
              "addrs": [str(a) for a in host.get_addrs()]})
        async with trio.open_nursery() as nursery:
            async def stop_after(fn) -> None:
                await fn()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_after, lambda: _wait_signal(sigs))
            if not args.ignore_stdin:
                nursery.start_soon(stop_after, _wait_stdin_eof)
            if args.identify_peers:
                nursery.start_soon(identify_worker)
        with trio.move_on_after(2) as cs:
            cs.shield = True
            try:
                await host.close()
            except Exception as e:  # noqa: BLE001
                log.debug("close: %s", _describe(e))
    return 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", help="32-byte hex seed for a deterministic Ed25519 key")
    common.add_argument("--timeout", type=float, default=20.0,
                        help="overall time bound in seconds for dial modes (default 20)")
    common.add_argument("--retries", type=int, default=0,
                        help="dial retries (py-libp2p default 3; default here 0)")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="py-libp2p DEBUG logs on stderr")

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    pl = sub.add_parser("listen", parents=[common])
    pl.add_argument("--port", type=int, default=0)
    pl.add_argument("--host", default="127.0.0.1")
    pl.add_argument("--identify-peers", action="store_true",
                    help="identify every connecting peer and print an identify line")
    pl.add_argument("--ignore-stdin", action="store_true",
                    help="do not stop on stdin EOF (only on SIGTERM/SIGINT)")
    pp = sub.add_parser("ping", parents=[common])
    pp.add_argument("multiaddr")
    pp.add_argument("--count", type=int, default=3)
    pp.add_argument("--hold", type=float, default=0.0,
                    help="keep the connection open this many seconds after the result")
    pi = sub.add_parser("identify", parents=[common])
    pi.add_argument("multiaddr")
    pi.add_argument("--hold", type=float, default=0.0,
                    help="keep the connection open this many seconds after the result")
    args = p.parse_args(argv)
    if args.seed is not None:
        try:
            ok = len(bytes.fromhex(args.seed)) == 32
        except ValueError:
            ok = False
        if not ok:
            emit({"event": "error", "error": "--seed must be 64 hex characters (32 bytes)"})
            return 2

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.propagate = False
    if args.verbose:
        lp = logging.getLogger("libp2p")
        lp.addHandler(handler)
        lp.setLevel(logging.DEBUG)
    log.info("py-libp2p %s, mode %s", libp2p.__version__, args.mode)

    if args.mode == "listen":
        return trio.run(run_listen, args)
    return trio.run(run_dial_mode, args)


if __name__ == "__main__":
    sys.exit(main())
