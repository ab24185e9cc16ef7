#!/usr/bin/env bash
# vtest_video.sh OUT.avi: OpenCV's sample video of pedestrians (vtest.avi, 768x576, 795 frames), taken
# from Debian's opencv-doc package (downloaded with `apt-get download`, unpacked with dpkg-deb; nothing
# is installed). The video is copyrighted sample data: it is extracted on each machine, never committed.
# The video is kept in the cache (DLCV_CACHE, default ~/.cache/dlcv; the 96 MB package is deleted once
# it is out), so a second call costs a copy. Used by the edge-demo detect test, the demo and bench/edge_detect_bench.sh.
set -euo pipefail
OUT=$1
CACHE=${DLCV_CACHE:-$HOME/.cache/dlcv}
MEMBER=./usr/share/doc/opencv-doc/examples/data/vtest.avi
mkdir -p "$CACHE"
# one download at a time (the demo, a test and the benchmark share the cache)
exec 9>"$CACHE/.vtest.lock"
flock 9
if [[ ! -s "$CACHE/vtest.avi" ]]; then
  deb=$(ls "$CACHE"/opencv-doc_*.deb 2>/dev/null | head -1 || true)
  if [[ -z "$deb" ]]; then
    # the system's package lists first; without them (a fresh image), lists of our own
    log=$(cd "$CACHE" && apt-get download opencv-doc 2>&1) || {
      # shellcheck source=own_apt.sh
      source "$(dirname "${BASH_SOURCE[0]}")/own_apt.sh"
      own_apt_update "$CACHE/apt-deb" deb || exit 1
      log=$(cd "$CACHE" && apt-get "${OWN_APT_OPTS[@]}" -q download opencv-doc 2>&1) || {
        echo "$log" >&2
        echo "vtest_video.sh: cannot download Debian's opencv-doc (list: $CACHE/apt-deb/sources.list)" >&2
        exit 1
      }
      rm -rf "$CACHE/apt-deb"
    }
    deb=$(ls "$CACHE"/opencv-doc_*.deb | head -1)
  fi
  dpkg-deb --fsys-tarfile "$deb" | tar -x -O "$MEMBER" >"$CACHE/vtest.avi.part"
  mv "$CACHE/vtest.avi.part" "$CACHE/vtest.avi"
  rm -f "$deb"
fi
cp "$CACHE/vtest.avi" "$OUT"
echo "wrote $OUT"
