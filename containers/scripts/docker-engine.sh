#!/usr/bin/env bash
# A local Docker engine for the container targets (`make docker-engine`). Does nothing where `docker info`
# already answers. Elsewhere, as root on Debian/Ubuntu: installs Debian's engine (docker.io) and debootstrap (the
# OS base of our images is built with it: scripts/os-base.sh), starts dockerd in the background and waits for it.
# It never changes a running engine's configuration. Log: $DOCKERD_LOG (default /var/log/ftkit-dockerd.log).
set -euo pipefail
log=${DOCKERD_LOG:-/var/log/ftkit-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}

engine_up() { docker info --format '{{.ServerVersion}}' 2>/dev/null; }

if version=$(engine_up) && [ -n "$version" ]; then
  echo "docker engine: running (server $version)"
  command -v debootstrap >/dev/null || echo "note: debootstrap is not installed; 'make containers' needs it for the OS base (apt-get install debootstrap)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: no Docker engine answers 'docker info', and starting one needs root." >&2
  echo "fix: start your engine (e.g. 'sudo systemctl start docker'), or run 'sudo make docker-engine'." >&2
  exit 2
fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || { echo "error: no dockerd and no apt-get: install a Docker engine by hand" >&2; exit 2; }
  echo "installing Debian's Docker engine and debootstrap (apt-get install docker.io debootstrap) ..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! pgrep -x dockerd >/dev/null; then
  echo "starting dockerd in the background (log: $log) ..."
  nohup dockerd >"$log" 2>&1 &
fi
for _ in $(seq "$wait_s"); do
  if version=$(engine_up) && [ -n "$version" ]; then
    echo "docker engine: running (server $version)"
    exit 0
  fi
  sleep 1
done
echo "error: dockerd did not answer within ${wait_s}s; its log ($log) ends with:" >&2
tail -n 20 "$log" >&2 || true
exit 1
