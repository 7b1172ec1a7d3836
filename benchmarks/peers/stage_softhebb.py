"""Put the SoftHebb reference layer (NeuromorphicComputing/SoftHebb: ``hebbconv.py`` and the two
files it imports) and its pure-Python imports (einops, tabulate) in one folder that a machine
without network can use: ``benchmarks/gpu.py`` runs ``benchmarks/conv_softhebb.py --device cuda``
against it when it finds ``benchmarks/peers/_softhebb/hebbconv.py`` (git-ignored: the reference
is not ours to commit; carry the folder to the GPU machine with the working tree).

    python benchmarks/peers/stage_softhebb.py --source /path/to/SoftHebb [--to benchmarks/peers/_softhebb]

einops and tabulate are copied from this Python environment when it has them, else installed
into the folder with ``pip install --target`` (needs the package registry).
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

FILES = ("hebbconv.py", "utils.py", "activation.py")
PACKAGES = ("einops", "tabulate")
DEFAULT = Path(__file__).resolve().parent / "_softhebb"


def stage(source, to=DEFAULT):
    source, to = Path(source), Path(to)
    missing = [f for f in FILES if not (source / f).is_file()]
    if missing:
        raise SystemExit(f"{source} is not a SoftHebb checkout: no {', '.join(missing)}")
    to.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copy2(source / f, to / f)
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.origin:
            origin = Path(spec.origin)
            if origin.name == "__init__.py":
                shutil.copytree(origin.parent, to / pkg, dirs_exist_ok=True)
            else:
                shutil.copy2(origin, to / origin.name)
        else:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(to), pkg],
                           check=True)
    return to


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=os.environ.get("SOFTHEBB_DIR"), help="a SoftHebb checkout (default $SOFTHEBB_DIR)")
    ap.add_argument("--to", default=str(DEFAULT))
    args = ap.parse_args()
    if not args.source:
        ap.error("--source (or $SOFTHEBB_DIR) must name a SoftHebb checkout")
    print(f"staged: {stage(args.source, args.to)}")


if __name__ == "__main__":
    main()
