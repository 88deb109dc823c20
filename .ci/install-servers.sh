#!/usr/bin/env bash
# Install the servers the tests start on loopback (redis-server, PostgreSQL) if they are missing.
# Debian/Ubuntu apt, as root or through sudo; does nothing when both are already there.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "install-servers: missing ${missing[*]}; install them with your package manager" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-servers: missing ${missing[*]}; run as root" >&2; exit 1; }
    as_root=(sudo)
fi
echo "install-servers: apt-get install ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
