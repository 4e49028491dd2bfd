#!/bin/sh
# Builds the static couchsim binary on the host and the FROM scratch image from it.
# Usage (from anywhere): couchsim/build-image.sh [image-tag]   (default tag: couchsim:dev)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tag=${1:-couchsim:dev}
target_dir=${CARGO_TARGET_DIR:-$root/target}
cd "$root"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p couchsim --target x86_64-unknown-linux-gnu
mkdir -p "$here/dist"
cp "$target_dir/x86_64-unknown-linux-gnu/release/couchsim" "$here/dist/couchsim"
docker build -t "$tag" "$here"
