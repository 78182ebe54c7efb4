"""`python -m bench --loading`: how long loading an image folder takes, against a plain PIL loop.

Every figure comes from a fresh process (nothing imported or cached in memory), on the same files,
extracted into a temporary folder:
- plain PIL: list the files, then `Image.open(path).convert("RGB")` into one array, in one process;
- cold load: `core.data.load_dataset("imagefolder:PATH")` with an empty cache, as `python -m core.train`
  does it (the decoder import and the worker processes included; importing torch is not);
- warm load: the same call again, from the cache the cold load wrote.
The cold load's first step, getting torchvision's JPEG decoder (its image library alone, or all of torchvision
where that cannot be loaded by itself), is also shown on its own.
CPU seconds (the process and its children) are printed beside the wall times: on a busy machine they
move less than the wall times do.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEV_TAR = ROOT.parent / "shared" / "data" / "cifar10-dev.tar.gz"

# Each snippet prints {"seconds", "cpu_s", "images"}; the clock starts after the imports.
_CLOCK = """
import json, resource, sys, time
def cpu():
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))
"""
PLAIN_PIL = (
    _CLOCK
    + """
import os
import numpy as np
from PIL import Image
cpu0, t0 = cpu(), time.perf_counter()
files = sorted(os.path.join(d, f) for d, _, names in os.walk(sys.argv[1]) for f in names)
out = np.empty((len(files), 32, 32, 3), np.uint8)
for i, f in enumerate(files):
    with Image.open(f) as im:
        out[i] = np.asarray(im.convert("RGB"))
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": cpu() - cpu0, "images": len(files)}))
"""
)
OUR_LOAD = (
    _CLOCK
    + """
import sys
from core.data import datasets as data
from core.data.spec import DataSpec
decoder = data.fast_jpeg_decoder
decoder_s = []

def timed_decoder():  # the first call loads the decoder, when the load decides to use it
    started = time.perf_counter()
    try:
        return decoder()
    finally:
        decoder_s.append(time.perf_counter() - started)

data.fast_jpeg_decoder = timed_decoder
cpu0, t0 = cpu(), time.perf_counter()
ds = data.load_dataset(DataSpec.folder_of(sys.argv[1]), data_dir=sys.argv[2])
seconds, cpu_s = time.perf_counter() - t0, cpu() - cpu0
n = len(ds.train) + len(ds.test)
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "images": n, "workers": data.decode_workers(n), "skipped": ds.skipped,
                  "decoder_s": sum(decoder_s), "imported_torchvision": "torchvision" in sys.modules}))
"""
)


def _timed(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def loading_figures(tar: Path = DEV_TAR, repeats: int = 3, log=print) -> dict[str, Any]:
    """Plain PIL vs our cold and warm loads of the images in `tar`, `repeats` times, interleaved."""
    rounds = []
    with tempfile.TemporaryDirectory(prefix="loading-bench-") as tmp:
        folder = Path(tmp) / "images"
        with tarfile.open(tar) as archive:
            archive.extractall(folder, filter="data")
        for r in range(repeats):
            log(f"round {r + 1}/{repeats}: plain PIL, cold load, warm load...")
            load_before = os.getloadavg()[0]
            plain = _timed(PLAIN_PIL, str(folder))
            cache = Path(tmp) / f"data-{r}"
            cold = _timed(OUR_LOAD, str(folder), str(cache))
            warm = _timed(OUR_LOAD, str(folder), str(cache))
            if not plain["images"] == cold["images"] == warm["images"]:
                raise RuntimeError(f"the loads saw different files: {plain}, {cold}, {warm}")
            rounds.append(
                {
                    "plain": plain,
                    "cold": cold,
                    "warm": warm,
                    "ratio": cold["seconds"] / plain["seconds"],
                    "ratio_without_import": (cold["seconds"] - cold["decoder_s"]) / plain["seconds"],
                    "cpu_ratio": cold["cpu_s"] / plain["cpu_s"],
                    "load_average": [load_before, os.getloadavg()[0]],
                }
            )
    return {
        "images": rounds[0]["plain"]["images"],
        "cores": os.cpu_count(),
        "workers": rounds[0]["cold"]["workers"],
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_ratio_without_import": statistics.median(r["ratio_without_import"] for r in rounds),
    }


def loading_table(figures: dict[str, Any]) -> str:
    n = figures["images"]
    lines = [
        f"{n} JPEGs, {figures['cores']} cores, {figures['workers']} decode workers",
        "",
        "| round | plain PIL, 1 process | our cold load | of it, getting the JPEG decoder | our warm load | cold / plain "
        "| same without that | CPU s: plain, cold | load average |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(figures["rounds"], 1):
        p, c, w = r["plain"], r["cold"], r["warm"]
        lines.append(
            f"| {i} | {p['seconds']:.2f} s ({n / p['seconds']:,.0f} img/s) | {c['seconds']:.2f} s "
            f"({n / c['seconds']:,.0f} img/s) | {c['decoder_s']:.2f} s | {w['seconds']:.2f} s | **{r['ratio']:.2f}x** | "
            f"{r['ratio_without_import']:.2f}x | {p['cpu_s']:.1f}, {c['cpu_s']:.1f} | "
            f"{r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f} |"
        )
    lines.append(
        f"\nmedian cold / plain: **{figures['median_ratio']:.2f}x** "
        f"({figures['median_ratio_without_import']:.2f}x without getting the decoder)"
    )
    return "\n".join(lines)


def main(repeats: int = 3, as_json: bool = False, tar: str | None = None) -> int:
    source = Path(tar) if tar else DEV_TAR
    if not source.exists():
        print(f"error: {source} not found; pass --loading-tar with a .tar.gz of an image folder (train/ and test/).", file=sys.stderr)
        return 2
    figures = loading_figures(source, repeats, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(figures, indent=1) if as_json else loading_table(figures))
    return 0
