#!/usr/bin/env python3
"""Writes the BGP seeds of fuzz/corpus/bgp_message and bgp_session: the
messages of RFC 4271 (OPEN, UPDATE, NOTIFICATION, KEEPALIVE), RFC 2918
(ROUTE-REFRESH), with the capabilities and path attributes of RFC 5492,
4760, 6793, 4724, 1997, 4456, 4360 and 8092, byte by byte as the RFCs
lay them out. Run from the repository root: python3 fuzz/seeds/bgp.py"""
import ipaddress
import os
import struct


def msg(kind, body):
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


def cap(code, value=b""):
    return struct.pack("!BB", code, len(value)) + value


def open_msg(asn, bgp_id, hold=90, caps=None, asn4=True):
    if caps is None:
        caps = [
            cap(1, struct.pack("!HBB", 1, 0, 1)),  # MP IPv4 unicast
            cap(1, struct.pack("!HBB", 2, 0, 1)),  # MP IPv6 unicast
            cap(2),  # route refresh
            cap(70),  # enhanced route refresh
            cap(64, struct.pack("!H", 0x8000 | 120) + struct.pack("!HBB", 1, 1, 0x80)
                + struct.pack("!HBB", 2, 1, 0x00)),  # graceful restart
        ]
        if asn4:
            caps.append(cap(65, struct.pack("!I", asn)))
    params = b"".join(struct.pack("!BB", 2, len(c)) + c for c in caps)
    my_as = asn if asn < 65536 else 23456
    body = struct.pack("!BHH", 4, my_as, hold) + ipaddress.IPv4Address(bgp_id).packed
    return msg(1, body + struct.pack("!B", len(params)) + params)


def attr(flags, code, value):
    if flags & 0x10:
        return struct.pack("!BBH", flags, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def prefix(net):
    n = ipaddress.ip_network(net)
    nbytes = (n.prefixlen + 7) // 8
    return struct.pack("!B", n.prefixlen) + n.network_address.packed[:nbytes]


def update(withdrawn=(), attrs=(), nlri=()):
    w = b"".join(prefix(p) for p in withdrawn)
    a = b"".join(attrs)
    n = b"".join(prefix(p) for p in nlri)
    return msg(2, struct.pack("!H", len(w)) + w + struct.pack("!H", len(a)) + a + n)


def as_path(asns, four=True, kind=2):
    fmt = "!I" if four else "!H"
    return struct.pack("!BB", kind, len(asns)) + b"".join(struct.pack(fmt, a) for a in asns)


KEEPALIVE = msg(4, b"")


def v4_update(four=True, first_as=65001):
    return update(
        attrs=[
            attr(0x40, 1, b"\x00"),  # ORIGIN IGP
            attr(0x50, 2, as_path([first_as, 65010], four) + as_path([65020, 65021], four, kind=1)),
            attr(0x40, 3, ipaddress.IPv4Address("10.0.0.2").packed),
            attr(0x80, 4, struct.pack("!I", 50)),  # MED
            attr(0x40, 5, struct.pack("!I", 200)),  # LOCAL_PREF
            attr(0x40, 6, b""),  # ATOMIC_AGGREGATE
            attr(0xC0, 7, struct.pack("!II" if four else "!HI", 65010, 0x0A000002)),  # AGGREGATOR
            attr(0xC0, 8, struct.pack("!II", 0xFDE80001, 0xFFFFFF01)),  # COMMUNITIES
            attr(0x80, 9, ipaddress.IPv4Address("10.0.0.9").packed),  # ORIGINATOR_ID
            attr(0x80, 10, ipaddress.IPv4Address("244.0.0.1").packed),  # CLUSTER_LIST
            attr(0xC0, 16, bytes.fromhex("0002fde800000064")),  # EXTENDED COMMUNITIES
            attr(0xC0, 32, struct.pack("!III", 65001, 1, 2)),  # LARGE_COMMUNITY
            attr(0xC0, 99, b"abc"),  # unknown optional transitive
        ],
        nlri=["10.244.1.0/26", "10.244.2.64/26", "192.0.2.0/24", "0.0.0.0/0"],
    )


def v6_update():
    nh = ipaddress.IPv6Address("fd00:1::2").packed + ipaddress.IPv6Address("fe80::2").packed
    nlri = prefix("fd00:10::40/122") + prefix("2001:db8::/32")
    mp = struct.pack("!HBB", 2, 1, len(nh)) + nh + b"\x00" + nlri
    return update(attrs=[attr(0x40, 1, b"\x02"), attr(0x40, 2, as_path([65001])), attr(0x90, 14, mp)])


def withdraw_update():
    mp = struct.pack("!HB", 2, 1) + prefix("fd00:10::40/122")
    return update(withdrawn=["10.244.1.0/26", "192.0.2.0/24"], attrs=[attr(0x90, 15, mp)])


def as4_update():
    # A 2-octet speaker's path: AS_TRANS in AS_PATH, the real ASNs in AS4_PATH.
    return update(
        attrs=[
            attr(0x40, 1, b"\x01"),
            attr(0x40, 2, as_path([65001, 23456, 23456], four=False)),
            attr(0x40, 3, ipaddress.IPv4Address("10.0.0.2").packed),
            attr(0xC0, 17, as_path([4200000001, 4200000002])),
            attr(0xC0, 18, struct.pack("!II", 4200000001, 0x0A000002)),  # AS4_AGGREGATOR
        ],
        nlri=["10.245.0.0/16"],
    )


EOR_V4 = update()
EOR_V6 = update(attrs=[attr(0x80, 15, struct.pack("!HB", 2, 1))])
ROUTE_REFRESH = msg(5, struct.pack("!HBB", 1, 0, 1))
NOTIFICATION = msg(3, bytes([6, 2]) + b"shutdown")  # Cease, Administrative Shutdown
OPEN_ERROR = msg(3, bytes([2, 2, 0xFD, 0xE9]))  # Bad Peer AS

SEEDS = {
    "bgp_message": {
        "open-keepalive.bin": b"\x01" + open_msg(65001, "10.0.0.2") + KEEPALIVE,
        "open-2-octet.bin": b"\x00" + open_msg(65001, "10.0.0.2", hold=0, asn4=False),
        "open-4-octet-as.bin": b"\x01" + open_msg(4200000001, "10.0.0.3", hold=3),
        "update-v4-all-attributes.bin": b"\x01" + v4_update(),
        "update-v4-2-octet.bin": b"\x00" + v4_update(four=False),
        "update-v6-mp-reach.bin": b"\x01" + v6_update(),
        "update-withdraw.bin": b"\x01" + withdraw_update(),
        "update-as4-path.bin": b"\x00" + as4_update(),
        "end-of-rib.bin": b"\x01" + EOR_V4 + EOR_V6,
        "notification.bin": b"\x01" + NOTIFICATION + OPEN_ERROR,
        "route-refresh.bin": b"\x01" + ROUTE_REFRESH + KEEPALIVE,
        "bad-marker.bin": b"\x01" + b"\xfe" + KEEPALIVE[1:],
        "bad-length.bin": b"\x01" + b"\xff" * 16 + b"\x10\x00\x04",
    },
    # flags: bit 0 iBGP (peer AS 64512, else 65001), bit 1 graceful restart,
    # bit 2 the connection is ours.
    "bgp_session": {
        "ebgp-session.bin": b"\x00" + open_msg(65001, "10.0.0.2") + KEEPALIVE + v4_update()
        + v6_update() + EOR_V4 + EOR_V6 + ROUTE_REFRESH + KEEPALIVE + withdraw_update() + NOTIFICATION,
        "ibgp-graceful-restart.bin": b"\x03" + open_msg(64512, "10.0.0.3") + KEEPALIVE
        + v4_update(first_as=64512) + EOR_V4 + KEEPALIVE,
        "outgoing-2-octet.bin": b"\x04" + open_msg(65001, "10.0.0.2", asn4=False) + KEEPALIVE
        + as4_update() + EOR_V4,
        "bad-peer-as.bin": b"\x00" + open_msg(65002, "10.0.0.2") + KEEPALIVE,
        "update-before-open.bin": b"\x00" + v4_update(),
    },
}

for target, files in SEEDS.items():
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
