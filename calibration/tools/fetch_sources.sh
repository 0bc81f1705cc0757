#!/bin/sh
# Download the Debian (bookworm) packages the calibration texts come from and
# unpack each into DEST/<package>/ (no installation, no root needed for dpkg -x).
# Usage: fetch_sources.sh DEST
# Needs: apt-get (with an updated package list) and dpkg-deb.
set -eu
DEST=${1:?usage: fetch_sources.sh DEST}
mkdir -p "$DEST/debs"
PKGS="r-cran-janeaustenr dict-devil fortunes-zh libpython3.11-stdlib python3.11-doc"
cd "$DEST/debs"
apt-get download $PKGS
for p in $PKGS; do
    deb=$(ls "${p}"_*.deb | head -n 1)
    rm -rf "$DEST/$p"
    mkdir -p "$DEST/$p"
    dpkg-deb -x "$deb" "$DEST/$p"
    echo "$p $(dpkg-deb -f "$deb" Version)" >> "$DEST/versions.txt.new"
done
mv "$DEST/versions.txt.new" "$DEST/versions.txt"
cat "$DEST/versions.txt"
