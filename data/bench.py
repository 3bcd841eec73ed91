"""How fast a preset renders, per worker and per machine (``backline data bench``)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from backline.data.build import build, plan, preset


def run(preset_name: str, variants: int, jobs: list[int], cluster: str | None = None) -> dict:
    config = preset(preset_name)
    results = []
    with tempfile.TemporaryDirectory(prefix="backline-bench-") as folder:
        catalogue_dir = Path(folder) / "plan"
        catalogue_dir.mkdir()
        chosen = plan(config, out_dir=catalogue_dir)[:variants]
        for count in jobs:
            out = Path(folder) / f"jobs{count}"
            out.mkdir()
            if (catalogue_dir / "mma_catalogue.json").is_file():
                (out / "mma_catalogue.json").write_bytes((catalogue_dir / "mma_catalogue.json").read_bytes())
            start = time.perf_counter()
            report = build(config, out, jobs=count, only={v.variant_id for v in chosen}, cluster=cluster)
            wall = time.perf_counter() - start
            song_seconds = sum(json.loads(line)["duration_seconds"] for line in (out / "manifest.jsonl").read_text().splitlines())
            results.append({
                "jobs": count, "scheduler": cluster or "process pool", "variants": report.built, "skipped": len(report.skipped),
                "song_seconds": round(song_seconds, 1), "wall_seconds": round(wall, 2),
                "x_realtime_per_worker": round(song_seconds / report.render_seconds, 1),
                "x_realtime_wall": round(song_seconds / wall, 1),
            })
    return {"preset": preset_name, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "results": results,
            "command": f"backline data bench --preset {preset_name} --variants {variants} --jobs "
                       + " ".join(map(str, jobs)) + (f" --cluster {cluster}" if cluster else "")}
