#!/usr/bin/env bash
# Make a development CA, a server certificate and a client certificate for nats-tls.conf.
#
#   deploy/nats/tls/gen-dev-certs.sh OUT_DIR [NAME...]
#
# OUT_DIR receives (keys readable by the owner only):
#   ca.pem, ca-key.pem          the CA; give ca.pem to servers (NATS_TLS_CA) and clients (--tls-ca)
#   server.pem, server-key.pem  for every node (NATS_TLS_CERT, NATS_TLS_KEY); valid for
#                               localhost, 127.0.0.1, ::1, nats-1, nats-2, nats-3 and each NAME
#                               (a host name, or an IP address); usable for routes too
#   client.pem, client-key.pem  for fleet processes (--tls-cert, --tls-key)
#
# For development and tests only: the CA key sits next to the certificates, nothing is
# revoked, certificates last 365 days. Never commit the output (tls/.gitignore ignores it
# here). Refuses to overwrite an existing CA. Needs openssl 1.1.1 or later.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
command -v openssl >/dev/null || { echo "gen-dev-certs.sh: openssl not found on PATH" >&2; exit 1; }

out=$1
shift
if [[ -e $out/ca.pem || -e $out/ca-key.pem ]]; then
    echo "gen-dev-certs.sh: $out already holds a CA; remove it or choose another directory" >&2
    exit 1
fi
mkdir -p "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

days=365
san="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:nats-1,DNS:nats-2,DNS:nats-3"
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
        san="$san,IP:$name"
    else
        san="$san,DNS:$name"
    fi
done

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# CA
key "$out/ca-key.pem"
openssl req -x509 -new -key "$out/ca-key.pem" -sha256 -days "$days" \
    -subj "/O=taskiq-fleet dev/CN=taskiq-fleet dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.pem"

# sign NAME SUBJECT EXTENSIONS: a key, a CSR and a certificate signed by the CA
sign() {
    local name=$1 subject=$2 extensions=$3
    key "$out/$name-key.pem"
    openssl req -new -key "$out/$name-key.pem" -subj "$subject" -out "$work/$name.csr"
    printf '%s\n' "$extensions" >"$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
        -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$days" \
        -extfile "$work/$name.ext" -out "$out/$name.pem" 2>/dev/null
}

# Servers present it to clients and, on routes, to each other: serverAuth and clientAuth.
sign server "/O=taskiq-fleet dev/CN=nats" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san"

sign client "/O=taskiq-fleet dev/CN=fleet-client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

chmod 644 "$out/ca.pem" "$out/server.pem" "$out/client.pem"
openssl verify -CAfile "$out/ca.pem" "$out/server.pem" "$out/client.pem" >/dev/null
echo "wrote ca.pem, server.pem, client.pem and their keys to $out"
