#!/usr/bin/env bash
# What `make interop` needs besides the apt packages `make deps` installs (libaxis-java, a JDK,
# gsoap, libgsoap-dev, g++, python3-venv, libxenmisc4.17 for the fake xl): zeep, in a venv under
# the given directory (target/interop/venv), installed once from PyPI with the pinned version.
# Usage: interop/setup.sh OUT_DIR
set -euo pipefail
out=$1
ZEEP_VERSION=4.3.3
for tool in java javac wsdl2h soapcpp2 g++ pkg-config python3; do
  command -v "$tool" >/dev/null || { echo "interop/setup.sh: $tool is missing; run make deps" >&2; exit 1; }
done
[ -f /usr/share/java/axis.jar ] || { echo "interop/setup.sh: Axis 1.4 (libaxis-java) is missing; run make deps" >&2; exit 1; }
mkdir -p "$out"
if ! "$out/venv/bin/python" -c "import zeep, sys; sys.exit(zeep.__version__ != '$ZEEP_VERSION')" 2>/dev/null; then
  rm -rf "$out/venv"
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check "zeep==$ZEEP_VERSION"
fi
