#!/usr/bin/env bash
# Rebuilds .dvc/plots_offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined, so
# `dvc plots show` works offline (DVC's default page loads them from a CDN). Needs npm.
set -euo pipefail
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent vega@5 vega-lite@5 vega-embed@6 >/dev/null && for f in *.tgz; do tar xzf "$f" && mv package "${f%.tgz}"; done)
out="$(dirname "$0")/plots_offline.html"
{
  echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC plots (offline)</title>'
  for lib in vega vega-lite vega-embed; do
    echo "<script>"; cat "$work"/"$lib"-[0-9]*/build/"$lib".min.js; echo "</script>"
  done
  echo '<style>body{font-family:sans-serif} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 6px}</style>'
  echo '</head><body>{plot_divs}</body></html>'
} > "$out"
echo "wrote $out"
