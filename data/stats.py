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
    keys = ("instrument", "source", "soundfont", "split", "licence", "pair_licences")
    if any("mma" in r for r in records):
        keys += ("style_family", "kit", "kit_kind", "tempo_band", "key", "meter")
    hours: dict[str, dict[str, float]] = {key: defaultdict(float) for key in keys}
    pieces: dict[str, set[str]] = defaultdict(set)
    grooves: dict[str, set[str]] = defaultdict(set)
    for record in records:
        duration_hours = record["duration_seconds"] / 3600
        for instrument in record["pairs"]:
            hours["instrument"][instrument] += duration_hours
            # a pair's audio is derived from the piece, the soundfont and (for drums) the kit
            licences = [record["licence"], record.get("soundfont_licence", "")]
            if instrument == "drums" and "kit" in record:
                licences.append(record["kit"]["licence"])
            hours["pair_licences"][" + ".join(sorted({l for l in licences if l}))] += duration_hours
        hours["source"][record["source"]] += duration_hours
        hours["soundfont"][record["soundfont"]] += duration_hours
        hours["split"][record["split"]] += duration_hours
        hours["licence"][record["licence"]] += duration_hours
        pieces[record["split"]].add(record["piece_id"])
        song = record.get("mma")
        if song:
            hours["style_family"][song["family"]] += duration_hours
            if "kit" in record:
                hours["kit"][record["kit"]["name"]] += duration_hours
                hours["kit_kind"][record["kit"]["kind"]] += duration_hours
            hours["tempo_band"][tempo_band(song["tempo_bpm"])] += duration_hours
            hours["key"][song["chart_key"]] += duration_hours
            hours["meter"][f"{song['beats_per_bar']} beats"] += duration_hours
            grooves[record["split"]].add(f"{song['style_file']}:{song['groove']}")
    stats = {
        "variants": len(records),
        "pieces": len({r["piece_id"] for r in records}),
        "pieces_per_split": {split: len(ids) for split, ids in sorted(pieces.items())},
        "hours": {key: {k: round(v, 3) for k, v in sorted(table.items())} for key, table in hours.items()},
        "total_hours": round(sum(r["duration_seconds"] for r in records) / 3600, 3),
        "pair_hours": round(sum(r["duration_seconds"] * len(r["pairs"]) for r in records) / 3600, 3),
    }
    if grooves:
        stats["grooves_per_split"] = {split: len(names) for split, names in sorted(grooves.items())}
        stats["grooves"] = len(set().union(*grooves.values()))
        stats["style_families"] = len(hours["style_family"])
        stats["drum_kits"] = len(hours["kit"])
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


TEMPO_BANDS_BPM = (60, 80, 100, 120, 140, 160, 180)


def tempo_band(tempo_bpm: float) -> str:
    """``"100-120 BPM"``: the band of ``TEMPO_BANDS_BPM`` a tempo falls in."""
    for low, high in zip(TEMPO_BANDS_BPM, TEMPO_BANDS_BPM[1:]):
        if tempo_bpm < high:
            return f"{low}-{high} BPM" if tempo_bpm >= low else f"<{low} BPM"
    return f">={TEMPO_BANDS_BPM[-1]} BPM"


def histogram_png(build_dir: str | Path, out_png: str | Path) -> Path:
    """Hours per tempo (5 BPM bins) and per key of the MMA songs of a build, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    songs = [(r["mma"], r["duration_seconds"] / 3600) for r in read_manifest(build_dir) if "mma" in r]
    if not songs:
        raise ValueError(f"{build_dir}: no MMA songs to draw (tempo and key come from their charts)")
    figure, (tempo_axis, key_axis) = plt.subplots(1, 2, figsize=(11, 3.6))
    tempo_axis.hist([s["tempo_bpm"] for s, _ in songs], bins=range(55, 190, 5), weights=[h for _, h in songs])
    tempo_axis.set(xlabel="tempo (BPM)", ylabel="hours", title="Hours per tempo")
    keys: dict[str, float] = defaultdict(float)
    for song, duration_hours in songs:
        keys[song["chart_key"]] += duration_hours
    names = sorted(keys, key=lambda k: (k.split(" ", 1)[1], k))
    key_axis.bar(range(len(names)), [keys[n] for n in names])
    key_axis.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    key_axis.set(ylabel="hours", title="Hours per key (tonic and mode)")
    figure.tight_layout()
    out_png = Path(out_png)
    figure.savefig(out_png, dpi=110)
    plt.close(figure)
    return out_png


def format_stats(stats: dict) -> str:
    lines = [f"{stats['variants']} variants of {stats['pieces']} pieces, {stats['total_hours']:.2f} h of mixes, "
             f"{stats['pair_hours']:.2f} h of (context, stem) pairs"]
    lines.append("pieces per split: " + ", ".join(f"{k} {v}" for k, v in stats["pieces_per_split"].items()))
    if "grooves" in stats:
        lines.append(f"{stats['grooves']} MMA grooves in {stats['style_families']} style families, {stats['drum_kits']} drum kits; "
                     "grooves per split: " + ", ".join(f"{k} {v}" for k, v in stats["grooves_per_split"].items()))
    for key, table in stats["hours"].items():
        lines.append(f"hours by {key}:")
        lines.extend(f"  {name:<28} {value:8.3f}" for name, value in table.items())
    if "build_wall_seconds" in stats:
        lines.append(f"build: {stats['build_wall_seconds']:.0f} s wall on {stats['jobs']} worker(s), {stats['skipped']} skipped")
    if "render_speed_x_realtime_per_worker" in stats:
        lines.append(f"rendering speed: {stats['render_speed_x_realtime_per_worker']}x real time per worker (stem audio)")
    return "\n".join(lines)
