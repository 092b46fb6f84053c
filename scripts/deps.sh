#!/usr/bin/env bash
# Installs every build, test, demo and benchmark dependency from Debian's
# packages. Idempotent: when everything is already there it only asks dpkg.
set -euo pipefail

packages=(
  # build the module against the distribution's nginx
  g++ make cmake pkg-config nginx nginx-dev libpcre2-dev zlib1g-dev libssl-dev
  libhiredis-dev libsimdjson-dev
  # syncd
  libpq-dev libsystemd-dev libmicrohttpd-dev nlohmann-json3-dev libcurl4-openssl-dev
  # servers the tests start themselves; redis-cli builds test clusters and
  # the openssl command line makes the tests' throwaway CA
  redis-server redis-tools postgresql openssl
  # tests, fuzzing, sanitizers, benchmarks
  googletest libgtest-dev valgrind clang-14 libfuzzer-14-dev libclang-rt-14-dev
  python3 python3-pytest python3-redis python3-cryptography wrk curl nodejs npm clang-format
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$p")
done

# nodejs/npm may come from outside Debian's packages on some machines: a
# working node on PATH is enough for the benchmark.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do
    [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p")
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian's packages start their daemons on install where an init system
# runs; the project starts its own on loopback ports, so keep them off.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d.session-module >/dev/null
$SUDO chmod +x /usr/sbin/policy-rc.d.session-module
if [ ! -e /usr/sbin/policy-rc.d ]; then
  $SUDO ln -s /usr/sbin/policy-rc.d.session-module /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
