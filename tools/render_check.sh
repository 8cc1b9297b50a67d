#!/usr/bin/env bash
# Renders an HTML report in headless Chromium, as a user's browser would, and writes a
# screenshot. Usage: tools/render_check.sh HTML_FILE PNG_OUT
# Exit 0 when Chromium produced a PNG; 2 on bad usage; 1 when rendering failed. Whether
# the picture is non-blank is checked by tests/compress/report_test.cpp (ReportRender).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 HTML_FILE PNG_OUT" >&2
  exit 2
fi
html=$1
png=$2
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -r "$html" ]; then
  echo "render_check: $html: cannot read" >&2
  exit 2
fi
if [ ! -x "$chromium" ]; then
  echo "render_check: $chromium not found (apt-get install chromium)" >&2
  exit 1
fi
html_abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
png_dir=$(cd "$(dirname "$png")" && pwd)
png_abs=$png_dir/$(basename "$png")

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$png_abs"
# No network: the page is self-contained, and these flags keep Chromium's own
# background services (updates, sync, QUIC probes) quiet.
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --screenshot="$png_abs" \
  --window-size=1200,1600 "file://$html_abs" >"$profile/chromium.log" 2>&1 || {
  echo "render_check: chromium failed (exit $?):" >&2
  tail -20 "$profile/chromium.log" >&2
  exit 1
}
if [ ! -s "$png_abs" ]; then
  echo "render_check: chromium wrote no screenshot to $png_abs" >&2
  tail -20 "$profile/chromium.log" >&2
  exit 1
fi
# A PNG starts with \x89PNG.
if [ "$(head -c 4 "$png_abs" | od -An -tx1 | tr -d ' \n')" != "89504e47" ]; then
  echo "render_check: $png_abs is not a PNG" >&2
  exit 1
fi
echo "render_check: $png_abs ($(stat -c %s "$png_abs") bytes)"
