#!/usr/bin/env bash
# Installs what the Docker tests need: Debian's engine, mmdebstrap (to build a base image without a
# registry) and docker-registry (a local registry on 127.0.0.1 for push/pull tests). Idempotent; starts
# no daemon: the tests start and stop their own private dockerd and registry (tests/docker_engine.py).
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
if [ "${#need[@]}" -eq 0 ]; then
    echo "docker-setup: docker.io, mmdebstrap and docker-registry are already installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# policy-rc.d keeps the packages' own service scripts from starting a system dockerd or registry
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
echo "docker-setup: installed ${need[*]}"
