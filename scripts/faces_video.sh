#!/usr/bin/env bash
# faces_video.sh FACES_DIR OUT.mp4: a 9-second 640x480 video from the three stills in FACES_DIR
# (astronaut, obama, grace_hopper; 75 frames each at 25 fps, a slow zoom, padded rather than cropped so
# tall portraits keep their faces), normally FACES_DIR=edge-demo/assets/faces. The Haar cascade finds a
# face in every frame. Used by the demo, the tests and the edge-demo benchmark.
set -euo pipefail
FACES=$1; OUT=$2
Z="scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,setsar=1,zoompan=z='min(zoom+0.002,1.15)':d=75:s=640x480:fps=25,setsar=1"
ffmpeg -loglevel error -y -i "$FACES/astronaut.png" -i "$FACES/obama.jpg" -i "$FACES/grace_hopper.jpg" \
  -filter_complex "[0:v]$Z[a];[1:v]$Z[b];[2:v]$Z[c];[a][b][c]concat=n=3:v=1:a=0,format=yuv420p[v]" \
  -map "[v]" -c:v libx264 "$OUT"
echo "wrote $OUT"
