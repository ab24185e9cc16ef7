#!/usr/bin/env bash
# dlib_faces.sh DEST_DIR: dlib's face-detection example set (examples/faces/: training.xml and
# testing.xml in dlib imglab XML, 4 + 5 PASCAL VOC photos with their face boxes), taken from Debian's
# dlib SOURCE package (fetched with `apt-get source --download-only`; nothing is built or installed).
# The photos are copyrighted sample data: they are extracted on each machine, never committed.
#
# The system's apt configuration is left alone: the deb-src lines are made from the URIs, Suites and
# Components it already names (/etc/apt/sources.list.d/debian.sources, else /etc/apt/sources.list) and
# written to a list of our own in the cache (DLCV_CACHE, default ~/.cache/dlcv), with its own package
# lists and apt cache there. The orig tarball is kept in the cache, so a second call costs an extraction.
# Writes DEST_DIR/faces/ (the XML files and the images). Used by tests/tests/dlib_faces.rs.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: dlib_faces.sh DEST_DIR" >&2
  exit 2
fi
DEST=$1
CACHE=${DLCV_CACHE:-$HOME/.cache/dlcv}
SRC=$CACHE/dlib-src
APT=$CACHE/apt
fail() {
  echo "dlib_faces.sh: $*" >&2
  exit 1
}

# shellcheck source=own_apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/own_apt.sh"

orig() { ls "$SRC"/dlib_*.orig.tar.* 2>/dev/null | head -1 || true; }

mkdir -p "$SRC"
# one download at a time (tests run in parallel share the cache)
exec 9>"$SRC/.lock"
flock 9
tarball=$(orig)
if [[ -z $tarball ]]; then
  own_apt_update "$APT" deb-src || fail "cannot make the deb-src list for dlib"
  log=$(cd "$SRC" && apt-get "${OWN_APT_OPTS[@]}" -q source --download-only dlib 2>&1) || {
    echo "$log" >&2
    fail "cannot download Debian's dlib source package (deb-src list: $APT/sources.list)"
  }
  tarball=$(orig)
  [[ -n $tarball ]] || fail "apt-get source left no dlib_*.orig.tar.* in $SRC"
  # only the orig tarball is needed again: not the .dsc, the Debian diff or the package lists
  find "$SRC" -maxdepth 1 -type f ! -name 'dlib_*.orig.tar.*' ! -name .lock -delete
  rm -rf "$APT/lists" "$APT/cache"
fi

OUT=$DEST/faces
rm -rf "$OUT.part"
mkdir -p "$OUT.part"
tar -xf "$tarball" -C "$OUT.part" --no-same-owner --wildcards --strip-components=3 '*/examples/faces/*' ||
  fail "cannot extract examples/faces/ from $tarball"
for x in training.xml testing.xml; do
  [[ -s $OUT.part/$x ]] || fail "$tarball has no examples/faces/$x"
  # every image the XML names must have come along
  for img in $(sed -n -E "s/.*<image file=['\"]([^'\"]+)['\"].*/\1/p" "$OUT.part/$x"); do
    [[ -s $OUT.part/$img ]] || fail "$x names $img, which $tarball lacks"
  done
done
rm -rf "$OUT"
mv "$OUT.part" "$OUT"
echo "wrote $OUT ($(ls "$OUT" | wc -l) files from $(basename "$tarball"))"
