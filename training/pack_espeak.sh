#!/usr/bin/env bash
# espeak-ng for the GPU machine (which cannot install packages): the binary, the libraries it links
# (ldd) and the English, Mandarin and Japanese parts of espeak-ng-data. Usage: pack_espeak.sh OUT_DIR
set -euo pipefail
out=${1:-.cache/espeak}
src=$(dirname "$(find /usr/lib -name phontab -path '*espeak-ng-data*' | head -1)")
mkdir -p "$out/lib" "$out/espeak-ng-data"
cp "$(command -v espeak-ng)" "$out/espeak-ng"
ldd "$(command -v espeak-ng)" | awk '/=> \//{print $3}' | grep -v -e 'libc.so' -e 'libm.so' -e 'ld-linux' \
  | xargs -I{} cp -L {} "$out/lib/"
for f in phondata phontab phonindex intonations en_dict cmn_dict ja_dict; do cp "$src/$f" "$out/espeak-ng-data/"; done
cp -r "$src/voices" "$src/lang" "$out/espeak-ng-data/"
du -sh "$out"
