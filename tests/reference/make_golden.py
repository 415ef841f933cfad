#!/usr/bin/env python3
"""make_golden.py: regenerates every golden file in tests/golden/ by running each
tests/reference/golden_*.py in turn (`make golden` calls this with /usr/bin/python3, which has torch).

Each script is independent PyTorch code written from the equations; it writes its own
tests/golden/*.safetensors. golden_model.py reads shipped weights, so run `make weights` first.
Stops at the first script that fails and exits with its status.
"""
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def main():
    scripts = sorted(glob.glob(os.path.join(HERE, "golden_*.py")))
    if not scripts:
        sys.exit("make_golden: no tests/reference/golden_*.py found")
    for path in scripts:
        name = os.path.relpath(path, ROOT)
        print("== %s" % name, flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, path], cwd=ROOT)
        if rc != 0:
            sys.exit("make_golden: %s failed (exit %d)" % (name, rc))
        print("   (%.1f s)" % (time.time() - t0), flush=True)
    print("make_golden: %d scripts, golden files in tests/golden/" % len(scripts))


if __name__ == "__main__":
    main()
