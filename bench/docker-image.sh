#!/usr/bin/env bash
# Build the local Docker images the docker engine's tests and benchmarks use,
# without any image registry: each is a root filesystem made on this machine
# and loaded with `docker import`.
#
#   domarkx-test:busybox  Debian's busybox-static and its applets (sh, no bash,
#                         no python3); about 2 MB, built in a second or two.
#   domarkx-test:python   with --python: a Debian minbase with python3-minimal,
#                         made by debootstrap from Debian's package mirror
#                         (about a minute; skipped if it takes over 5 minutes).
#
# Usage: bench/docker-image.sh [--python] [--force]
#   --python  also build domarkx-test:python
#   --force   rebuild images that already exist
# Environment: DEBIAN_MIRROR (debootstrap's mirror, default: its own),
#              DEBIAN_SUITE (default: this machine's Debian release, else bookworm),
#              DEBOOTSTRAP_TIMEOUT (seconds, default 300).
set -euo pipefail

BUSYBOX_IMAGE=domarkx-test:busybox
PYTHON_IMAGE=domarkx-test:python
want_python=0
force=0
for arg in "$@"; do
    case "$arg" in
        --python) want_python=1 ;;
        --force) force=1 ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "docker-image.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

say() { echo "docker-image.sh: $*" >&2; }

apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "please install the Debian package(s) $*"
        return 1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    }
}

# Docker itself: when the local engine (DOCKER_HOST unset) does not answer,
# install Debian's docker.io if dockerd is missing and start dockerd (as root),
# as a fresh machine or CI needs.
if ! docker info >/dev/null 2>&1; then
    local_root=0
    [ "$(id -u)" = 0 ] && [ -z "${DOCKER_HOST:-}" ] && local_root=1
    if [ "$local_root" = 1 ]; then
        command -v dockerd >/dev/null 2>&1 || apt_install docker.io || true
    fi
    if [ "$local_root" = 1 ] && command -v dockerd >/dev/null 2>&1; then
        say "no Docker engine answers; starting dockerd (log: /tmp/dockerd.log)"
        setsid dockerd </dev/null >/tmp/dockerd.log 2>&1 &
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 0.5
        done
    fi
    if ! docker info >/dev/null 2>&1; then
        say "cannot reach the Docker engine; start dockerd or set DOCKER_HOST"
        exit 1
    fi
fi

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

workdir=$(mktemp -d "${TMPDIR:-/tmp}/domarkx-image.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

# Import a root filesystem folder as an image, owned by root whoever runs this.
import_rootfs() {
    local dir=$1 image=$2
    tar -C "$dir" --numeric-owner --owner=0 --group=0 \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["sh"]' \
            - "$image" >/dev/null
    say "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
}

build_busybox() {
    local busybox=/bin/busybox
    if ! { [ -x "$busybox" ] && file_is_static "$busybox"; }; then
        apt_install busybox-static
    fi
    local root=$workdir/busybox
    mkdir -p "$root"/{bin,etc,root,tmp,proc,sys,dev,usr/bin,var}
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    local applet
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    import_rootfs "$root" "$BUSYBOX_IMAGE"
}

# A dynamically linked busybox would not run in an image without libc.
file_is_static() {
    ! LC_ALL=C ldd "$1" >/dev/null 2>&1
}

build_python() {
    if [ "$(id -u)" != 0 ]; then
        say "skipping $PYTHON_IMAGE: debootstrap needs root"
        return 1
    fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || return 1
    local suite=${DEBIAN_SUITE:-}
    if [ -z "$suite" ] && [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        suite=$(. /etc/os-release && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}" || true)
    fi
    suite=${suite:-bookworm}
    local root=$workdir/python
    say "debootstrap $suite with python3-minimal (about a minute)"
    local args=(--variant=minbase --include=python3-minimal "$suite" "$root")
    [ -n "${DEBIAN_MIRROR:-}" ] && args+=("$DEBIAN_MIRROR")
    if ! timeout "${DEBOOTSTRAP_TIMEOUT:-300}" debootstrap "${args[@]}" >"$workdir/debootstrap.log" 2>&1; then
        say "skipping $PYTHON_IMAGE: debootstrap failed or took too long:"
        tail -n 5 "$workdir/debootstrap.log" >&2
        return 1
    fi
    # What a container never needs: documentation, translations, apt's caches.
    rm -rf "$root"/usr/share/{doc,man,info,locale} "$root"/var/cache/apt/* \
        "$root"/var/lib/apt/lists/* "$root"/var/log/*
    import_rootfs "$root" "$PYTHON_IMAGE"
}

if [ "$force" = 1 ] || ! have_image "$BUSYBOX_IMAGE"; then
    build_busybox
else
    say "$BUSYBOX_IMAGE exists (--force rebuilds it)"
fi

if [ "$want_python" = 1 ]; then
    if [ "$force" = 1 ] || ! have_image "$PYTHON_IMAGE"; then
        build_python || exit 3
    else
        say "$PYTHON_IMAGE exists (--force rebuilds it)"
    fi
fi
