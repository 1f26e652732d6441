#!/usr/bin/env bash
# Builds the VST3 SDK test-suite driver from the SDK sources vendored in the clap-wrapper crate
# (crates.io). Prints the path of the binary. Usage: build.sh OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
mkdir -p "$out"
# Fetch the crate's sources into cargo's registry (no build of the crate itself).
fetch="$out/fetch"
mkdir -p "$fetch/src"
printf '[package]\nname = "fetch-vst3sdk"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nclap-wrapper = "=0.3.1"\n[workspace]\n' > "$fetch/Cargo.toml"
: > "$fetch/src/lib.rs"
(cd "$fetch" && cargo fetch --quiet)
sdk="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/clap-wrapper-0.3.1/external/vst3sdk | head -n 1)"
[ -d "$sdk" ] || { echo "VST3 SDK sources not found" >&2; exit 1; }
bin="$out/vst3-validator"
if [ -x "$bin" ] && [ "$bin" -nt "$here/driver.cpp" ]; then echo "$bin"; exit 0; fi
sources=(
  "$sdk"/base/source/*.cpp
  "$sdk"/base/thread/source/*.cpp
  "$sdk"/pluginterfaces/base/*.cpp
  $(ls "$sdk"/public.sdk/source/vst/testsuite/*.cpp "$sdk"/public.sdk/source/vst/testsuite/*/*.cpp | grep -v plugcompat)
  "$sdk"/public.sdk/source/vst/hosting/{module,module_linux,plugprovider,hostclasses,pluginterfacesupport,connectionproxy,eventlist,parameterchanges,processdata}.cpp
  "$sdk"/public.sdk/source/vst/utility/{stringconvert,testing}.cpp
  "$sdk"/public.sdk/source/vst/vstinitiids.cpp
  "$sdk"/public.sdk/source/vst/vstpresetfile.cpp
  $(ls "$sdk"/public.sdk/source/common/*.cpp | grep -v -e win32 -e mac)
)
objs=()
mkdir -p "$out/obj"
i=0
for src in "${sources[@]}"; do
  [ -f "$src" ] || continue
  obj="$out/obj/$i.o"; i=$((i + 1))
  objs+=("$obj")
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ]; then
    echo "g++ -c $src" >&2
    g++ -std=c++17 -O1 -w -fPIC -DRELEASE=1 -I"$sdk" -c "$src" -o "$obj" &
    # Two compile jobs at a time.
    while [ "$(jobs -r | wc -l)" -ge 2 ]; do wait -n; done
  fi
done
wait
g++ -std=c++17 -O1 -w -DRELEASE=1 -I"$sdk" "$here/driver.cpp" "${objs[@]}" -o "$bin" -ldl -lpthread
echo "$bin"
