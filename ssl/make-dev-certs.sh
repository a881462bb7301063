#!/bin/sh
# Make a development CA and the certificates a PINK cluster uses (see ssl/README.md).
#
#   ssl/make-dev-certs.sh -n pink.example.org -n 10.0.0.10 \
#       -e etcd1=10.0.0.21 -e etcd2=10.0.0.22 -e etcd3=10.0.0.23
#
# -n NAME        a DNS name or IP address of the load balancer (repeat; the first is the CN).
#                Default: localhost and 127.0.0.1.
# -e HOST=ADDR   an etcd member: its inventory name and the address(es) it is reached at
#                (ADDR may be a comma list). Repeat for each member. Without -e no etcd
#                certificates are made and etcd runs without TLS.
# -o DIR         where to write (default: the folder of this script).
# -f             remake the server and client certificates even when they exist.
#
# Existing files are kept (the CA always is), so running it again after adding an etcd
# member only makes that member's certificate and clients keep trusting the CA.
# Writes: ca.pem ca.key nginx/server.pem nginx/server.key
#         etcd/ca.pem etcd/HOST.pem etcd/HOST.key etcd/client.pem etcd/client.key
# Development only: for production bring certificates from your own CA (ssl/README.md).
set -eu

out=$(dirname "$0")
force=0
names=""
members=""
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:e:o:fh" opt; do
    case $opt in
        n) names="$names $OPTARG" ;;
        e) case $OPTARG in *=*) members="$members $OPTARG" ;; *) echo "make-dev-certs: -e wants HOST=ADDR, not $OPTARG" >&2; exit 2 ;; esac ;;
        o) out=$OPTARG ;;
        f) force=1 ;;
        *) usage ;;
    esac
done
[ -n "$names" ] || names="localhost 127.0.0.1"
command -v openssl >/dev/null || { echo "make-dev-certs: openssl is not installed" >&2; exit 1; }

umask 077
mkdir -p "$out/nginx"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "a,b" -> "DNS:a,IP:b" (IPv4 and IPv6 literals become IP entries).
san_list() {
    printf '%s\n' "$@" | tr ',' '\n' | sed '/^$/d' | while read -r n; do
        case $n in
            *:*|[0-9]*.[0-9]*.[0-9]*.[0-9]*) echo "IP:$n" ;;
            *) echo "DNS:$n" ;;
        esac
    done | paste -sd, -
}

if [ ! -f "$out/ca.pem" ] || [ ! -f "$out/ca.key" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$out/ca.key" -out "$out/ca.pem" -days 3650 -subj "/CN=PINK development CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 644 "$out/ca.pem"
    echo "made CA $out/ca.pem"
fi

# issue NAME CN USAGE SANS: NAME.pem and NAME.key signed by the CA.
issue() {
    name=$1 cn=$2 usage=$3 sans=$4
    if [ "$force" = 0 ] && [ -f "$name.pem" ] && [ -f "$name.key" ]; then
        return 0
    fi
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = $usage"
        [ -z "$sans" ] || echo "subjectAltName = $sans"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid, issuer"
    } > "$tmp/ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$name.key" -out "$tmp/csr" -subj "/CN=$cn" 2>/dev/null
    openssl x509 -req -in "$tmp/csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
        -out "$name.pem" -days 825 -extfile "$tmp/ext" 2>/dev/null
    chmod 644 "$name.pem"
    echo "made $name.pem ($sans)"
}

# shellcheck disable=SC2086  # word splitting of the lists is intended
first=$(set -- $names; echo "$1")
# shellcheck disable=SC2086
issue "$out/nginx/server" "$first" serverAuth "$(san_list $names)"

if [ -n "$members" ]; then
    mkdir -p "$out/etcd"
    cp "$out/ca.pem" "$out/etcd/ca.pem"
    chmod 644 "$out/etcd/ca.pem"
    for member in $members; do
        host=${member%%=*}
        addrs=${member#*=}
        # Peers and clients reach a member at its address; pink-etcdctl on the member uses
        # 127.0.0.1. Members also present this certificate to each other as clients.
        issue "$out/etcd/$host" "$host" "serverAuth, clientAuth" "$(san_list "$host,$addrs,localhost,127.0.0.1")"
    done
    issue "$out/etcd/client" pink-etcd-client clientAuth ""
fi
rm -f "$out/ca.srl"
