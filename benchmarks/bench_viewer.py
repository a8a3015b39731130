"""The live viewer's cost to the control loop: the default run with ``viewer=rerun`` off, on, and on
with its process frozen (a viewer that stops reading), side by side in one run.

    .venv/bin/python benchmarks/bench_viewer.py --ticks 2000 --rates 20,50

Each cell is ``python -m inference`` (sim robot, 3 cameras, flow policy, RTC: the defaults) for
``--ticks`` ticks at ``robot.hz``, with the same overrides as ``bench_realtime.py``'s app cells
(``algorithm.stop_on_success=false`` etc.), cells interleaved per rate (off, on, frozen). ``on``:
``viewer=rerun`` serving the web viewer on 127.0.0.1 (free ports) and writing run.rrd, no browser
attached (the server still receives and buffers the whole stream); ``frozen``: the same, with the
viewer's sink process sent SIGSTOP as soon as it is ready and SIGCONT when the run has ticked its
last tick, so its ring fills and every record after that is dropped (``viewer_dropped``). Reported
per cell: period error p50/p99/p99.9/max (ms), ticks more than 1 ms late, the VM's steal time and
how many late ticks had steal within 0.5 s (``bench_realtime.py``'s sampling), viewer records
dropped and logged. Runs itself inside ``scripts/netns.py`` (loopback only: the viewer serves).
Results: ``benchmarks/results/viewer.md`` (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scripts.netns import reexec_in_netns  # noqa: E402

VIEWER = ["viewer=rerun", "viewer.web_port=0", "viewer.grpc_port=0"]
# every cell: the device processes may take long to start on a loaded machine (not what is measured)
SLOW_START = ["robot.start_timeout_s=120", "algorithm.startup_timeout_s=600"]
MODES = {"off": SLOW_START, "on": SLOW_START + VIEWER, "frozen": SLOW_START + VIEWER}


class Freezer(threading.Thread):
    """SIGSTOPs the viewer process of the one run under ``workdir`` once it is ready; SIGCONTs it once
    ``ticks.csv`` has every tick (the run's end waits for the viewer to finish its file)."""

    def __init__(self, workdir: Path, ticks: int) -> None:
        super().__init__(daemon=True)
        self.workdir, self.ticks = workdir, ticks
        self.pid: int | None = None
        self.frozen_s = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        t_stop = None
        while not self.done.is_set():
            runs = [p for p in self.workdir.iterdir() if p.is_dir()] if self.workdir.is_dir() else []
            if runs and self.pid is None:
                log = runs[0] / "app.log"
                found = re.search(r"viewer ready in [\d.]+ s \(pid (\d+)\)", log.read_text()) if log.is_file() else None
                if found:
                    self.pid = int(found.group(1))
                    os.kill(self.pid, signal.SIGSTOP)
                    t_stop = time.monotonic()
            if self.pid is not None:
                ticks_csv, events = runs[0] / "ticks.csv", runs[0] / "events.jsonl"
                if ticks_csv.is_file() and len(ticks_csv.read_text().splitlines()) - 1 >= self.ticks:
                    break
                # a run that ended early (a fault) waits for the viewer to finish: let it
                if events.is_file() and ('"episode_end"' in events.read_text() or '"fault"' in events.read_text()):
                    break
            time.sleep(0.2)
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
            self.frozen_s = time.monotonic() - t_stop

    def stop(self) -> None:
        self.done.set()
        self.join()


def main() -> None:
    reexec_in_netns()
    import bench_realtime as rt

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--rates", default="20,50")
    ap.add_argument("--modes", default="off,on,frozen")
    args = ap.parse_args()
    rt.KEEP_RUNS = True
    base = Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[dict] = []
    rt.STEAL.start()
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            for mode in args.modes.split(","):
                workdir = base / f"{mode}_{int(rate)}"
                workdir.mkdir()
                load_avg = os.getloadavg()[0]
                freezer = Freezer(workdir, args.ticks) if mode == "frozen" else None
                if freezer:
                    freezer.start()
                try:
                    res = rt.run_app(rate, args.ticks, "processes", MODES[mode], workdir)
                except Exception as exc:  # noqa: BLE001 - e.g. a cell past its time limit: keep the others
                    res = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                finally:
                    if freezer:
                        freezer.stop()
                summary_path = Path(res.get("run_dir", "")) / "summary.json"
                s = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
                row = {
                    "hz": rate,
                    "mode": mode,
                    "load_avg": load_avg,
                    **{k: v for k, v in res.items() if k != "realtime"},
                    "viewer_dropped": s.get("viewer_dropped"),
                    "viewer_logged": s.get("viewer_logged"),
                    "telemetry_dropped": s.get("telemetry_dropped"),
                    "frozen_s": round(freezer.frozen_s, 1) if freezer else None,
                }
                rows.append(row)
                print(
                    json.dumps(
                        {
                            k: row.get(k)
                            for k in ("hz", "mode", "ticks", "p99", "max", "late_share", "viewer_dropped", "error")
                        }
                    ),
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    write(rows, started, args)


def write(rows: list[dict], started: str, args: argparse.Namespace) -> None:
    import bench_realtime as rt

    command = "cd /work/main && .venv/bin/python benchmarks/bench_viewer.py " + " ".join(sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    (rt.RESULTS / "viewer.json").write_text(
        json.dumps({"command": command, "started": started, "machine": machine, "rows": rows}, indent=2, default=str)
    )

    def f(v: object, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = [
        "# Live viewer (viewer=rerun) vs none: control loop timing",
        "",
        f"Command: `{command}`",
        "",
        f"Started {started}; {machine}; {args.ticks} ticks per cell (one episode); overrides in every cell: "
        f"`{' '.join(rt.COMMON + SLOW_START)}`; `on` and `frozen` add `{' '.join(VIEWER)}`. Period error = actual - "
        "scheduled tick time (ms). Load avg: 1-min load average when the cell started (a shared machine). "
        "Steal: hypervisor steal time during the cell; late ticks with steal: ticks > 1 ms late that had "
        "steal within 0.5 s / all late ticks.",
        "",
        "| Hz | viewer | ticks | p50 ms | p99 ms | p99.9 ms | max ms | > 1 ms late | inference p50 ms | "
        "viewer dropped | viewer logged (ticks/images/chunks) | frozen s | load avg | steal ms | "
        "late ticks with steal | error |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        logged = r.get("viewer_logged") or {}
        late = "-" if r.get("late_share") is None else f"{100 * r['late_share']:.2f}%"
        lines.append(
            f"| {r['hz']:g} | {r['mode']} | {f(r.get('ticks'))} | {f(r.get('p50'))} | {f(r.get('p99'))} | "
            f"{f(r.get('p999'))} | {f(r.get('max'))} | "
            f"{late} | "
            f"{f(r.get('inference_p50_ms'), 0)} | {f(r.get('viewer_dropped'))} | "
            f"{'/'.join(str(logged.get(k, '-')) for k in ('ticks', 'images', 'chunks')) if logged else '-'} | "
            f"{f(r.get('frozen_s'))} | {f(r.get('load_avg'), 1)} | {f(r.get('steal_ms'), 0)} | "
            f"{r.get('late_with_steal', '-')} | {r.get('error', '')} |"
        )
    out = rt.RESULTS / "viewer.md"
    reading = (
        out.read_text().split("\n## Reading", 1)[1] if out.is_file() and "\n## Reading" in out.read_text() else None
    )
    out.write_text("\n".join(lines) + "\n" + (f"\n## Reading{reading}" if reading else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
