#!/usr/bin/env bash
# Installs everything tierflow needs on a fresh Debian/Ubuntu machine (or any machine with Python 3.11):
# uv, the locked Python environment (.venv), and where apt is available the Fashion-MNIST idx files,
# Prometheus (with promtool) for the local stack and stunnel4 (the tests' TLS listener in front of the broker).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

DEBS=()
[ -d /usr/share/datasets/fashion-mnist ] || DEBS+=(dataset-fashion-mnist)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || DEBS+=(prometheus)
command -v stunnel4 >/dev/null 2>&1 || DEBS+=(stunnel4)
if [ "${#DEBS[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian's ${DEBS[*]}"
  $SUDO apt-get update -qq >/dev/null || true
  # --no-install-recommends: Prometheus without its node exporter. Where systemd runs, the package also
  # starts a system service on :9090; the local stack runs its own server on loopback :19090 beside it.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${DEBS[@]}" >/dev/null \
    || echo "warning: not all of ${DEBS[*]} installed (the Fashion-MNIST loader will try to download;" \
            "the stack's Prometheus and the TLS tests need prometheus and stunnel4)" >&2
fi

uv sync --frozen --all-extras --quiet
echo "installed: $(.venv/bin/python --version), $(.venv/bin/tierflow --help >/dev/null && echo tierflow CLI ok)"
