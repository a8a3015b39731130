"""Run a command while busy-loop processes compete with it for the CPUs the whole time.

    python scripts/busy_load.py [--procs N] -- CMD [ARGS...]
    python scripts/busy_load.py --procs 2 -- make test

The suite must hold on a loaded machine (CI runs it on a shared 2-core host): a test may wait for a
condition, never on how fast the machine happens to be. This is how to check that on purpose:
``--procs`` (default 2) plain ``while True`` processes at normal priority, on no particular CPU, start
before CMD and run until it ends; then they are killed and this script exits with CMD's exit status
(128 + n when a signal n ended it), after printing how long CMD took.

CMD's environment carries ``BUSY_LOAD_PIDS`` (the loops' pids, comma-separated), so a test can see
the load is there. Each loop also exits by itself once this script is gone (a ``kill -9`` of it
leaves no spinning orphan). SIGTERM to this script is passed on to CMD; Ctrl-C reaches CMD through
the terminal's process group as usual.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

ENV_PIDS = "BUSY_LOAD_PIDS"
MARKER = "busy_load-loop"  # in each loop's command line, to tell it apart in `ps`

# Spin; every few million turns check that the parent (this script) is still there.
LOOP = """
import os, sys
parent = int(sys.argv[2])
x = 0
while True:
    x += 1
    if x % 2_000_000 == 0 and os.getppid() != parent:
        break
"""


def start_loops(n: int) -> list[subprocess.Popen]:
    """``n`` busy-loop processes, children of this one (stdin closed, output discarded)."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", LOOP, MARKER, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


def stop_loops(loops: list[subprocess.Popen]) -> None:
    for p in loops:
        if p.poll() is None:
            p.kill()
    for p in loops:
        p.wait()


def exit_status(returncode: int) -> int:
    """A shell's convention: a command ended by signal n exits 128 + n."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage="%(prog)s [--procs N] -- CMD [ARGS...]")
    ap.add_argument("--procs", type=int, default=2, help="busy-loop processes to run beside CMD (default 2)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given (put it after --)")
    if args.procs < 0:
        ap.error(f"--procs must be >= 0, got {args.procs}")
    loops = start_loops(args.procs)
    child: subprocess.Popen | None = None
    previous = signal.getsignal(signal.SIGTERM)

    def forward_term(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward_term)
    t0 = time.monotonic()
    try:
        env = dict(os.environ, **{ENV_PIDS: ",".join(str(p.pid) for p in loops)})
        child = subprocess.Popen(cmd, env=env)
        while True:
            try:
                returncode = child.wait()
                break
            except KeyboardInterrupt:  # the terminal's Ctrl-C reached CMD too: wait for it to end
                continue
    finally:
        took_s = time.monotonic() - t0
        stop_loops(loops)
        signal.signal(signal.SIGTERM, previous)
    status = exit_status(returncode)
    print(
        f"busy_load: {' '.join(cmd)} took {took_s:.1f} s ({took_s / 60:.1f} min) beside {args.procs} "
        f"busy-loop process(es); exit status {status}",
        file=sys.stderr,
        flush=True,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
