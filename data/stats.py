"""What a build holds: hours per instrument, source, soundfont and split, and how fast it rendered."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from backline.data.dataset import read_manifest


def build_stats(build_dir: str | Path) -> dict:
    """Return hours of (context, target) pairs per target instrument, source, soundfont and split."""
    build_dir = Path(build_dir)
    records = read_manifest(build_dir)
    hours: dict[str, dict[str, float]] = {key: defaultdict(float) for key in ("instrument", "source", "soundfont", "split")}
    pieces: dict[str, set[str]] = defaultdict(set)
    for record in records:
        duration_hours = record["duration_seconds"] / 3600
        for instrument in record["pairs"]:
            hours["instrument"][instrument] += duration_hours
        hours["source"][record["source"]] += duration_hours
        hours["soundfont"][record["soundfont"]] += duration_hours
        hours["split"][record["split"]] += duration_hours
        pieces[record["split"]].add(record["piece_id"])
    stats = {
        "variants": len(records),
        "pieces": len({r["piece_id"] for r in records}),
        "pieces_per_split": {split: len(ids) for split, ids in sorted(pieces.items())},
        "hours": {key: {k: round(v, 3) for k, v in sorted(table.items())} for key, table in hours.items()},
        "total_hours": round(sum(r["duration_seconds"] for r in records) / 3600, 3),
    }
    report_path = build_dir / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        stats["skipped"] = len(report["skipped"])
        stats["build_wall_seconds"] = report["wall_seconds"]
        stats["jobs"] = report["jobs"]
        if report["render_seconds"] > 0:
            # seconds of stem audio rendered per second of one worker's time
            stats["render_speed_x_realtime_per_worker"] = round(report["audio_seconds_rendered"] / report["render_seconds"], 1)
    return stats


def format_stats(stats: dict) -> str:
    lines = [f"{stats['variants']} variants of {stats['pieces']} pieces, {stats['total_hours']:.2f} h of mixes"]
    lines.append("pieces per split: " + ", ".join(f"{k} {v}" for k, v in stats["pieces_per_split"].items()))
    for key, table in stats["hours"].items():
        lines.append(f"hours by {key}:")
        lines.extend(f"  {name:<28} {value:8.3f}" for name, value in table.items())
    if "build_wall_seconds" in stats:
        lines.append(f"build: {stats['build_wall_seconds']:.0f} s wall on {stats['jobs']} worker(s), {stats['skipped']} skipped")
    if "render_speed_x_realtime_per_worker" in stats:
        lines.append(f"rendering speed: {stats['render_speed_x_realtime_per_worker']}x real time per worker (stem audio)")
    return "\n".join(lines)
