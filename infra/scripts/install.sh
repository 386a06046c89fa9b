#!/usr/bin/env bash
# Installs everything tierflow needs on a fresh Debian/Ubuntu machine (or any machine with Python 3.11):
# uv, the locked Python environment (.venv), and the Fashion-MNIST idx files where apt is available.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian's dataset-fashion-mnist (local Fashion-MNIST idx files)"
  $SUDO apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || echo "warning: dataset-fashion-mnist not installed; the loader will try to download" >&2
fi

uv sync --frozen --all-extras --quiet
echo "installed: $(.venv/bin/python --version), $(.venv/bin/tierflow --help >/dev/null && echo tierflow CLI ok)"
