#!/usr/bin/env bash
# The browser check of the HTML report: renders a report in headless Chromium and fails when the
# page is blank or a chart is missing.
#   scripts/check-report.sh            # runs the smoke comparison first, into a temp folder
#   scripts/check-report.sh RUN_DIR    # checks RUN_DIR/index.html (made by compare or report)
#   scripts/check-report.sh CAP_DIR    # a capacity folder (capacity.json, no results.json): its page,
#                                      # made by `fanbench report CAP_DIR`, with two charts a design
#                                      # (and two more for a --sweep)
# FANBENCH=path/to/fanbench picks the binary (default: target/debug/fanbench, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --browser

fanbench=${FANBENCH:-target/debug/fanbench}
[ -x "$fanbench" ] || cargo build --locked -p fanbench
run_dir=${1:-}
if [ -z "$run_dir" ]; then
  run_dir=$(mktemp -d)
  trap 'rm -rf "$run_dir"' EXIT
  echo "==> smoke comparison into $run_dir"
  "$fanbench" compare --quiet --scenario scenarios/smoke.toml --out "$run_dir" > "$run_dir/compare.out"
fi
page="$run_dir/index.html"
[ -f "$page" ] || { echo "error: no report at $page" >&2; exit 1; }

profile=$(mktemp -d)
chromium_run() {
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" "$@" 2>/dev/null
}
echo "==> rendering $page in headless Chromium"
chromium_run --dump-dom "file://$(realpath "$page")" > "$profile/dom.html"
chromium_run --window-size=1100,1600 --screenshot="$profile/top.png" "file://$(realpath "$page")" >/dev/null

# A capacity folder's page has its own sections: the check reads which designs it should show.
capacity=""
if [ -f "$run_dir/capacity.json" ] && [ ! -f "$run_dir/results.json" ]; then
  capacity="$run_dir/capacity.json"
fi

python3 - "$profile/dom.html" "$profile/top.png" "$capacity" <<'PY'
import json, re, struct, sys, zlib

dom = open(sys.argv[1], encoding="utf-8").read()
problems = []
if sys.argv[3]:
    # The capacity page: per design, latency and throughput against the offered rate, the
    # latency chart with its knee marked wherever the design has a capacity.
    doc = json.load(open(sys.argv[3], encoding="utf-8"))
    designs = doc["designs"]
    charts = [kind + "-" + d for d in designs for kind in ("latency", "throughput")]
    # A sweep (--sweep DESIGN.KEY=V1,V2,...) adds its limits and its hockey sticks on one chart each.
    if doc.get("sweep"):
        charts += ["sweep-capacity", "sweep-latency"]
    for name, d in designs.items():
        m = re.search(r'<section id="latency-%s">(.*?)</section>' % re.escape(name), dom, re.S)
        if m and d.get("capacity_rps") and ("knee at %s/s" % d["capacity_rps"]) not in m.group(1):
            problems.append("the %s latency chart does not mark its knee at %s/s" % (name, d["capacity_rps"]))
    for sid in ("verdict", "bottlenecks"):
        if '<section id="%s">' % sid not in dom:
            problems.append("section %s is missing from the rendered page" % sid)
else:
    charts = ["latency-percentiles", "latency-over-time", "errors-over-time", "time-breakdown",
              "pool-and-postgres", "queue", "delivery"]
for sid in charts:
    m = re.search(r'<section id="%s">(.*?)</section>' % re.escape(sid), dom, re.S)
    if not m:
        problems.append("section %s is missing from the rendered page" % sid)
    elif m.group(1).count("<svg") != 1:
        problems.append("section %s has %d charts, not 1" % (sid, m.group(1).count("<svg")))
    elif "<path" not in m.group(1) and "<polyline" not in m.group(1) and "<rect" not in m.group(1):
        problems.append("the chart of %s draws nothing" % sid)

def pixels(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), "unexpected PNG format"
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return [(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, stride, bpp)]

px = pixels(sys.argv[2])
ink = sum(1 for p in px if min(p) < 200) / len(px)
if ink < 0.02:
    problems.append("the page looks blank: only %.2f %% of the first screen is not white" % (ink * 100))
if problems:
    print("report check FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("report check passed: %d chart sections, %.1f %% ink on the first screen" % (len(charts), ink * 100))
PY
rm -rf "$profile"
