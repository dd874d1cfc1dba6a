#!/usr/bin/env bash
# A NAT lab on one Linux machine: network namespaces, veth pairs, a bridge and nftables.
# Needs root, iproute2 (ip), nftables (nft) and, for `flush`, conntrack. Background: the shared
# NAT lab notes (natlab.md); Tests/CairnNodeTests/NATLabTests.swift proves each kind behaves.
#
#   natlab.sh up PREFIX SPEC...   build a lab; prints one line per host: "name netns ip"
#   natlab.sh down PREFIX         delete every namespace named PREFIX-* (idempotent)
#   natlab.sh flush PREFIX        conntrack -F (and forget full-cone mappings) in every router
#   natlab.sh gc                  `down` every lab whose owner process has died (after a crash)
#   natlab.sh upnpd PREFIX NAME start [--only upnp|pmp] [--claim IP]
#                                 start miniupnpd (UPnP IGD, NAT-PMP and PCP) on `upnp` router NAME
#   natlab.sh upnpd PREFIX NAME stop
#                                 stop it and forget its mappings, as a reboot does
#
# miniupnpd 2.3.1 refuses to forward ports while its WAN address is reserved (198.18.0.0/15 is),
# unless it learns its "public" address by STUN: `upnpd start` runs bootstrap/lab-stun-responder.py
# on 198.18.0.2:(3478+X) in the wan namespace for it. `--claim IP` makes that responder (and so
# the gateway) claim IP as the external address: a lying gateway. `--only upnp` serves UPnP IGD
# alone, `--only pmp` NAT-PMP and PCP alone. Files (config, log, pid) are in /run/natlab/PREFIX.d/.
#
# `up` records its owner (env NATLAB_OWNER, default the calling process) in /run/natlab/PREFIX;
# `down` removes the record.
#
# SPEC is `pub:N` (N public hosts), or `KIND:NAME` (one LAN host) or `KIND:NAME*N` (N hosts on
# one LAN segment, named NAME, NAME2, ... at 10.0.X.2, .3, ...) with KIND one of
#   fullcone   endpoint-independent mapping and filtering (masquerade + DNAT of mapped ports)
#   home       endpoint-independent mapping, address-and-port-dependent filtering (masquerade)
#   symmetric  address-and-port-dependent mapping (masquerade fully-random)
#   open       no NAT: a routed public host behind a stateful firewall that admits inbound to it
#   fw6        dual stack: IPv4 as `home`; IPv6 routed with no NAT, behind the same stateful
#              firewall (inbound new connections dropped). Any fw6 router turns IPv6 on in the whole
#              lab: public hosts get 2001:db8:(100+I)::1/64 beside their IPv4 address, fw6 routers
#              2001:db8:(10+X)::1 on wan0 and 2001:db8:f0X::1/64 on lan0, their hosts
#              2001:db8:f0X::2 (summary lines `NAME-v6 NETNS IPV6`)
#   upnp       a home router (as `home`) whose nftables layout lets miniupnpd add port mappings;
#              the daemon is started and stopped with `upnpd` (below)
# The word `ipv6` in SPEC turns IPv6 on for the public hosts without a fw6 router.
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
usage() { die "usage: natlab.sh up PREFIX SPEC... | down PREFIX | flush PREFIX | gc | upnpd PREFIX NAME start|stop [OPTIONS]"; }
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
    rm -rf "${OWNERS:?}/$prefix.d"
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
    if [ "${V6:-0}" = 1 ]; then
        # IPv6 on, but quiet: static addresses only (no router advertisements, no DAD wait).
        ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
            net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    else
        ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    fi
}

# The router's nftables ruleset for KIND. $1 kind, $2 LAN host address.
router_ruleset() {
    local kind=$1 host=$2 nat="" inbound="" upnp=""
    case "$kind" in
        home|fw6)
            nat='oifname "wan0" masquerade' ;;
        symmetric)
            nat='oifname "wan0" masquerade fully-random' ;;
        fullcone)
            nat='oifname "wan0" masquerade'
            inbound='iifname "wan0" oifname "lan0" ct status dnat accept' ;;
        open)
            inbound="iifname \"wan0\" oifname \"lan0\" ip daddr $host accept" ;;
        upnp)
            # miniupnpd's nftables backend adds its rules to these chains of `inet filter`
            # (Debian's nft_init.sh, which would make them, is broken in bookworm).
            nat='oifname "wan0" masquerade'
            inbound='jump miniupnpd'
            upnp=$(cat <<'EOF'
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
EOF
) ;;
    esac
    cat <<EOF
table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state established,related accept
        iifname "wan0" icmp type echo-request accept
        iifname "wan0" meta l4proto ipv6-icmp accept
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
${upnp}
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

# Runs "$@" in the background with output to $1 and its pid in $2, holding no descriptor of
# ours beyond 0-2: a caller that waits for EOF on a pipe or socket it gave us (Foundation's
# Process does, to learn that we exited) must not wait for the daemon too.
daemon() {
    local log=$1 pidfile=$2; shift 2
    (
        for f in /proc/$BASHPID/fd/*; do
            n=${f##*/}
            if [[ "$n" =~ ^[0-9]+$ ]] && ((n > 2)); then eval "exec $n>&-" 2>/dev/null || true; fi
        done
        exec "$@"
    ) >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

# Kills the process whose pid is in file $1 (if any) and waits for it to go.
kill_pidfile() {
    local f=$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

cmd_upnpd() {
    local prefix=$1 name=$2 action=$3; shift 3
    check_prefix "$prefix"
    local r="$prefix-r-$name" wan="$prefix-wan" dir="$OWNERS/$prefix.d" only="" claim="" wanip x i
    ip netns list | awk '{print $1}' | grep -qx "$r" || die "no router $r"
    ip netns exec "$r" nft list chain inet filter prerouting_miniupnpd >/dev/null 2>&1 || die "$r is not a upnp router"
    while (($#)); do
        case "$1" in
            --only) only=$2; shift 2 ;;
            --claim) claim=$2; shift 2 ;;
            *) die "unknown upnpd option $1" ;;
        esac
    done
    mkdir -p "$dir"
    kill_pidfile "$dir/$name.miniupnpd.pid"
    kill_pidfile "$dir/$name.stun.pid"
    rm -f "$dir/$name.stun.log" "$dir/$name.miniupnpd.log"   # (a stale "ready" must not count)
    # What a reboot loses: every mapping and every tracked flow.
    ip netns exec "$r" nft flush chain inet filter prerouting_miniupnpd
    ip netns exec "$r" nft flush chain inet filter postrouting_miniupnpd
    ip netns exec "$r" nft flush chain inet filter miniupnpd
    ip netns exec "$r" conntrack -F >/dev/null 2>&1 || true
    [ "$action" = stop ] && return 0
    [ "$action" = start ] || usage
    [ -x /usr/sbin/miniupnpd ] || die "miniupnpd not found (apt-get install miniupnpd-nftables)"
    local py=/usr/bin/python3
    [ -x "$py" ] || py=$(command -v python3) || die "python3 not found (the lab's STUN responder)"
    wanip=$(ip -n "$r" -4 -o addr show dev wan0 | awk '{print $4}' | cut -d/ -f1)
    x=$((${wanip##*.} - 10))
    # The STUN server miniupnpd asks for its external address, on the wan bridge.
    ip -n "$wan" -4 -o addr show dev br0 | grep -q " 198.18.0.2/" || ip -n "$wan" addr add 198.18.0.2/15 dev br0
    local stunport=$((3478 + x))
    daemon "$dir/$name.stun.log" "$dir/$name.stun.pid" \
        ip netns exec "$wan" "$py" "$(dirname "$0")/lab-stun-responder.py" 198.18.0.2 "$stunport" ${claim:+--claim "$claim"}
    for ((i = 0; i < 200; i++)); do grep -q ready "$dir/$name.stun.log" 2>/dev/null && break; sleep 0.05; done
    grep -q ready "$dir/$name.stun.log" || die "STUN responder did not start: $(cat "$dir/$name.stun.log")"
    local upnp=yes natpmp=yes
    case "$only" in
        "") ;;
        upnp) natpmp=no ;;
        pmp) upnp=no ;;
        *) die "--only takes upnp or pmp" ;;
    esac
    cat >"$dir/$name.miniupnpd.conf" <<EOF
ext_ifname=wan0
listening_ip=lan0
http_port=5000
enable_upnp=$upnp
enable_natpmp=$natpmp
ipv6_disable=yes
secure_mode=yes
system_uptime=no
min_lifetime=2
max_lifetime=86400
uuid=6f1c2e4a-0b1d-4c1e-9a2b-0000000000$(printf '%02x' "$x")
friendly_name=Cairn lab router $name
ext_perform_stun=yes
ext_stun_host=198.18.0.2
ext_stun_port=$stunport
allow 1024-65535 10.0.$x.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
    daemon "$dir/$name.miniupnpd.log" "$dir/$name.miniupnpd.pid" \
        ip netns exec "$r" /usr/sbin/miniupnpd -f "$dir/$name.miniupnpd.conf" -P "$dir/$name.miniupnpd.pid.own" -d
    # Up once it has learnt its address by STUN and listens.
    for ((i = 0; i < 150; i++)); do
        grep -qE "HTTP listening on port|Listening for NAT-PMP" "$dir/$name.miniupnpd.log" 2>/dev/null && break
        kill -0 "$(cat "$dir/$name.miniupnpd.pid")" 2>/dev/null || die "miniupnpd exited: $(tail -5 "$dir/$name.miniupnpd.log")"
        sleep 0.1
    done
    grep -qE "HTTP listening on port|Listening for NAT-PMP" "$dir/$name.miniupnpd.log" || die "miniupnpd not up: $(tail -5 "$dir/$name.miniupnpd.log")"
}

cmd_up() {
    local prefix=$1; shift
    check_prefix "$prefix"
    (($#)) || usage
    [ -z "$(lab_namespaces "$prefix")" ] || die "namespaces with prefix $prefix exist: run 'natlab.sh down $prefix' first"
    for tool in ip nft sysctl; do command -v "$tool" >/dev/null || die "$tool not found"; done
    [ "$(id -u)" -eq 0 ] || die "needs root"

    # Parse the spec first so a typo fails before anything is created.
    local npub=0 spec kind name count
    local -a kinds=() names=() counts=()
    for spec in "$@"; do
        if [ "$spec" = ipv6 ]; then V6=1; continue; fi   # IPv6 on the public hosts, with no fw6 router
        kind=${spec%%:*}; name=${spec#*:}; count=1
        if [[ "$name" == *"*"* ]]; then
            count=${name#*\*}; name=${name%%\**}
            [[ "$count" =~ ^[1-9]$ ]] || die "bad spec '$spec' (KIND:NAME*N with N 1..9)"
            [ "$kind" != pub ] && [ "$kind" != open ] || die "'$spec': only NAT routers take several LAN hosts"
        fi
        [ "$kind" != "$spec" ] || die "bad spec '$spec' (KIND:NAME or pub:N)"
        case "$kind" in
            pub)
                [[ "$name" =~ ^[0-9]+$ ]] && ((name >= 1 && name <= 99)) || die "bad spec '$spec' (pub:1..99)"
                npub=$name ;;
            fullcone|home|symmetric|open|upnp|fw6)
                [ "$kind" != fw6 ] || V6=1
                [[ "$name" =~ ^[a-z0-9]{1,6}$ ]] || die "bad router name '$name' (1-6 chars of [a-z0-9])"
                for n in "${names[@]+"${names[@]}"}"; do [ "$n" != "$name" ] || die "duplicate router name '$name'"; done
                kinds+=("$kind"); names+=("$name"); counts+=("$count") ;;
            *) die "unknown kind '$kind' (pub, fullcone, home, symmetric, open, upnp, fw6)" ;;
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
    ip -n "$wan" link add br0 type bridge mcast_snooping 0
    ip -n "$wan" link set br0 up

    for ((i = 1; i <= npub; i++)); do
        ns="$prefix-pub$i"
        ns_add "$ns"
        ip -n "$wan" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$wan" link set "p$i" master br0 up
        ip -n "$ns" addr add "198.18.0.$((100 + i))/15" dev eth0
        ip -n "$ns" link set eth0 up
        summary+="pub$i $ns 198.18.0.$((100 + i))"$'\n'
        if [ "${V6:-0}" = 1 ]; then
            # Each public host in a /48 of its own (distinct observers), all on the one segment.
            ip -n "$ns" addr add "2001:db8:$((100 + i))::1/64" dev eth0 nodad
            ip -n "$ns" -6 route add 2001:db8::/32 dev eth0
            summary+="pub$i-v6 $ns 2001:db8:$((100 + i))::1"$'\n'
        fi
    done

    for x in "${!names[@]}"; do
        kind=${kinds[$x]}; name=${names[$x]}; count=${counts[$x]}; x=$((x + 1))
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

        summary+="r-$name $r $wanip"$'\n'
        if [ "$kind" = fw6 ]; then
            ip netns exec "$r" sysctl -qw net.ipv6.conf.all.forwarding=1
            ip -n "$r" addr add "2001:db8:$((10 + x))::1/64" dev wan0 nodad
            ip -n "$r" -6 route add 2001:db8::/32 dev wan0
            summary+="r-$name-v6 $r 2001:db8:$((10 + x))::1"$'\n'
        fi
        if ((count == 1)); then
            ns_add "$h"
            ip -n "$r" link add lan0 type veth peer name eth0 netns "$h"
            ip -n "$r" addr add "$lanip/24" dev lan0
            ip -n "$r" link set lan0 up
            ip -n "$h" addr add "$hostip/24" dev eth0
            ip -n "$h" link set eth0 up
            ip -n "$h" route add default via "$lanip"
            summary+="$name $h $hostip"$'\n'
            if [ "$kind" = fw6 ]; then
                ip -n "$r" addr add "2001:db8:f0$x::1/64" dev lan0 nodad
                ip -n "$h" addr add "2001:db8:f0$x::2/64" dev eth0 nodad
                ip -n "$h" -6 route add default via "2001:db8:f0$x::1"
                summary+="$name-v6 $h 2001:db8:f0$x::2"$'\n'
            fi
        else
            # One LAN segment: lan0 is a bridge with a port per host. Bridge netfilter would send
            # host-to-host frames through the forward chain (policy drop): off in this namespace.
            ip netns exec "$r" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 2>/dev/null || true
            ip -n "$r" link add lan0 type bridge
            ip -n "$r" addr add "$lanip/24" dev lan0
            ip -n "$r" link set lan0 up
            local j hn hns hip
            for ((j = 1; j <= count; j++)); do
                if ((j == 1)); then hn=$name; else hn=$name$j; fi
                hns="$prefix-h-$hn"; hip="$lannet.$((1 + j))"
                ns_add "$hns"
                ip -n "$r" link add "l$j" type veth peer name eth0 netns "$hns"
                ip -n "$r" link set "l$j" master lan0 up
                ip -n "$hns" addr add "$hip/24" dev eth0
                ip -n "$hns" link set eth0 up
                ip -n "$hns" route add default via "$lanip"
                summary+="$hn $hns $hip"$'\n'
                if [ "$kind" = fw6 ]; then
                    ((j > 1)) || ip -n "$r" addr add "2001:db8:f0$x::1/64" dev lan0 nodad
                    ip -n "$hns" addr add "2001:db8:f0$x::$((1 + j))/64" dev eth0 nodad
                    ip -n "$hns" -6 route add default via "2001:db8:f0$x::1"
                    summary+="$hn-v6 $hns 2001:db8:f0$x::$((1 + j))"$'\n'
                fi
            done
        fi
        router_ruleset "$kind" "$hostip" | ip netns exec "$r" nft -f -
    done

    # Routes to the IPv6 LANs behind `fw6` routers, from every public host and other fw6 router.
    for x in "${!names[@]}"; do
        [ "${kinds[$x]}" = fw6 ] || continue
        local net6="2001:db8:f0$((x + 1))::/64" via6="2001:db8:$((11 + x))::1"
        for ((i = 1; i <= npub; i++)); do ip -n "$prefix-pub$i" -6 route add "$net6" via "$via6"; done
        for n in "${!names[@]}"; do
            [ "${kinds[$n]}" = fw6 ] && [ "$n" != "$x" ] && ip -n "$prefix-r-${names[$n]}" -6 route add "$net6" via "$via6"
        done
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
    upnpd) (($# >= 3)) || usage; cmd_upnpd "$@" ;;
    *) usage ;;
esac
