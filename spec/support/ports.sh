# Sourced by bash scripts that start a server on loopback (pgserver.sh,
# examples/openresty/nginx.sh): pick_port prints a free TCP port below 32768
# (ports above can be taken by outgoing connections). The caller defines die.

port_free() {               # true when nothing listens on TCP port $1
    if command -v ss >/dev/null; then
        [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
    else
        # a successful connect means the port is taken
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 1; fi
    fi
}

pick_port() {
    local i port
    for i in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if port_free "$port"; then echo "$port"; return 0; fi
    done
    die "no free TCP port found in 20000-31999"
}
