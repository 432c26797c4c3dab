"""Server cost of hostile uploads: 20 RGBA 6300×6300 PNGs, or 20 6300×6300 JPEGs, in one request.

    python tools/upload_budget.py

Each case runs in a fresh process; it prints the CPU seconds and the peak resident memory of decoding the
request through `residual_core.images.open_uploads` (what the Probe page calls), above the process's
baseline, with how many images were decoded and refused.
"""

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 6300


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
    from residual_core.images import open_uploads

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
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("png", "jpeg"):
            path = Path(tmp) / f"big.{kind}"
            path.write_bytes(_payload(kind))
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True,
                                 check=True, cwd=root, env=os.environ | {"PYTHONPATH": str(root)})
            print(out.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
