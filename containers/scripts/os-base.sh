#!/usr/bin/env bash
# The OS base layer of our images, built here with no registry: Debian bookworm (minbase, the package set of
# debian:bookworm-slim) by debootstrap, imported as $OS_BASE_IMAGE (default finetune-recipes/os-base:bookworm).
# Every step above it is the same Dockerfile line for this base and for the release workflow's
# debian:bookworm-slim pulled by digest (containers/README.md, "The OS base").
#   DEBIAN_MIRROR   default http://deb.debian.org/debian; a dated snapshot, e.g.
#                   http://snapshot.debian.org/archive/debian/20261201T000000Z, freezes the package versions
#   REBUILD=1       build again although the image exists
# Needs root, debootstrap and a running engine (`make docker-engine`). The image is labelled with the suite's
# Release date and the mirror, and /etc/ftkit-os-base.txt in it lists every package version (dpkg-query).
set -euo pipefail
image=${OS_BASE_IMAGE:-finetune-recipes/os-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

if [ -z "${REBUILD:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "os base: $image exists ($(docker image inspect -f '{{index .Config.Labels "org.debian.release-date"}}' "$image")); REBUILD=1 builds it again"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root (sudo make containers)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed: run 'make docker-engine' (or apt-get install debootstrap)" >&2; exit 2; }

release_date=$(curl -fsSL "$mirror/dists/$suite/Release" | sed -n 's/^Date: //p')
[ -n "$release_date" ] || { echo "error: no Release file at $mirror/dists/$suite/Release" >&2; exit 2; }
dir=$(mktemp -d /tmp/ftkit-os-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s)
echo "os base: debootstrap --variant=minbase $suite from $mirror (Release of $release_date) ..."
debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -n 20 "$dir.log" >&2; exit 1; }
rm -f "$dir.log"
# What debian:bookworm-slim also does: no docs, man pages or translations in later apt installs.
cat >"$dir/etc/dpkg/dpkg.cfg.d/ftkit-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
cat >"$dir/etc/apt/sources.list" <<LIST
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
LIST
chroot "$dir" dpkg-query -W -f '${Package}=${Version}\n' >"$dir/etc/ftkit-os-base.txt"
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log
tar --numeric-owner -C "$dir" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' \
  -c "LABEL org.debian.suite=$suite org.debian.mirror=$mirror org.debian.release-date=\"$release_date\"" \
  - "$image" >/dev/null
echo "os base: $image built in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'), Debian $(cat "$dir/etc/debian_version"))"
