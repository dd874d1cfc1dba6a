#!/usr/bin/env python3
"""A STUN Binding responder for the NAT lab's UPnP routers (see natlab.sh `upnpd`).

miniupnpd 2.3.1 will not forward ports while its WAN address is in a reserved range such as the
lab's 198.18.0.0/15; with `ext_perform_stun=yes` it asks a STUN server for its public address
instead and then trusts the answer. This responder answers every Binding request from its one
socket (ignoring CHANGE-REQUEST, which miniupnpd's check accepts) with XOR-MAPPED-ADDRESS: the
sender's real address, or with --claim IP that IP (a gateway that will then lie about its
external address). Lab use only: it binds the address it is given and nothing else.

usage: lab-stun-responder.py BIND_IP PORT [--claim IP]
"""
import socket
import struct
import sys


def main():
    if len(sys.argv) not in (3, 5) or (len(sys.argv) == 5 and sys.argv[3] != "--claim"):
        sys.exit(__doc__)
    bind_ip, port = sys.argv[1], int(sys.argv[2])
    claim = sys.argv[4] if len(sys.argv) == 5 else None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind_ip, port))
    print("ready", flush=True)
    while True:
        data, (ip, sport) = s.recvfrom(2048)
        # A Binding request: type 0x0001, magic cookie 0x2112A442, 20-byte header.
        if len(data) < 20 or data[0:2] != b"\x00\x01" or data[4:8] != b"\x21\x12\xa4\x42":
            continue
        mapped_ip = claim or ip
        xport = sport ^ 0x2112
        xip = struct.unpack("!I", socket.inet_aton(mapped_ip))[0] ^ 0x2112A442
        attr = struct.pack("!HHBBHI", 0x0020, 8, 0, 1, xport, xip)
        s.sendto(struct.pack("!HH", 0x0101, len(attr)) + data[4:20] + attr, (ip, sport))


if __name__ == "__main__":
    main()
