"""Server cost of hostile uploads: 20 RGBA 6300×6300 PNGs, or 20 6300×6300 JPEGs, in one request; and four
sessions at once, each sending eight 16-bit 4000×4000 TIFFs (16 MP each, within the per-request budget).

    python tools/upload_budget.py

Each case runs in a fresh process; it prints the CPU seconds and the peak resident memory of decoding the
request(s) through `residual_core.data.images.open_uploads` (what the Probe page calls), above the process's
baseline, with how many images were decoded and refused; the concurrent case also prints the resident memory
left once every session is done.
"""

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 6300


def _tiff16() -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65535, (4000, 4000), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "TIFF")  # mode I;16, uncompressed: 32 MB
    return buffer.getvalue()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _sessions(path: str, sessions: int = 4) -> None:
    from residual_core.data.images import open_uploads

    data = Path(path).read_bytes()
    base_rss, peak, sampling = _rss_mb(), [0.0], [True]
    results = []

    def sample() -> None:  # ru_maxrss is a process-long high-water mark: sample the resident size instead
        while sampling[0]:
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()

    def session(i: int) -> None:
        batch = open_uploads([(f"s{i}-{k}.tif", data) for k in range(8)])
        results.append((len(batch.images), len(batch.errors)))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    sampling[0] = False
    sampler.join()
    print(json.dumps({"case": f"{sessions} sessions × 8 × 4000² 16-bit TIFF at once", "bytes_per_file": len(data),
                      "decoded": sum(r[0] for r in results), "refused": sum(r[1] for r in results),
                      "wall_seconds": round(wall, 2),
                      "peak_rss_above_baseline_mb": round(peak[0] - base_rss, 1),
                      "rss_after_above_baseline_mb": round(_rss_mb() - base_rss, 1)}))


def _payload(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (SIDE // 9, SIDE // 9, 4), dtype=np.uint8)
    pixels = np.tile(tile, (9, 9, 1))  # [6300, 6300, 4]: compresses, decodes to the full size
    image = Image.fromarray(pixels, "RGBA")
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _child(kind: str, path: str) -> None:
    from residual_core.data.images import open_uploads

    data = Path(path).read_bytes()
    files = [(f"big{i}.{kind}", data) for i in range(20)]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    batch = open_uploads(files)
    cpu = time.process_time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"case": f"20 × {SIDE}² {kind.upper()}", "bytes_per_file": len(data), "decoded": len(batch.images),
                      "refused": len(batch.errors), "cpu_seconds": round(cpu, 2),
                      "peak_rss_above_baseline_mb": round((peak - base_rss) / 1024, 1)}))


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--sessions":
        _sessions(sys.argv[2])
        return 0
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("png", "jpeg"):
            path = Path(tmp) / f"big.{kind}"
            path.write_bytes(_payload(kind))
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True,
                                 check=True, cwd=root, env=os.environ | {"PYTHONPATH": str(root)})
            print(out.stdout.strip())
        path = Path(tmp) / "big16.tif"
        path.write_bytes(_tiff16())
        out = subprocess.run([sys.executable, __file__, "--sessions", str(path)], capture_output=True, text=True,
                             check=True, cwd=root, env=os.environ | {"PYTHONPATH": str(root)})
        print(out.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
