#!/usr/bin/env python3
"""The sweep report in a real browser (headless Chromium, Debian's `chromium`): lowbit sweep on a
small MLP, then the page rendered to a PNG, its DOM after rendering checked for the charts (one
point per measured variant, the Pareto front, the bits chart), no console message, and no request
from the page other than the file itself (Chromium's network log); the same sweep again reuses
every variant and writes the same bytes; a sweep stopped by its time budget and run again
measures only what is missing; `lowbit compare --html` renders too.

    report_test.py LOWBIT_BINARY DATASET_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

lowbit, data = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp(prefix="lowbit-report-")
failures = 0


def check(name, ok, detail=""):
    global failures
    if ok:
        print(f"ok: {name}")
    else:
        failures += 1
        print(f"FAIL: {name} {detail}")


def run(*args):
    p = subprocess.run([lowbit, *args], capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        raise SystemExit(f"FAIL: lowbit {' '.join(args)} exited {p.returncode}")
    return p.stdout


browser = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions"]


def render(page, png):
    """Renders `page`: returns (dom, stderr, page_requests) and writes a screenshot to `png`."""
    url = "file://" + os.path.abspath(page)
    net = os.path.join(work, "net.json")
    shot = subprocess.run([browser, *FLAGS, "--window-size=1200,3000", f"--screenshot={png}", url],
                          capture_output=True, text=True, timeout=120)
    dom = subprocess.run([browser, *FLAGS, "--enable-logging=stderr", "--v=0", f"--log-net-log={net}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    requests = set()
    with open(net) as f:
        for event in json.load(f)["events"]:
            p = event.get("params", {})
            # Requests of the page carry its origin as initiator; the browser's own (updates,
            # time sync) say "not an origin".
            if "url" in p and "initiator" in p and p["initiator"] != "not an origin":
                requests.add(p["url"])
    return dom.stdout, shot.stderr + dom.stderr, requests


try:
    if not browser:
        print("SKIP: no chromium on this machine (scripts/install-deps.sh installs Debian's chromium)")
        sys.exit(0)
    model = os.path.join(work, "mlp.lbm")
    run("train", "--data", data, "--arch", "784-32-10", "--epochs", "1", "--train-samples", "6000", "--seed", "0",
        "--out", model, "--threads", "2")
    out = os.path.join(work, "sweep")
    sweep = ["sweep", "--model", model, "--data", data, "--out", out, "--bits", "8,4,2", "--modes", "full,dynamic",
             "--rounding", "nearest,gptq", "--calib-samples", "500", "--validation-samples", "2000", "--threads", "2", "--json"]
    result = json.loads(run(*sweep).strip().splitlines()[-1])
    variants = result["variants"]
    measured = [v for v in variants if v["measured"]]
    check("12 variants, all measured", len(variants) == 12 and len(measured) == 12, str(len(measured)))
    report = os.path.join(out, "report.html")
    with open(report, "rb") as f:
        first_bytes = f.read()
    png = os.path.join(work, "report.png")
    dom, log, requests = render(report, png)
    with open(png, "rb") as f:
        head = f.read(8)
    check("the report renders to a PNG", head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 20000, str(os.path.getsize(png)))
    points, on_front = dom.count('<circle class="point'), dom.count('<circle class="point on-front')
    check("one point per measured variant in the size chart", points == len(measured), f"{points} points")
    front = result["pareto_front"]
    check("the Pareto front's points marked", on_front == len(front) and len(front) >= 2, f"{on_front} vs {len(front)}")
    check("the front drawn", dom.count('<polyline class="front"') == 1)
    check("one point per variant in the bits chart", dom.count('<circle class="bits-point"') == len(measured))
    for chart in ("chart-size", "chart-bits", "chart-latency", "chart-throughput", "chart-layers", "chart-sensitivity"):
        check(f"chart {chart} present", f'id="{chart}"' in dom)
    check("the confusion difference and the thumbnails", 'class="confusion"' in dom and dom.count("data:image/png;base64,") > 0)
    check("a row with its command per variant", dom.count("<code>lowbit quantize") == len(variants))
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    check("no console message", not console, "; ".join(console[:3]))
    outside = sorted(u for u in requests if not u.startswith(("file:", "data:")))
    check("no request leaves the file", not outside, str(outside[:3]))
    # The JSON's figures are the page's: each measured variant's test accuracy as the table shows it.
    check("the report's accuracies are the JSON's",
          all(f"<td>{100 * v['test_accuracy']:.2f}</td>" in dom for v in measured))

    again = json.loads(run(*sweep).strip().splitlines()[-1])
    check("a second sweep reuses every variant", all(v["reused"] for v in again["variants"]))
    with open(report, "rb") as f:
        check("and writes the same report bytes", f.read() == first_bytes)

    # Interrupted: a time budget spent before the first variant; then the same command finishes.
    part_dir = os.path.join(work, "part")
    part = ["sweep", "--model", model, "--data", data, "--out", part_dir, "--bits", "8,4", "--modes", "dynamic",
            "--rounding", "nearest", "--calib-samples", "500", "--validation-samples", "2000", "--no-speed", "--json"]
    stopped = json.loads(run(*part, "--time-budget", "0.000001").strip().splitlines()[-1])
    check("a spent time budget leaves the sweep incomplete", not stopped["complete"] and not any(v["measured"] for v in stopped["variants"]))
    run("sweep", "--model", model, "--data", data, "--out", part_dir, "--bits", "8", "--modes", "dynamic", "--rounding", "nearest",
        "--calib-samples", "500", "--validation-samples", "2000", "--no-speed")
    done = json.loads(run(*part).strip().splitlines()[-1])
    check("rerun: only the missing variant is measured",
          done["complete"] and [v["reused"] for v in done["variants"]] == [True, False], str([v["reused"] for v in done["variants"]]))

    chosen = next(v for v in variants if v["name"] == result["chosen"])
    page = os.path.join(work, "compare.html")
    run("compare", "--model", chosen["model_file"], "--against", model, "--data", data, "--html", page)
    dom, log, requests = render(page, os.path.join(work, "compare.png"))
    check("compare --html: one point, the confusion difference", dom.count('<circle class="point') == 1 and 'class="confusion"' in dom)
    check("compare --html: no request leaves the file", not [u for u in requests if not u.startswith(("file:", "data:"))])
    keep = os.environ.get("LOWBIT_KEEP_REPORT")
    if keep:
        shutil.copy(png, keep)
finally:
    shutil.rmtree(work, ignore_errors=True)

print(f"report: {'all checks passed' if failures == 0 else f'{failures} failed'}")
sys.exit(1 if failures else 0)
