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

  pypeer.py dht-server [--port N] [--host 127.0.0.1] [--bootstrap MADDR]... [--namespace NS]...
                       [--ignore-stdin]
      py-libp2p's KadDHT (/ipfs/kad/1.0.0) in server mode.
      first line:  {"event":"listening","mode":"dht-server","peer_id":...,"addrs":[...]}
      per --bootstrap (dial, add to the routing table, look up our own ID through it):
                   {"event":"bootstrapped","peer_id":...,"is_dht_server":bool,"added":bool,
                    "closest":[ids],"routing_table":[ids]}  or {"event":"bootstrap_error",...}
      then "connected"/"disconnected" lines as in listen mode.  stdin commands, one a
      line, each answered by one line:
        table           {"event":"routing_table","peers":[ids]}
        value KEY       {"event":"local_value","key":...,"found":bool,"value":..,"value_hex":..}
        providers KEY   {"event":"local_providers","key":...,"providers":[{"peer_id","addrs"}]}
      Runs until stdin EOF (unless --ignore-stdin) or SIGTERM/SIGINT; exit 0.

  One-shot DHT clients (KadDHT in client mode; dial MULTIADDR/p2p/ID, add it to the routing
  table, run one operation, print one line).  Every line also carries "target",
  "target_is_dht_server", "target_in_routing_table" and "queried" (peers asked FIND_NODE).
  Values print as "value" (UTF-8 text, or null) and "value_hex".
    pypeer.py dht-put MULTIADDR KEY VALUE
      {"event":"dht-put","key":...,"stored_at":[ids that acked],"failed":[ids]}
    pypeer.py dht-get MULTIADDR KEY
      {"event":"dht-get","key":...,"found":bool,"value":...,"value_hex":...,
       "from":{peer_id:{"value":...,"value_hex":...}}}       (who answered with a record)
    pypeer.py dht-provide MULTIADDR KEY [--key-hex]
      {"event":"dht-provide","key":...,"ok":bool,"peer_id":our id,"addrs":[...],
       "sent_to":[ids]}          (listens on --host:0: a provider record needs addresses)
    pypeer.py dht-providers MULTIADDR KEY [--key-hex]
      {"event":"dht-providers","key":...,"providers":[{"peer_id","addrs"}],
       "from":{peer_id:[provider ids in its GET_PROVIDERS answer]}}
    pypeer.py dht-find MULTIADDR PEERID
      {"event":"dht-find","peer_id":...,"found":bool,"addrs":[...]}
  KEY is text (its UTF-8 bytes; --key-hex for raw bytes in provide/providers).  Value keys
  must be "/<ns>/...": a permissive last-write-wins validator is registered for each
  --namespace (default: "test"); see NOTES.md for why.

  Circuit Relay v2 (py's libp2p.relay.circuit_v2; hop /libp2p/circuit/relay/0.2.0/hop,
  stop /libp2p/circuit/relay/0.2.0/stop).  "connected" lines in these modes carry an
  extra "relayed": bool; a relayed connection has "local_addr": null and "remote_addr"
  "<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>".  Limits print as
  {"duration":s|null,"data":bytes|null} (null: field absent; the whole thing null: no
  Limit in the message).
    pypeer.py relay-server [--port N] [--host 127.0.0.1] [--max-circuit-bytes N]
                           [--max-circuit-seconds S] [--max-reservations N]
                           [--max-circuits N] [--reservation-ttl S] [--ignore-stdin]
      CircuitV2Protocol(allow_hop=True): hop + stop.  Defaults are py's (1 GiB, 3600 s,
      4 reservations, 8 circuits per reservation, TTL 3600 s).
      first line:  {"event":"listening","mode":"relay-server","peer_id":...,"addrs":[...],
                    "limits":{"duration","data","max_circuit_conns","max_reservations",
                              "reservation_ttl"}}
      then "connected"/"disconnected" lines, and for each hop request it answers:
                   {"event":"reserve","peer_id":...,"status":"OK"|...,"expire":..,"addrs":[..],
                    "voucher":hex|null,"voucher_valid":..,"voucher_error":..,"limit":{..}}
                   {"event":"connect","src":...,"dst":...,"status":"OK"|"NO_RESERVATION"|..,
                    "limit":{..}|null}
                   {"event":"circuit_closed","src":...,"dst":...,"seconds":float}
      Runs until stdin EOF (unless --ignore-stdin) or SIGTERM/SIGINT; exit 0.
    pypeer.py relay-listen RELAY_MADDR/p2p/ID [--port N] [--host 127.0.0.1] [--ignore-stdin]
      Listens on --host:--port, dials the relay and RESERVEs with py's client code
      (CircuitV2Transport._make_reservation), then accepts relayed connections with py's
      STOP handler and serves /ipfs/ping/1.0.0 and /cairn/echo/1.0.0 (read to EOF, write
      it all back, close).
      first lines: "connected" (to the relay), then
                   {"event":"reserved","relay":id,"expire":unix s|null,"addrs":[relay addrs],
                    "voucher":hex|null,"voucher_valid":bool|null,"voucher_error":str|null,
                    "limit":{..}|null,"peer_id":own id,
                    "circuit_addr":"<RELAY_MADDR>/p2p-circuit/p2p/<own id>","refresh":false}
      (voucher_valid: Signed Envelope, domain "libp2p-relay-rsvp", type 0x0302, signed by
      the relay, Voucher{relay, peer: us, expiration == expire}.)
      then per relayed connection:
                   {"event":"stop","type":"CONNECT","peer_id":initiator,"peer_addrs":[..],
                    "limit":{..}|null}        (the relay's STOP CONNECT, as received)
                   {"event":"connected",...,"relayed":true}
                   {"event":"echo","peer_id":...,"bytes":n}  (or "echo_error")
      The reservation is renewed when 3/4 of its remaining time has passed: another
      "reserved" line with "refresh":true, or {"event":"reservation_error",...} (retried
      every 5 s).  If the reservation is refused: {"event":"error","relay":..,"error":..},
      exit 1.  Runs until stdin EOF (unless --ignore-stdin) or SIGTERM/SIGINT; exit 0.
    pypeer.py relay-dial RELAY_MADDR/p2p/RELAY/p2p-circuit/p2p/TARGET [--count 3]
                         [--echo-bytes N] [--reserve] [--hold S]
      Dials the relay (dial_addr), then TARGET through it with CircuitV2Transport.dial()
      (HOP CONNECT, then Noise + Yamux over the circuit), pings --count times and, with
      --echo-bytes, writes N random bytes on /cairn/echo/1.0.0, half-closes, reads to EOF.
      {"event":"relay-dial","peer_id":target,"rtts_ms":[..],"echo_ok":bool|null,
       "relayed":bool,"relay":id,"remote_addr":...,"connect_status":"OK",
       "connect_limit":{..}|null}                  (+ "echo_error" when echo_ok is false)
      Exit 1 when echo_ok is false.  --reserve: RESERVE before CONNECT, as py's transport
      does with RelayConfig()'s default roles (off by default: see NOTES.md).
    pypeer.py dcutr-dial RELAY_MADDR/p2p/RELAY/p2p-circuit/p2p/TARGET [--wait S (default 20)]
                         [--port N] [--host 127.0.0.1] [--hold S]
      DCUtR (/libp2p/dcutr) *responder*: listens on --host:--port (TCP; that address is in
      identify and in our CONNECT), runs py's DCUtRProtocol, dials TARGET through the relay
      as relay-dial does, then waits for TARGET (the DCUtR initiator) to hole-punch.  py
      answers CONNECT with its addresses and, on SYNC, dials every address it knows for
      TARGET (CONNECT ObsAddrs + identify addresses) at once with Swarm.dial_addr() (Noise
      *initiator*), each bound to source --host:<listen port>.  py never initiates:
      its auto-drive loop, initiate_hole_punch() and unilateral direct dial are disabled.
      first line:  {"event":"relayed","peer_id":target,"relayed":true,"remote_addr":circuit,
                    "addrs":[our listen addrs]}
      then, once a direct (non-relayed) connection to TARGET exists (either direction) or
      after --wait S:
                   {"event":"dcutr-dial","peer_id":target,"direct":bool,"direct_addr":str|null,
                    "direct_local_addr":str|null,"direct_direction":"inbound"|"outbound"|null,
                    "dcutr_messages":[..],"dials":[..],"rtts_ms":[3 pings]}
      rtts_ms: over the direct connection if there is one, else over the relayed one (on
      failure rtts_ms holds what was measured, plus "ping_error").  dcutr_messages, in
      order, t_ms since the relayed connection was up:
        {"dir":"in","type":"stream","peer_id":..,"t_ms":..}     (TARGET opened /libp2p/dcutr)
        {"dir":"rx"|"tx","type":"CONNECT"|"SYNC","addrs":[ObsAddrs],"t_ms":..}
        {"dir":null,"type":"handler_done","t_ms":..}           (py's handler returned)
      dials (py's own dials to TARGET): {"addr","peer_id","source":"ip:port"|null,
        "security_role":"initiator"|"responder","t_ms","ok":bool|null,"error"?}.
      Exit 0 if direct and the pings worked, else 1 (the line is printed either way);
      errors before the result: {"event":"error","error":..,"dcutr_messages","dials"}.

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
  * KadDHT: unregistered key namespaces are "first write wins" (a second PUT_VALUE, even
    of the same value, is refused with a stream reset), so we register a last-write-wins
    validator per namespace; KadDHT.provide(str) reads a hex- or CID-looking string as
    bytes, so we call its provider store with the key's UTF-8 bytes instead.
  * Circuit relay: CircuitV2Listener's STOP handler dies on an AttributeError
    (NetStream.get_remote_peer_id), taking the connection to the relay with it, and
    would never answer the STOP CONNECT anyway, so the STOP protocol is served by
    CircuitV2Protocol._handle_stop_stream instead; the target
    records the circuit address with its *own* ID in the relay slot, so conn_info()
    rebuilds it; the transport's reservation refresher busy-loops after a failed
    refresh, so relay-listen refreshes by itself; RelayConfig()'s default roles make a
    dialer RESERVE before every CONNECT (and py's relay never frees reservations of
    disconnected peers before they expire), so relay-dial only does that with --reserve.
  * DCUtR: DCUtRProtocol.run() starts an auto-drive loop that, every 2 s, initiates a hole
    punch (first a plain direct dial to the identify addresses) toward every peer with a
    relayed connection, whichever side dialed; dcutr-dial turns that off (see
    _setup_dcutr_responder()), or py alone would upgrade the connection on loopback.
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
from libp2p.connection_types import ConnectionType  # noqa: E402
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
from libp2p.network.connection.raw_connection import RawConnection  # noqa: E402
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
KEY_TYPE = "ed25519"  # --key-type: the identity's key type (Cairn verifies all four)


def identity_key_pair():
    if KEY_TYPE == "rsa":
        from libp2p.crypto.rsa import create_new_key_pair as rsa_key_pair
        return rsa_key_pair(2048)
    if KEY_TYPE == "secp256k1":
        from libp2p.crypto.secp256k1 import create_new_key_pair as secp_key_pair
        return secp_key_pair()
    if KEY_TYPE == "ecdsa":
        from libp2p.crypto.ecc import create_new_key_pair as ecc_key_pair
        return ecc_key_pair("P-256")
    return ed25519_key_pair()


def make_host(seed_hex: str | None, listen: list[Multiaddr] | None = None,
              retries: int = 0):
    if seed_hex:
        key_pair = ed25519_key_pair(bytes.fromhex(seed_hex))  # checked in main()
    else:
        key_pair = identity_key_pair()
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
def _find_under(conn, match) -> object | None:
    """Bounded breadth-first walk over the attributes of libp2p objects under conn;
    return the first object for which match(obj) is true (or None)."""
    seen: set[int] = set()
    queue = [conn]
    steps = 0
    while queue and steps < 400:
        obj = queue.pop(0)
        steps += 1
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if match(obj):
            return obj
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


def _socket_of(conn) -> object | None:
    """Find the OS socket under a SwarmConn / muxed conn / stream.

    py-libp2p 0.8.1 only exposes the *remote* address (get_remote_address()).  The
    chain for TCP is SwarmConn.muxed_conn (Yamux) .secured_conn (SecureSession)
    .conn (NoiseTransportReadWriter) .read_writer (NoisePacketReadWriter)
    .read_write_closer (RawConnection) .stream (TrioTCPStream) .stream
    (trio.SocketStream) .socket.  Walk it generically (bounded BFS over attributes of
    libp2p objects) so small refactors do not break it.  (For a relayed connection
    this finds the socket to the *relay*; see conn_info().)
    """
    found = _find_under(conn, lambda o: isinstance(o, trio.SocketStream))
    return found.socket if found is not None else None


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


def conn_info(conn) -> tuple[bool, str | None, str | None]:
    """(relayed, local, remote) of a connection.  A relayed (/p2p-circuit) connection
    has no socket of its own: remote is "<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>"
    and local is None."""
    # The transport-level RawConnection (SecureSession is an IRawConnection too).
    raw = _find_under(conn, lambda o: isinstance(o, RawConnection))
    try:
        relayed = raw is not None and raw.get_connection_type() == ConnectionType.RELAYED
    except Exception:  # noqa: BLE001
        relayed = False
    if not relayed:
        return (False, *conn_addrs(conn))
    # The relayed RawConnection wraps the hop/stop stream (py's target side puts
    # its *own* ID in the relay slot of the address it records, so build it here):
    # <relay's transport addr>/p2p/<relay>/p2p-circuit/p2p/<remote peer>.
    remote = None
    try:
        stream = raw.stream
        relay_conn = stream.muxed_conn
        peer = getattr(getattr(conn, "muxed_conn", None), "peer_id", None)
        _, relay_addr = conn_addrs(relay_conn)
        remote = f"{relay_addr or ''}/p2p/{relay_conn.peer_id}/p2p-circuit/p2p/{peer}"
    except Exception as e:  # noqa: BLE001
        log.debug("circuit address of %r: %s", raw, _describe(e))
        try:
            addrs = raw.get_transport_addresses()
            remote = str(addrs[0]) if addrs else None
        except Exception:  # noqa: BLE001
            pass
    return True, None, remote


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
    def __init__(self, host, send_channel, identify: bool, relayed: bool = False) -> None:
        self.host = host
        self.identify = identify
        self.send = send_channel
        self.relayed = relayed  # add a "relayed" field to "connected" lines

    async def connected(self, network, conn) -> None:
        peer = getattr(conn.muxed_conn, "peer_id", None)
        relayed, local, remote = conn_info(conn)
        initiator = getattr(conn.muxed_conn, "is_initiator", None)
        line = {"event": "connected", "peer_id": str(peer),
                "direction": "outbound" if initiator else "inbound",
                "remote_addr": remote, "local_addr": local}
        if self.relayed:
            line["relayed"] = relayed
        emit(line)
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
# Kademlia DHT (py-libp2p's own KadDHT, /ipfs/kad/1.0.0)
# --------------------------------------------------------------------------------------
from libp2p.kad_dht import DHTMode, KadDHT  # noqa: E402
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID  # noqa: E402
from libp2p.records.validator import Validator  # noqa: E402
from libp2p.tools.anyio_service import background_trio_service  # noqa: E402

DEFAULT_DHT_NAMESPACES = ("test",)


class LastWriteWinsValidator(Validator):
    """Accepts any value; between two values the later one wins.

    py-libp2p 0.8.1 has no validator for custom namespaces.  An *unregistered*
    namespace (e.g. "/test/...") is accepted without validation by its
    NamespacedValidator, but select() then returns index 0, and the PUT_VALUE
    server calls select(key, [existing, new]): the first write wins, and even
    re-putting the same value is refused (stream reset, no ack).  Every caller in
    0.8.1 that compares an existing with an incoming value passes [existing, new]
    (server PUT_VALUE) or collects values in arrival order (get_value), so "the
    last index" means "the latest write".  The one exception is
    KadDHT.put_value(), which calls select(key, [new, old]) when the *local*
    store already holds a different value and then refuses; the one-shot modes
    here start with an empty store, and dht-server never calls put_value().
    """

    def validate(self, key: str, value: bytes) -> None:
        return None

    def select(self, key: str, values: list[bytes]) -> int:
        if not values:
            raise ValueError("Can't select from empty value list")
        return len(values) - 1


def make_dht(host, mode: DHTMode, namespaces) -> KadDHT:
    dht = KadDHT(host, mode)
    for ns in namespaces:
        dht.register_validator(ns, LastWriteWinsValidator())
    # py-libp2p resets (without answering) any inbound kad stream beyond 12
    # concurrent ones.  A joining node refreshing its buckets opens more than
    # that at once; raise the cap so the peer under test is judged on its
    # protocol, not on py's CPU guard.
    dht._inbound_limiter = trio.CapacityLimiter(256)
    return dht


def _key_bytes(args) -> bytes:
    return bytes.fromhex(args.key) if getattr(args, "key_hex", False) else args.key.encode("utf-8")


def _value_json(value: bytes | None) -> dict:
    if value is None:
        return {"value": None, "value_hex": None}
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"value": text, "value_hex": value.hex()}


def _peer_json(info) -> dict:
    return {"peer_id": str(info.peer_id), "addrs": [str(a) for a in info.addrs]}


async def _wait_identified(host, peer_id: ID, limit: float = 3.0) -> list[str]:
    """Wait (bounded) until the host's automatic identify has filled in the peer's
    protocols; return them (empty if identify did not finish in time)."""
    with trio.move_on_after(limit):
        while True:
            try:
                protos = host.get_peerstore().get_protocols(peer_id)
            except Exception:  # noqa: BLE001  (PeerStoreError: not known yet)
                protos = []
            if protos:
                return [str(p) for p in protos]
            await trio.sleep(0.02)
    return []


def _instrument(dht: KadDHT) -> dict:
    """Wrap the per-peer RPC helpers of this KadDHT instance, so that the JSON can
    say which peer answered what; py's high-level calls only return the result."""
    seen: dict = {"stored_at": [], "store_failed": [], "value_from": {}, "queried": [],
                  "add_provider_sent": [], "providers_from": {}}
    vs, ps, pr = dht.value_store, dht.provider_store, dht.peer_routing

    orig_store, orig_get = vs._store_at_peer, vs._get_from_peer
    orig_add, orig_getp = ps._send_add_provider, ps._get_providers_from_peer_with_closers
    orig_find = pr._query_peer_for_closest

    async def store_at_peer(peer_id, key, value, record=None):
        ok = await orig_store(peer_id, key, value, record=record)
        seen["stored_at" if ok else "store_failed"].append(str(peer_id))
        return ok

    async def get_from_peer(peer_id, key, return_record=False, return_closer_peers=False):
        res = await orig_get(peer_id, key, return_record=return_record,
                             return_closer_peers=return_closer_peers)
        rec = res[0] if isinstance(res, tuple) else res
        if rec is not None:
            val = rec.value if hasattr(rec, "value") else rec
            seen["value_from"][str(peer_id)] = _value_json(val)
        return res

    async def send_add_provider(peer_id, key):
        ok = await orig_add(peer_id, key)
        if ok:
            seen["add_provider_sent"].append(str(peer_id))
        return ok

    async def get_providers_from(peer_id, key):
        provs, closer = await orig_getp(peer_id, key)
        seen["providers_from"][str(peer_id)] = [str(p.peer_id) for p in provs]
        return provs, closer

    async def query_for_closest(peer, target_key):
        res = await orig_find(peer, target_key)
        seen["queried"].append(str(peer))
        return res

    vs._store_at_peer = store_at_peer
    vs._get_from_peer = get_from_peer
    ps._send_add_provider = send_add_provider
    ps._get_providers_from_peer_with_closers = get_providers_from
    pr._query_peer_for_closest = query_for_closest
    return seen


async def run_dht_client(args) -> int:
    """One-shot DHT operation against the peer at args.multiaddr (client mode)."""
    # Only a provider needs listen addresses (py's ADD_PROVIDER carries
    # host.get_addrs(), and servers drop providers without addresses).  The
    # other modes stay unreachable, so they are not offered to anyone as peers.
    listen = ([Multiaddr(f"/ip4/{args.host}/tcp/0")]
              if args.mode == "dht-provide" or args.listen else [])
    host = make_host(args.seed, listen or None, retries=args.retries)
    result: dict | None = None
    try:
        with trio.fail_after(args.timeout + args.hold + 5):
            async with host.run(listen_addrs=listen):
                if listen and not host.get_transport_addrs():
                    raise OSError(f"could not listen on {listen[0]}")
                dht = make_dht(host, DHTMode.CLIENT, args.namespace or DEFAULT_DHT_NAMESPACES)
                seen = _instrument(dht)
                with trio.fail_after(args.timeout):
                    target, _conn = await dial(host, args.multiaddr)
                    protos = await _wait_identified(host, target)
                    added = await dht.add_peer(target)
                    base = {"target": str(target),
                            "target_is_dht_server": str(KAD_PROTOCOL_ID) in protos,
                            "target_in_routing_table": bool(added)}
                    if args.mode == "dht-put":
                        await dht.put_value(args.key, args.value.encode("utf-8"))
                        result = {"event": "dht-put", "key": args.key,
                                  "stored_at": seen["stored_at"],
                                  "failed": seen["store_failed"]}
                    elif args.mode == "dht-get":
                        value = await dht.get_value(args.key)
                        result = {"event": "dht-get", "key": args.key,
                                  "found": value is not None, **_value_json(value),
                                  "from": seen["value_from"]}
                    elif args.mode == "dht-provide":
                        ok = await dht.provider_store.provide(_key_bytes(args))
                        result = {"event": "dht-provide", "key": args.key, "ok": ok,
                                  "peer_id": str(host.get_id()),
                                  "addrs": [str(a) for a in host.get_addrs()],
                                  "sent_to": seen["add_provider_sent"]}
                    elif args.mode == "dht-providers":
                        found = await dht.provider_store.find_providers(_key_bytes(args))
                        uniq: dict = {}
                        for p in found:
                            uniq.setdefault(str(p.peer_id), p)
                        result = {"event": "dht-providers", "key": args.key,
                                  "providers": [_peer_json(p) for p in uniq.values()],
                                  "from": seen["providers_from"]}
                    else:  # dht-find
                        want = ID.from_base58(args.peer)
                        info = await dht.find_peer(want)
                        result = {"event": "dht-find", "peer_id": args.peer,
                                  "found": info is not None,
                                  "addrs": [str(a) for a in info.addrs] if info else []}
                    result.update(base)
                    result["queried"] = seen["queried"]
                emit(result)
                if args.hold > 0:
                    await trio.sleep(args.hold)
                with trio.move_on_after(2):
                    await host.close()
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        if result is not None:
            log.debug("teardown error after result: %s", _describe(e))
            return 0
        err = f"timeout after {args.timeout:g} s" if _has(e, trio.TooSlowError) else _describe(e)
        emit({"event": "error", "error": err})
        return 1
    return 0


async def run_dht_server(args) -> int:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        try:
            return await _run_dht_server(args, sigs)
        except Exception as e:  # noqa: BLE001
            emit({"event": "error", "error": _describe(e)})
            return 1


def _routing_table_json(dht: KadDHT) -> list[str]:
    return [str(p) for p in dht.routing_table.get_peer_ids()]


async def _dht_server_commands(host, dht: KadDHT) -> None:
    """Reads commands from stdin, one a line, answering each with one JSON line;
    returns on EOF.  Commands: `table`, `value KEY`, `providers KEY`."""
    try:
        stdin = trio.lowlevel.FdStream(os.dup(0))
    except OSError as e:
        log.info("stdin unusable (%s); running until a signal", e)
        await trio.sleep_forever()
    buf = b""
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
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
                if cmd == "table":
                    emit({"event": "routing_table", "peers": _routing_table_json(dht)})
                elif cmd == "value":
                    rec = dht.value_store.get(arg.encode("utf-8"))
                    emit({"event": "local_value", "key": arg, "found": rec is not None,
                          **_value_json(rec.value if rec is not None else None)})
                elif cmd == "providers":
                    provs = dht.provider_store.get_providers(arg.encode("utf-8"))
                    emit({"event": "local_providers", "key": arg,
                          "providers": [_peer_json(p) for p in provs]})
                elif cmd:
                    emit({"event": "error", "error": f"unknown command {cmd!r}"})


async def _run_dht_server(args, sigs) -> int:
    listen = Multiaddr(f"/ip4/{args.host}/tcp/{args.port}")
    host = make_host(args.seed, [listen], retries=args.retries)
    async with host.run(listen_addrs=[listen]):
        if not host.get_transport_addrs():
            raise OSError(f"could not listen on {listen} (address in use?)")
        host.get_network().register_notifee(_ConnNotifee(host, None, False))
        dht = make_dht(host, DHTMode.SERVER, args.namespace or DEFAULT_DHT_NAMESPACES)
        async with background_trio_service(dht):
            emit({"event": "listening", "mode": "dht-server", "peer_id": str(host.get_id()),
                  "addrs": [str(a) for a in host.get_addrs()]})
            for addr in args.bootstrap or []:
                try:
                    with trio.fail_after(args.timeout):
                        peer, _conn = await dial(host, addr)
                        protos = await _wait_identified(host, peer)
                        added = await dht.add_peer(peer)
                        closest = await dht.peer_routing.find_closest_peers_network(
                            host.get_id().to_bytes())
                    emit({"event": "bootstrapped", "peer_id": str(peer),
                          "is_dht_server": str(KAD_PROTOCOL_ID) in protos,
                          "added": bool(added), "closest": [str(p) for p in closest],
                          "routing_table": _routing_table_json(dht)})
                except Exception as e:  # noqa: BLE001
                    emit({"event": "bootstrap_error", "addr": addr,
                          "error": f"timeout after {args.timeout:g} s"
                          if _has(e, trio.TooSlowError) else _describe(e)})
            async with trio.open_nursery() as nursery:
                async def stop_after(fn) -> None:
                    await fn()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_after, lambda: _wait_signal(sigs))
                if not args.ignore_stdin:
                    nursery.start_soon(stop_after, lambda: _dht_server_commands(host, dht))
        with trio.move_on_after(2) as cs:
            cs.shield = True
            try:
                await host.close()
            except Exception as e:  # noqa: BLE001
                log.debug("close: %s", _describe(e))
    return 0


# --------------------------------------------------------------------------------------
# Circuit Relay v2 (py-libp2p's libp2p.relay.circuit_v2)
# --------------------------------------------------------------------------------------
from libp2p.relay.circuit_v2.config import (  # noqa: E402
    DEFAULT_MAX_CIRCUIT_BYTES,
    DEFAULT_MAX_CIRCUIT_CONNS,
    DEFAULT_MAX_CIRCUIT_DURATION,
    DEFAULT_MAX_RESERVATIONS,
    DEFAULT_RESERVATION_TTL,
    RelayConfig,
    RelayRole,
)
from libp2p.relay.circuit_v2.pb.circuit_pb2 import (  # noqa: E402
    HopMessage,
    Status as CircuitStatus,
    StopMessage,
    Voucher as CircuitVoucher,
)
from libp2p.relay.circuit_v2.protocol import (  # noqa: E402
    PROTOCOL_ID as HOP_PROTOCOL_ID,
    STOP_PROTOCOL_ID,
    CircuitV2Protocol,
)
from libp2p.relay.circuit_v2.resources import (  # noqa: E402
    RELAY_RSVP_DOMAIN,
    VOUCHER_PAYLOAD_TYPE,
    RelayLimits,
)
from libp2p.relay.circuit_v2.transport import CircuitV2Transport  # noqa: E402

ECHO_PROTOCOL_ID = TProtocol("/cairn/echo/1.0.0")
MAX_ECHO_BYTES = 64 << 20


def _first_delimited(buf: bytes) -> bytes | None:
    """The body of the first complete uvarint-length-prefixed message in buf."""
    v = _uvarint(buf)
    if v is None or len(buf) < v[1] + v[0]:
        return None
    return bytes(buf[v[1]:v[1] + v[0]])


class _Recorder:
    """Pass-through wrapper around a stream that captures the first uvarint-delimited
    message read from it and the first one written to it (then stops recording), and
    optionally calls on_rx / on_tx with each message body.  Everything else is
    delegated, so py-libp2p code can use it in place of the stream (it also ends up
    inside py's RawConnection for a circuit; after the first messages it only
    forwards)."""

    def __init__(self, stream, on_rx=None, on_tx=None) -> None:
        self._stream = stream
        self._rx = bytearray()
        self._tx = bytearray()
        self.rx_msg: bytes | None = None
        self.tx_msg: bytes | None = None
        self._on_rx, self._on_tx = on_rx, on_tx

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        if self.rx_msg is None and data:
            self._rx += data
            self.rx_msg = _first_delimited(bytes(self._rx))
            if self.rx_msg is not None and self._on_rx is not None:
                self._on_rx(self.rx_msg)
        return data

    async def write(self, data: bytes) -> None:
        if self.tx_msg is None:
            self._tx += data
            self.tx_msg = _first_delimited(bytes(self._tx))
            if self.tx_msg is not None and self._on_tx is not None:
                self._on_tx(self.tx_msg)
        await self._stream.write(data)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _parse(cls, body: bytes | None):
    if body is None:
        return None
    msg = cls()
    try:
        msg.ParseFromString(body)
    except Exception:  # noqa: BLE001
        return None
    return msg


def _status_name(msg) -> str | None:
    if msg is None or not msg.HasField("status"):
        return None
    try:
        return CircuitStatus.Name(msg.status)
    except ValueError:
        return str(msg.status)


def _limit_json(msg) -> dict | None:
    if msg is None or not msg.HasField("limit"):
        return None
    lim = msg.limit
    return {"duration": lim.duration if lim.HasField("duration") else None,
            "data": lim.data if lim.HasField("data") else None}


def _peer_field_json(msg) -> tuple[str | None, list[str]]:
    if msg is None or not msg.HasField("peer"):
        return None, []
    try:
        pid = str(ID(msg.peer.id))
    except Exception:  # noqa: BLE001
        pid = "invalid:" + msg.peer.id.hex()
    return pid, [_maddr_text(a) for a in msg.peer.addrs]


def check_voucher(data: bytes, relay: ID, peer: ID, expire: int | None) -> str | None:
    """None if data is a valid reservation voucher (Signed Envelope, domain
    "libp2p-relay-rsvp", payload type 0x0302, signed by the relay, Voucher{relay,
    peer, expiration == expire}); otherwise what is wrong."""
    try:
        env = unmarshal_envelope(data)
    except Exception as e:  # noqa: BLE001
        return f"decode envelope: {_describe(e)}"
    if bytes(env.payload_type) != VOUCHER_PAYLOAD_TYPE:
        return f"payload type {bytes(env.payload_type).hex()} != 0302"
    try:
        env.validate(RELAY_RSVP_DOMAIN)
    except Exception as e:  # noqa: BLE001
        return f"signature: {_describe(e)}"
    if ID.from_pubkey(env.public_key) != relay:
        return "signed by another key than the relay's"
    v = CircuitVoucher()
    try:
        v.ParseFromString(bytes(env.raw_payload))
        v_relay, v_peer = ID(v.relay), ID(v.peer)
    except Exception as e:  # noqa: BLE001
        return f"decode voucher: {_describe(e)}"
    if v_relay != relay:
        return f"voucher relay {v_relay} != {relay}"
    if v_peer != peer:
        return f"voucher peer {v_peer} != {peer}"
    if expire is not None and v.expiration != expire:
        return f"voucher expiration {v.expiration} != reservation expire {expire}"
    return None


def _reservation_json(resp, relay: ID, me: ID) -> dict:
    rsvp = resp.reservation if resp is not None and resp.HasField("reservation") else None
    expire = rsvp.expire if rsvp is not None and rsvp.HasField("expire") else None
    voucher = bytes(rsvp.voucher) if rsvp is not None and rsvp.HasField("voucher") else b""
    verr = check_voucher(voucher, relay, me, expire) if voucher else None
    return {"expire": expire,
            "addrs": [_maddr_text(a) for a in rsvp.addrs] if rsvp is not None else [],
            "voucher": voucher.hex() if voucher else None,
            "voucher_valid": (verr is None) if voucher else None,
            "voucher_error": verr,
            "limit": _limit_json(resp)}


# ---- relay-server --------------------------------------------------------------------
def _instrument_relay(protocol: CircuitV2Protocol) -> None:
    """Wrap this CircuitV2Protocol's RESERVE / CONNECT handlers (instance attributes;
    _handle_hop_stream looks them up on self) so that each answer the relay writes is
    also printed.  The handlers themselves run unchanged, on a _Recorder."""
    orig_reserve, orig_connect = protocol._handle_reserve, protocol._handle_connect

    async def handle_reserve(stream, msg) -> None:
        remote = stream.muxed_conn.peer_id
        asked_for, _ = _peer_field_json(msg)

        def on_tx(body: bytes) -> None:
            resp = _parse(HopMessage, body)
            line = {"event": "reserve", "peer_id": str(remote), "status": _status_name(resp)}
            if asked_for is not None and asked_for != str(remote):
                line["for_peer"] = asked_for  # py reserves for msg.peer if present
            line.update(_reservation_json(resp, protocol.host.get_id(), remote))
            emit(line)

        await orig_reserve(_Recorder(stream, on_tx=on_tx), msg)

    async def handle_connect(stream, msg) -> None:
        src = stream.muxed_conn.peer_id
        dst, _ = _peer_field_json(msg)
        t0 = time.monotonic()
        state = {"status": None}

        def on_tx(body: bytes) -> None:
            resp = _parse(HopMessage, body)
            state["status"] = _status_name(resp)
            emit({"event": "connect", "src": str(src), "dst": dst,
                  "status": state["status"], "limit": _limit_json(resp)})

        try:
            await orig_connect(_Recorder(stream, on_tx=on_tx), msg)
        finally:
            if state["status"] == "OK":
                emit({"event": "circuit_closed", "src": str(src), "dst": dst,
                      "seconds": round(time.monotonic() - t0, 3)})

    protocol._handle_reserve = handle_reserve
    protocol._handle_connect = handle_connect


async def run_relay_server(args) -> int:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        try:
            return await _run_relay_server(args, sigs)
        except Exception as e:  # noqa: BLE001
            emit({"event": "error", "error": _describe(e)})
            return 1


async def _run_until_stopped(args, sigs, *tasks) -> None:
    """Run tasks until a signal or (unless --ignore-stdin) stdin EOF."""
    async with trio.open_nursery() as nursery:
        async def stop_after(fn) -> None:
            await fn()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_after, lambda: _wait_signal(sigs))
        if not args.ignore_stdin:
            nursery.start_soon(stop_after, _wait_stdin_eof)
        for t in tasks:
            nursery.start_soon(t)


async def _close_host(host) -> None:
    with trio.move_on_after(2) as cs:
        cs.shield = True
        try:
            await host.close()
        except Exception as e:  # noqa: BLE001
            log.debug("close: %s", _describe(e))


async def _run_relay_server(args, sigs) -> int:
    listen = Multiaddr(f"/ip4/{args.host}/tcp/{args.port}")
    host = make_host(args.seed, [listen], retries=args.retries)
    limits = RelayLimits(duration=args.max_circuit_seconds, data=args.max_circuit_bytes,
                         max_circuit_conns=args.max_circuits,
                         max_reservations=args.max_reservations,
                         reservation_ttl=args.reservation_ttl)
    async with host.run(listen_addrs=[listen]):
        if not host.get_transport_addrs():
            raise OSError(f"could not listen on {listen} (address in use?)")
        host.get_network().register_notifee(_ConnNotifee(host, None, False, relayed=True))
        protocol = CircuitV2Protocol(host, limits=limits, allow_hop=True)
        _instrument_relay(protocol)
        # run() registers the hop and stop handlers, then waits.
        async with background_trio_service(protocol):
            await protocol.event_started.wait()
            emit({"event": "listening", "mode": "relay-server",
                  "peer_id": str(host.get_id()),
                  "addrs": [str(a) for a in host.get_addrs()],
                  "limits": {"duration": limits.duration, "data": limits.data,
                             "max_circuit_conns": limits.max_circuit_conns,
                             "max_reservations": limits.max_reservations,
                             "reservation_ttl": limits.reservation_ttl}})
            await _run_until_stopped(args, sigs)
        await _close_host(host)
    return 0


# ---- relay-listen --------------------------------------------------------------------
async def _echo_handler(stream) -> None:
    """/cairn/echo/1.0.0: read until EOF, write it all back, close."""
    peer = stream.muxed_conn.peer_id
    buf = bytearray()
    try:
        while True:
            try:
                chunk = await stream.read(65536)
            except StreamEOF:
                break
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_ECHO_BYTES:
                raise ValueError(f"echo larger than {MAX_ECHO_BYTES} bytes")
        await stream.write(bytes(buf))
        await stream.close()
        emit({"event": "echo", "peer_id": str(peer), "bytes": len(buf)})
    except Exception as e:  # noqa: BLE001
        emit({"event": "echo_error", "peer_id": str(peer), "bytes": len(buf),
              "error": _describe(e)})
        with trio.move_on_after(1):
            try:
                await stream.reset()
            except Exception:  # noqa: BLE001
                pass


async def reserve_on(host, transport: CircuitV2Transport, relay: ID) -> tuple[bool, object]:
    """One RESERVE with py's own client code (CircuitV2Transport._make_reservation:
    sends HopMessage{type: RESERVE, peer: {id: <own id>}}, reads the answer) on a new
    hop stream, which is then closed as py's client does.  Returns (ok, the relay's
    HopMessage or None)."""
    stream = await host.new_stream(relay, [HOP_PROTOCOL_ID])
    rec = _Recorder(stream)
    try:
        ok = await transport._make_reservation(rec, relay)
    finally:
        with trio.move_on_after(2) as cs:
            cs.shield = True
            try:
                await stream.close()
            except Exception:  # noqa: BLE001
                pass
    return ok, _parse(HopMessage, rec.rx_msg)


async def run_relay_listen(args) -> int:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
        try:
            return await _run_relay_listen(args, sigs)
        except Exception as e:  # noqa: BLE001
            err = (f"timeout after {args.timeout:g} s" if _has(e, trio.TooSlowError)
                   else _describe(e))
            emit({"event": "error", "error": err})
            return 1


async def _run_relay_listen(args, sigs) -> int:
    relay_info = info_from_p2p_addr(Multiaddr(args.multiaddr))
    relay = relay_info.peer_id
    listen = Multiaddr(f"/ip4/{args.host}/tcp/{args.port}")
    host = make_host(args.seed, [listen], retries=args.retries)
    me = host.get_id()
    async with host.run(listen_addrs=[listen]):
        if not host.get_transport_addrs():
            raise OSError(f"could not listen on {listen} (address in use?)")
        host.get_network().register_notifee(_ConnNotifee(host, None, False, relayed=True))
        protocol = CircuitV2Protocol(host, allow_hop=False)
        transport = CircuitV2Transport(host, protocol, RelayConfig())

        def on_stop(body: bytes) -> None:
            msg = _parse(StopMessage, body)
            pid, paddrs = _peer_field_json(msg)
            emit({"event": "stop",
                  "type": (StopMessage.Type.Name(msg.type)
                           if msg is not None and msg.HasField("type") else None),
                  "peer_id": pid, "peer_addrs": paddrs, "limit": _limit_json(msg)})

        async def stop_handler(stream) -> None:
            # py's own STOP handler (read CONNECT, answer STATUS OK, upgrade the stream
            # as an inbound connection: Noise + Yamux, added to the swarm); the
            # recorder only reports the CONNECT it read.
            await protocol._handle_stop_stream(_Recorder(stream, on_rx=on_stop))

        host.set_stream_handler(STOP_PROTOCOL_ID, stop_handler)
        host.set_stream_handler(ECHO_PROTOCOL_ID, _echo_handler)

        with trio.fail_after(args.timeout):
            await dial(host, args.multiaddr)
            ok, resp = await reserve_on(host, transport, relay)
        if not ok:
            emit({"event": "error", "relay": str(relay),
                  "error": (f"reservation refused: {_status_name(resp)}" if resp is not None
                            else "reservation failed (no answer; see stderr)")})
            await _close_host(host)
            return 1
        first = {"event": "reserved", "relay": str(relay)}
        first.update(_reservation_json(resp, relay, me))
        first.update({"peer_id": str(me),
                      "circuit_addr": f"{args.multiaddr}/p2p-circuit/p2p/{me}",
                      "refresh": False})
        emit(first)

        async def refresher() -> None:
            # py's CircuitV2Transport.reserve() starts _refresh_reservations_worker,
            # which re-reserves 30 s before expiry but busy-loops (sleep(0)) when a
            # refresh fails.  Ours: refresh when 3/4 of the remaining time has passed,
            # retry every 5 s on failure.
            expire = first["expire"]
            while expire:
                await trio.sleep(max(1.0, (expire - time.time()) * 0.75))
                try:
                    with trio.fail_after(args.timeout):
                        ok, resp = await reserve_on(host, transport, relay)
                except Exception as e:  # noqa: BLE001
                    ok, resp = False, None
                    log.info("refresh: %s", _describe(e))
                if ok:
                    line = {"event": "reserved", "relay": str(relay)}
                    line.update(_reservation_json(resp, relay, me))
                    line.update({"peer_id": str(me), "circuit_addr": first["circuit_addr"],
                                 "refresh": True})
                    emit(line)
                    expire = line["expire"]
                else:
                    emit({"event": "reservation_error", "relay": str(relay),
                          "status": _status_name(resp), "refresh": True})
                    await trio.sleep(5)

        await _run_until_stopped(args, sigs, refresher)
        await _close_host(host)
    return 0


# ---- relay-dial ----------------------------------------------------------------------
class _HopRecordingHost:
    """Delegates to a host, but wraps every hop stream it opens in a _Recorder, so the
    relay's answer to CONNECT (read inside CircuitV2Transport) can be reported."""

    def __init__(self, host) -> None:
        self._host = host
        self.hop_streams: list[_Recorder] = []

    async def new_stream(self, peer_id, protocol_ids):
        stream = await self._host.new_stream(peer_id, protocol_ids)
        if HOP_PROTOCOL_ID in [str(p) for p in protocol_ids]:
            stream = _Recorder(stream)
            self.hop_streams.append(stream)
        return stream

    def __getattr__(self, name: str):
        return getattr(self._host, name)


async def echo_over(stream, n: int) -> tuple[bool, int]:
    payload = secrets.token_bytes(n)
    await stream.write(payload)
    await stream.close_write()
    got = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except StreamEOF:
            break
        if not chunk:
            break
        got += chunk
        if len(got) > n:
            break
    return bytes(got) == payload, len(got)


async def run_relay_dial(args) -> int:
    host = make_host(args.seed, retries=args.retries)
    result: dict | None = None
    echo_ok: bool | None = None
    try:
        with trio.fail_after(args.timeout + args.hold + 5):
            async with host.run(listen_addrs=[]):
                with trio.fail_after(args.timeout):
                    maddr = Multiaddr(args.multiaddr)
                    rhost = _HopRecordingHost(host)
                    # RelayConfig's default roles (STOP|CLIENT) make the transport
                    # RESERVE on the relay before every CONNECT; only with --reserve.
                    roles = (RelayRole.STOP | RelayRole.CLIENT) if args.reserve \
                        else RelayRole.STOP
                    transport = CircuitV2Transport(
                        rhost, CircuitV2Protocol(host, allow_hop=False),
                        RelayConfig(roles=roles))
                    try:
                        relay_ma, target = transport.parse_circuit_ma(maddr)
                    except ValueError as e:
                        raise ValueError(f"not a circuit address: {e}") from None
                    # Connect to the relay first with dial_addr (no 250 ms wait); the
                    # transport's host.connect() then reuses that connection.
                    await dial(host, str(relay_ma))
                    conn = await transport.dial(maddr)
                    connect = rhost.hop_streams[-1] if rhost.hop_streams else None
                    resp = _parse(HopMessage, connect.rx_msg) if connect else None
                    relayed, _local, remote = conn_info(conn)
                    stream = await host.new_stream(target, [PING_PROTOCOL_ID])
                    rtts = [round(await ping_once(stream), 3) for _ in range(args.count)]
                    await stream.close()
                    echo_err = None
                    if args.echo_bytes is not None:
                        stream = await host.new_stream(target, [ECHO_PROTOCOL_ID])
                        try:
                            echo_ok, got = await echo_over(stream, args.echo_bytes)
                            if not echo_ok:
                                echo_err = f"got {got} bytes back, not the {args.echo_bytes} sent"
                        except Exception as e:  # noqa: BLE001
                            echo_ok, echo_err = False, _describe(e)
                    result = {"event": "relay-dial", "peer_id": str(target),
                              "rtts_ms": rtts, "echo_ok": echo_ok, "relayed": relayed,
                              "relay": relay_ma.get_peer_id(), "remote_addr": remote,
                              "connect_status": _status_name(resp),
                              "connect_limit": _limit_json(resp)}
                    if echo_err is not None:
                        result["echo_error"] = echo_err
                emit(result)
                if args.hold > 0:
                    await trio.sleep(args.hold)
                with trio.move_on_after(2):
                    await host.close()
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        if result is not None:
            log.debug("teardown error after result: %s", _describe(e))
            return 0 if echo_ok is not False else 1
        err = f"timeout after {args.timeout:g} s" if _has(e, trio.TooSlowError) else _describe(e)
        emit({"event": "error", "error": err})
        return 1
    return 0 if echo_ok is not False else 1


# ---- dcutr-dial ----------------------------------------------------------------------
from libp2p.relay.circuit_v2.dcutr import (  # noqa: E402
    PROTOCOL_ID as DCUTR_PROTOCOL_ID,
    DCUtRProtocol,
)
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch  # noqa: E402
from libp2p.protocol_muxer.multiselect_communicator import (  # noqa: E402
    MultiselectCommunicator,
)


class _DelimitedTap:
    """Pass-through wrapper around a stream that reports *every* uvarint-delimited
    message read from / written to it as on_msg("rx"|"tx", body)."""

    def __init__(self, stream, on_msg) -> None:
        self._stream = stream
        self._on_msg = on_msg
        self._bufs = {"rx": bytearray(), "tx": bytearray()}

    def _feed(self, direction: str, data: bytes) -> None:
        buf = self._bufs[direction]
        buf += data
        while True:
            v = _uvarint(bytes(buf[:10]))
            if v is None or len(buf) < v[1] + v[0]:
                return
            body = bytes(buf[v[1]:v[1] + v[0]])
            del buf[:v[1] + v[0]]
            self._on_msg(direction, body)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        if data:
            self._feed("rx", data)
        return data

    async def write(self, data: bytes) -> None:
        self._feed("tx", data)
        await self._stream.write(data)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _holepunch_json(direction: str, body: bytes, t_ms: float) -> dict:
    msg = _parse(HolePunch, body)
    if msg is None:
        return {"dir": direction, "type": None, "raw_hex": body.hex(), "t_ms": t_ms}
    try:
        kind = HolePunch.Type.Name(msg.type)
    except ValueError:
        kind = str(msg.type)
    return {"dir": direction, "type": kind, "addrs": [_maddr_text(a) for a in msg.ObsAddrs],
            "t_ms": t_ms}


def _direct_conns(host, peer: ID) -> list:
    """Open, non-relayed connections to peer."""
    out = []
    for conn in host.get_network().get_connections(peer):
        if getattr(conn, "is_closed", False):
            continue
        relayed, _, _ = conn_info(conn)
        try:
            relayed = relayed or conn.get_connection_type() == ConnectionType.RELAYED
        except Exception:  # noqa: BLE001
            pass
        if not relayed:
            out.append(conn)
    return out


async def _open_on(host, conn, protocol: TProtocol):
    """A stream for `protocol` on this very connection (host.new_stream() picks a
    connection itself)."""
    stream = await conn.new_stream()
    await host.multiselect_client.select_one_of(
        [protocol], MultiselectCommunicator(stream), 10)
    stream.set_protocol(protocol)
    return stream


def _setup_dcutr_responder(host, protocol: DCUtRProtocol, t0: list, target: list,
                           messages: list, dials: list) -> None:
    """Make py's DCUtRProtocol a pure responder and log what it does.  Instance
    attributes only (run() registers self._handle_dcutr_stream, and the other
    methods are looked up on self too):
      * _auto_drive_loop: no-op.  py's run() starts a loop that calls
        initiate_hole_punch() every 2 s for each peer that has a relayed connection
        (first a unilateral direct dial to its identify addresses, then DCUtR as
        initiator); we must leave initiating to the remote.
      * initiate_hole_punch / _try_unilateral_upgrade: refuse (belt and braces).
      * _handle_dcutr_stream: py's own handler, run on a _DelimitedTap that records
        every message.
      * _get_observed_addrs: py's own answer plus any of our TCP listen addresses it
        left out (py's ObservedAddrManager drops loopback observations and, when it
        has non-loopback ones, offers only "<observed ip>/tcp/<listen port>").
      * network.dial_addr / dial_addr_as_responder: dials to target[0] are recorded
        (address, source, security role, outcome).
    """
    async def no_auto_drive() -> None:
        return None

    async def no_initiate(peer_id) -> bool:
        log.info("dcutr-dial: refusing to initiate a hole punch to %s", peer_id)
        return False

    async def no_unilateral(peer_id) -> bool:
        return False

    orig_handle = protocol._handle_dcutr_stream
    orig_obs = protocol._get_observed_addrs

    def now_ms() -> float:
        return round((time.monotonic() - t0[0]) * 1000.0, 1)

    async def handle(stream) -> None:
        def on_msg(direction: str, body: bytes) -> None:
            messages.append(_holepunch_json(direction, body, now_ms()))
        messages.append({"dir": "in", "type": "stream", "peer_id":
                         str(stream.muxed_conn.peer_id), "t_ms": now_ms()})
        try:
            await orig_handle(_DelimitedTap(stream, on_msg))
        finally:
            messages.append({"dir": None, "type": "handler_done", "t_ms": now_ms()})

    async def observed_addrs() -> list[bytes]:
        out = list(await orig_obs())
        for a in host.get_transport_addrs():
            if ("/p2p-circuit" in str(a) or "/tcp/" not in str(a)
                    or str(a).startswith(("/ip4/0.0.0.0/", "/ip6/::/"))):
                continue
            b = Multiaddr(str(a)).to_bytes()
            if b not in out:
                log.info("dcutr-dial: adding listen address %s to our CONNECT", a)
                out.append(b)
        return out

    protocol._auto_drive_loop = no_auto_drive
    protocol.initiate_hole_punch = no_initiate
    protocol._try_unilateral_upgrade = no_unilateral
    protocol._handle_dcutr_stream = handle
    protocol._get_observed_addrs = observed_addrs

    network = host.get_network()
    for name, role in (("dial_addr", "initiator"), ("dial_addr_as_responder", "responder")):
        orig = getattr(network, name)

        def wrap(orig=orig, role=role):
            async def dial_recorded(addr, peer_id, source=None):
                if target[0] is None or peer_id != target[0]:
                    return await orig(addr, peer_id, source)  # e.g. the relay
                rec = {"addr": str(addr), "peer_id": str(peer_id),
                       "source": f"{source[0]}:{source[1]}" if source else None,
                       "security_role": role, "t_ms": now_ms(), "ok": None}
                dials.append(rec)
                try:
                    conn = await orig(addr, peer_id, source)
                except BaseException as e:
                    rec["ok"] = False
                    rec["error"] = "cancelled" if _has(e, trio.Cancelled) else _describe(e)
                    raise
                rec["ok"] = True
                return conn
            return dial_recorded

        setattr(network, name, wrap())


async def run_dcutr_dial(args) -> int:
    listen = Multiaddr(f"/ip4/{args.host}/tcp/{args.port}")
    host = make_host(args.seed, [listen], retries=args.retries)
    result: dict | None = None
    t0 = [time.monotonic()]
    target_box: list = [None]
    messages: list[dict] = []
    dials: list[dict] = []
    try:
        with trio.fail_after(args.timeout + args.wait + 10):
            async with host.run(listen_addrs=[listen]):
                if not host.get_transport_addrs():
                    raise OSError(f"could not listen on {listen} (address in use?)")
                protocol = DCUtRProtocol(host)
                _setup_dcutr_responder(host, protocol, t0, target_box, messages, dials)
                async with background_trio_service(protocol):
                    await protocol.event_started.wait()
                    with trio.fail_after(args.timeout):
                        maddr = Multiaddr(args.multiaddr)
                        transport = CircuitV2Transport(
                            host, CircuitV2Protocol(host, allow_hop=False),
                            RelayConfig(roles=RelayRole.STOP))
                        try:
                            relay_ma, target = transport.parse_circuit_ma(maddr)
                        except ValueError as e:
                            raise ValueError(f"not a circuit address: {e}") from None
                        target_box[0] = target
                        await dial(host, str(relay_ma))
                        conn = await transport.dial(maddr)
                        t0[0] = time.monotonic()
                        relayed, _local, remote = conn_info(conn)
                    emit({"event": "relayed", "peer_id": str(target), "relayed": relayed,
                          "remote_addr": remote, "addrs": [str(a) for a in host.get_addrs()]})
                    direct = []
                    with trio.move_on_after(args.wait):
                        while True:
                            direct = _direct_conns(host, target)
                            if direct:
                                break
                            await trio.sleep(0.05)
                    dlocal = dremote = ddir = ping_err = None
                    rtts: list[float] = []
                    try:
                        with trio.fail_after(args.timeout):
                            if direct:
                                dconn = direct[0]
                                _, dlocal, dremote = conn_info(dconn)
                                ddir = ("outbound" if getattr(dconn.muxed_conn,
                                                              "is_initiator", False)
                                        else "inbound")
                                stream = await _open_on(host, dconn, PING_PROTOCOL_ID)
                            else:
                                stream = await host.new_stream(target, [PING_PROTOCOL_ID])
                            for _ in range(3):
                                rtts.append(round(await ping_once(stream), 3))
                            await stream.close()
                    except Exception as e:  # noqa: BLE001
                        ping_err = (f"timeout after {args.timeout:g} s"
                                    if _has(e, trio.TooSlowError) else _describe(e))
                    result = {"event": "dcutr-dial", "peer_id": str(target),
                              "direct": bool(direct), "direct_addr": dremote,
                              "direct_local_addr": dlocal, "direct_direction": ddir,
                              "dcutr_messages": list(messages), "dials": list(dials),
                              "rtts_ms": rtts}
                    if ping_err is not None:
                        result["ping_error"] = ping_err
                    emit(result)
                    if args.hold > 0:
                        await trio.sleep(args.hold)
                    with trio.move_on_after(2):
                        await host.close()
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        if result is not None:
            log.debug("teardown error after result: %s", _describe(e))
            return 0 if result["direct"] and "ping_error" not in result else 1
        err = f"timeout after {args.timeout:g} s" if _has(e, trio.TooSlowError) else _describe(e)
        emit({"event": "error", "error": err, "dcutr_messages": messages, "dials": dials})
        return 1
    return 0 if result["direct"] and "ping_error" not in result else 1


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", help="32-byte hex seed for a deterministic Ed25519 key")
    common.add_argument("--key-type", default="ed25519", choices=["ed25519", "rsa", "secp256k1", "ecdsa"],
                        help="identity key type (without --seed)")
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
    ns_help = ("register a permissive last-write-wins validator for this key namespace "
               "(repeatable; default: test)")
    pds = sub.add_parser("dht-server", parents=[common])
    pds.add_argument("--port", type=int, default=0)
    pds.add_argument("--host", default="127.0.0.1")
    pds.add_argument("--bootstrap", action="append", metavar="MADDR",
                     help="dial this peer (…/p2p/ID), add it to the routing table and "
                          "look up our own ID through it (repeatable)")
    pds.add_argument("--namespace", action="append", help=ns_help)
    pds.add_argument("--ignore-stdin", action="store_true",
                     help="do not read commands from stdin nor stop on its EOF")
    for mode, extra in (("dht-put", ("key", "value")), ("dht-get", ("key",)),
                        ("dht-provide", ("key",)), ("dht-providers", ("key",)),
                        ("dht-find", ("peer",))):
        pd = sub.add_parser(mode, parents=[common])
        pd.add_argument("multiaddr")
        for name in extra:
            pd.add_argument(name)
        if mode in ("dht-provide", "dht-providers"):
            pd.add_argument("--key-hex", action="store_true",
                            help="KEY is hex for raw bytes (default: its UTF-8 bytes)")
        pd.add_argument("--namespace", action="append", help=ns_help)
        pd.add_argument("--host", default="127.0.0.1",
                        help="listen host when listening (dht-provide, --listen)")
        pd.add_argument("--listen", action="store_true",
                        help="listen on HOST:0 (dht-provide always does)")
        pd.add_argument("--hold", type=float, default=0.0,
                        help="keep running this many seconds after the result")
    prs = sub.add_parser("relay-server", parents=[common])
    prs.add_argument("--port", type=int, default=0)
    prs.add_argument("--host", default="127.0.0.1")
    prs.add_argument("--max-circuit-bytes", type=int, default=DEFAULT_MAX_CIRCUIT_BYTES,
                     help="Limit.data: bytes per circuit, both directions together "
                          f"(default {DEFAULT_MAX_CIRCUIT_BYTES}; 0 is broken in py)")
    prs.add_argument("--max-circuit-seconds", type=int,
                     default=DEFAULT_MAX_CIRCUIT_DURATION,
                     help=f"Limit.duration (default {DEFAULT_MAX_CIRCUIT_DURATION}; 0 = none)")
    prs.add_argument("--max-reservations", type=int, default=DEFAULT_MAX_RESERVATIONS,
                     help=f"reservations held at once (default {DEFAULT_MAX_RESERVATIONS})")
    prs.add_argument("--max-circuits", type=int, default=DEFAULT_MAX_CIRCUIT_CONNS,
                     help="concurrent circuits per reservation "
                          f"(default {DEFAULT_MAX_CIRCUIT_CONNS})")
    prs.add_argument("--reservation-ttl", type=int, default=DEFAULT_RESERVATION_TTL,
                     help=f"reservation lifetime in seconds (default {DEFAULT_RESERVATION_TTL})")
    prs.add_argument("--ignore-stdin", action="store_true",
                     help="do not stop on stdin EOF (only on SIGTERM/SIGINT)")
    prl = sub.add_parser("relay-listen", parents=[common])
    prl.add_argument("multiaddr", help="the relay, MULTIADDR/p2p/ID")
    prl.add_argument("--port", type=int, default=0)
    prl.add_argument("--host", default="127.0.0.1")
    prl.add_argument("--ignore-stdin", action="store_true",
                     help="do not stop on stdin EOF (only on SIGTERM/SIGINT)")
    prd = sub.add_parser("relay-dial", parents=[common])
    prd.add_argument("multiaddr", help="RELAY_MADDR/p2p/RELAY/p2p-circuit/p2p/TARGET")
    prd.add_argument("--count", type=int, default=3)
    prd.add_argument("--echo-bytes", type=int, default=None,
                     help="also send this many random bytes over /cairn/echo/1.0.0")
    prd.add_argument("--reserve", action="store_true",
                     help="let py's transport RESERVE on the relay before CONNECT "
                          "(what RelayConfig()'s default roles do)")
    prd.add_argument("--hold", type=float, default=0.0,
                     help="keep the connection open this many seconds after the result")
    pdd = sub.add_parser("dcutr-dial", parents=[common])
    pdd.add_argument("multiaddr", help="RELAY_MADDR/p2p/RELAY/p2p-circuit/p2p/TARGET")
    pdd.add_argument("--wait", type=float, default=20.0,
                     help="seconds to wait for a direct connection (default 20)")
    pdd.add_argument("--port", type=int, default=0)
    pdd.add_argument("--host", default="127.0.0.1")
    pdd.add_argument("--hold", type=float, default=0.0,
                     help="keep running this many seconds after the result")
    args = p.parse_args(argv)
    global KEY_TYPE
    KEY_TYPE = getattr(args, "key_type", "ed25519")
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
    if args.mode == "dht-server":
        return trio.run(run_dht_server, args)
    if args.mode == "relay-server":
        return trio.run(run_relay_server, args)
    if args.mode == "relay-listen":
        return trio.run(run_relay_listen, args)
    if args.mode == "relay-dial":
        return trio.run(run_relay_dial, args)
    if args.mode == "dcutr-dial":
        return trio.run(run_dcutr_dial, args)
    if args.mode.startswith("dht-"):
        return trio.run(run_dht_client, args)
    return trio.run(run_dial_mode, args)


if __name__ == "__main__":
    sys.exit(main())
