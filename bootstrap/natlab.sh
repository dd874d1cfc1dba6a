#!/usr/bin/env bash
# A NAT lab on one Linux machine: network namespaces, veth pairs, a bridge and nftables.
# Needs root, iproute2 (ip), nftables (nft) and, for `flush`, conntrack. Background: the shared
# NAT lab notes (natlab.md); Tests/CairnNodeTests/NATLabTests.swift proves each kind behaves.
#
#   natlab.sh up PREFIX SPEC...   build a lab; prints one line per host: "name netns ip"
#   natlab.sh down PREFIX         delete every namespace named PREFIX-* (idempotent)
#   natlab.sh flush PREFIX        conntrack -F (and forget full-cone mappings) in every router
#   natlab.sh gc                  `down` every lab whose owner process has died (after a crash)
#
# `up` records its owner (env NATLAB_OWNER, default the calling process) in /run/natlab/PREFIX;
# `down` removes the record.
#
# SPEC is `pub:N` (N public hosts) or `KIND:NAME` with KIND one of
#   fullcone   endpoint-independent mapping and filtering (masquerade + DNAT of mapped ports)
#   home       endpoint-independent mapping, address-and-port-dependent filtering (masquerade)
#   symmetric  address-and-port-dependent mapping (masquerade fully-random)
#   open       no NAT: a routed public host behind a stateful firewall that admits inbound to it
# e.g. `natlab.sh up cl1a2b pub:3 fullcone:a home:b symmetric:c open:d`.
#
# Topology (nothing routes off the machine; no namespace has a default route except LAN hosts):
#   PREFIX-wan    bridge br0: the "internet", 198.18.0.0/15, no address of its own
#   PREFIX-pubI   eth0 198.18.0.(100+I)/15                                    (I = 1..N)
#   PREFIX-r-NAME wan0 198.18.0.(10+X)/15, lan0 10.0.X.1/24, ip_forward=1     (X = router index)
#   PREFIX-h-NAME eth0 10.0.X.2/24, default via 10.0.X.1
# An `open` router's LAN is public instead: 198.19.X.0/24 (inside 198.18.0.0/15), host
# 198.19.X.2; every public host and router gets a route to it via that router's WAN address.
# Summary lines: `pubI PREFIX-pubI 198.18.0.(100+I)`, `r-NAME PREFIX-r-NAME 198.18.0.(10+X)`,
# `NAME PREFIX-h-NAME 10.0.X.2` (or 198.19.X.2 for open).
#
# Every router has the stateful firewall of a real router (input: new connections from wan0 are
# dropped *before conntrack confirms them*, which is what avoids the conntrack trap described in
# natlab.md; forward: policy drop, established/related and LAN->WAN accepted). Drop rules carry
# counters and comments ("wan-new-drop", "fwd-drop") so tests can prove a packet was filtered.
set -euo pipefail

log() { echo "natlab: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { die "usage: natlab.sh up PREFIX SPEC... | down PREFIX | flush PREFIX | gc"; }
OWNERS=/run/natlab

check_prefix() {
    [[ "$1" =~ ^[a-z0-9]{1,8}$ ]] || die "bad prefix '$1' (1-8 chars of [a-z0-9])"
}

# Namespaces named PREFIX-*, from `ip netns list` ("name (id: N)" or "name").
lab_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-" || true
}

cmd_down() {
    local prefix=$1 ns pids
    check_prefix "$prefix"
    # Leftover processes keep a namespace's network stack alive after `ip netns del`; end them
    # (by PID: only processes running inside this lab's namespaces).
    for ns in $(lab_namespaces "$prefix"); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    done
    for ns in $(lab_namespaces "$prefix"); do
        ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
    done
    [ -z "$(lab_namespaces "$prefix")" ] || die "namespaces left: $(lab_namespaces "$prefix" | tr '\n' ' ')"
    rm -f "$OWNERS/$prefix"
}

cmd_gc() {
    local f pid
    for f in "$OWNERS"/*; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
        log "lab $(basename "$f") outlived its owner (pid ${pid:-?}); removing it"
        cmd_down "$(basename "$f")" || true
    done
}

cmd_flush() {
    local prefix=$1 ns
    check_prefix "$prefix"
    for ns in $(lab_namespaces "$prefix" | grep -E "^$prefix-r-" || true); do
        ip netns exec "$ns" conntrack -F >/dev/null 2>&1 || true   # "0 flow entries" exits 1 on some versions
        if ip netns exec "$ns" nft list map ip nat fc >/dev/null 2>&1; then
            ip netns exec "$ns" nft flush map ip nat fc
        fi
    done
}

# Common per-namespace setup: loopback up, no IPv6 (keeps the lab quiet and IPv4-only).
ns_add() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# The router's nftables ruleset for KIND. $1 kind, $2 LAN host address.
router_ruleset() {
    local kind=$1 host=$2 nat="" inbound=""
    case "$kind" in
        home)
            nat='oifname "wan0" masquerade' ;;
        symmetric)
            nat='oifname "wan0" masquerade fully-random' ;;
        fullcone)
            nat='oifname "wan0" masquerade'
            inbound='iifname "wan0" oifname "lan0" ct status dnat accept' ;;
        open)
            inbound="iifname \"wan0\" oifname \"lan0\" ip daddr $host accept" ;;
    esac
    cat <<EOF
table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state established,related accept
        iifname "wan0" icmp type echo-request accept
        iifname "wan0" ct state invalid counter drop comment "wan-invalid-drop"
        iifname "wan0" ct state new counter drop comment "wan-new-drop"
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
        ${inbound}
        counter drop comment "fwd-drop"
    }
}
EOF
    if [ -n "$nat" ]; then
        cat <<EOF
table ip nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        ${nat}
    }
}
EOF
    fi
    if [ "$kind" = fullcone ]; then
        # Endpoint-independent filtering: remember each mapping masquerade made (public
        # protocol+port -> LAN address+port, after SNAT, in LAN-initiated flows only) and DNAT
        # any new inbound packet to a remembered public port back to its LAN endpoint. Unmapped
        # ports stay closed (they fall through to the input chain's `ct state new drop`).
        cat <<EOF
table ip nat {
    map fc {
        type inet_proto . inet_service : ipv4_addr . inet_service
        flags dynamic, timeout
        timeout 120s
    }
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @fc
    }
    chain track {
        type filter hook postrouting priority srcnat + 10; policy accept;
        iifname "lan0" oifname "wan0" ct direction original meta l4proto { tcp, udp } update @fc { meta l4proto . th sport : ct original ip saddr . ct original proto-src }
    }
}
EOF
    fi
}

cmd_up() {
    local prefix=$1; shift
    check_prefix "$prefix"
    (($#)) || usage
    [ -z "$(lab_namespaces "$prefix")" ] || die "namespaces with prefix $prefix exist: run 'natlab.sh down $prefix' first"
    for tool in ip nft sysctl; do command -v "$tool" >/dev/null || die "$tool not found"; done
    [ "$(id -u)" -eq 0 ] || die "needs root"

    # Parse the spec first so a typo fails before anything is created.
    local npub=0 spec kind name
    local -a kinds=() names=()
    for spec in "$@"; do
        kind=${spec%%:*}; name=${spec#*:}
        [ "$kind" != "$spec" ] || die "bad spec '$spec' (KIND:NAME or pub:N)"
        case "$kind" in
            pub)
                [[ "$name" =~ ^[0-9]+$ ]] && ((name >= 1 && name <= 99)) || die "bad spec '$spec' (pub:1..99)"
                npub=$name ;;
            fullcone|home|symmetric|open)
                [[ "$name" =~ ^[a-z0-9]{1,6}$ ]] || die "bad router name '$name' (1-6 chars of [a-z0-9])"
                for n in "${names[@]+"${names[@]}"}"; do [ "$n" != "$name" ] || die "duplicate router name '$name'"; done
                kinds+=("$kind"); names+=("$name") ;;
            *) die "unknown kind '$kind' (pub, fullcone, home, symmetric, open)" ;;
        esac
    done
    ((${#names[@]} <= 89)) || die "at most 89 routers"

    # Build; on any failure remove what was made.
    UP_PREFIX=$prefix UP_DONE=0
    trap 'if [ "$UP_DONE" != 1 ]; then log "up failed; removing $UP_PREFIX-*"; cmd_down "$UP_PREFIX" || true; fi' EXIT
    mkdir -p "$OWNERS"
    echo "${NATLAB_OWNER:-$PPID}" >"$OWNERS/$prefix"
    local wan="$prefix-wan" summary="" i x ns r h wanip lanip hostip lannet
    ns_add "$wan"
    ip -n "$wan" link add br0 type bridge
    ip -n "$wan" link set br0 up

    for ((i = 1; i <= npub; i++)); do
        ns="$prefix-pub$i"
        ns_add "$ns"
        ip -n "$wan" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$wan" link set "p$i" master br0 up
        ip -n "$ns" addr add "198.18.0.$((100 + i))/15" dev eth0
        ip -n "$ns" link set eth0 up
        summary+="pub$i $ns 198.18.0.$((100 + i))"$'\n'
    done

    for x in "${!names[@]}"; do
        kind=${kinds[$x]}; name=${names[$x]}; x=$((x + 1))
        r="$prefix-r-$name"; h="$prefix-h-$name"
        wanip="198.18.0.$((10 + x))"
        if [ "$kind" = open ]; then lannet="198.19.$x"; else lannet="10.0.$x"; fi
        lanip="$lannet.1"; hostip="$lannet.2"

        ns_add "$r"
        ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
        ip -n "$wan" link add "r$x" type veth peer name wan0 netns "$r"
        ip -n "$wan" link set "r$x" master br0 up
        ip -n "$r" addr add "$wanip/15" dev wan0
        ip -n "$r" link set wan0 up

        ns_add "$h"
        ip -n "$r" link add lan0 type veth peer name eth0 netns "$h"
        ip -n "$r" addr add "$lanip/24" dev lan0
        ip -n "$r" link set lan0 up
        ip -n "$h" addr add "$hostip/24" dev eth0
        ip -n "$h" link set eth0 up
        ip -n "$h" route add default via "$lanip"

        router_ruleset "$kind" "$hostip" | ip netns exec "$r" nft -f -
        summary+="r-$name $r $wanip"$'\n'"$name $h $hostip"$'\n'
    done

    # Routes to the public LANs behind `open` routers, from every public host and router.
    for x in "${!names[@]}"; do
        [ "${kinds[$x]}" = open ] || continue
        local net="198.19.$((x + 1)).0/24" via="198.18.0.$((11 + x))"
        for ((i = 1; i <= npub; i++)); do ip -n "$prefix-pub$i" route add "$net" via "$via"; done
        for n in "${names[@]}"; do
            [ "$n" = "${names[$x]}" ] || ip -n "$prefix-r-$n" route add "$net" via "$via"
        done
    done
    UP_DONE=1
    printf '%s' "$summary"
}

(($# >= 1)) || usage
cmd=$1; shift
[ "$cmd" = gc ] || (($# >= 1)) || usage
case "$cmd" in
    up) cmd_up "$@" ;;
    down) (($# == 1)) || usage; cmd_down "$1" ;;
    flush) (($# == 1)) || usage; cmd_flush "$1" ;;
    gc) (($# == 0)) || usage; cmd_gc ;;
    *) usage ;;
esac
