"""The tables of bench/ingest_stages.py's results for docs/benchmarks.md."""

from __future__ import annotations

STAGE_ORDER = ("scan", "dedup", "cluster", "tokenizer", "encode", "manifest")
INDEXED = ("scan", "dedup", "encode")
X_UNITS = {
    "scan": "document of the part",
    "dedup": "document x the task's share of units (PSS: document of one unit)",
    "cluster": "verified pair",
    "encode": "document of the part",
}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _single_worker_runs(results: dict) -> list[dict]:
    return sorted((r for r in results["runs"] if r["workers"] == 1), key=lambda r: r["size_mb"])


def peak_memory_table(results: dict) -> str:
    runs = _single_worker_runs(results)
    header = ["stage", *(f"{r['size_mb']} MB" for r in runs)]
    rows = [[stage, *(_memory_cell(r["stages"][stage]) for r in runs)] for stage in STAGE_ORDER]
    rows.append(["documents", *(f"{r['corpus']['documents']:,}" for r in runs)])
    rows.append(["candidate pairs", *(f"{r['pairs'].get('candidatePairs', 0):,}" for r in runs)])
    rows.append(["verified pairs", *(f"{r['pairs'].get('verifiedPairs', 0):,}" for r in runs)])
    rows.append(["dropped exact / near", *(f"{r['dropped']['exact']:,} / {r['dropped']['near']:,}" for r in runs)])
    rows.append(["planted exact / near (J >= 0.8)", *(_planted(r) for r in runs)])
    return (
        "**(a) Peak PSS per task, MiB (in brackets: anonymous PSS, i.e. without file-backed pages such as"
        " memory-mapped inputs), one worker** (sampled every 20 ms over the task's process tree)\n\n"
        + _table(header, rows)
    )


def _memory_cell(stage: dict) -> str:
    return f"{stage['peak_pss_per_task_mib']:.0f} ({stage['peak_anon_pss_per_task_mib']:.0f})"


def _planted(run: dict) -> str:
    planted = run["corpus"]["planted"]
    return f"{planted['exact_duplicates']:,} / {planted['near_duplicates_at_or_above_threshold']:,}"


def rate_table(results: dict) -> str:
    runs = _single_worker_runs(results)
    header = ["stage", *(f"{r['size_mb']} MB" for r in runs)]
    rows = [[stage, *(_rate_cell(r["stages"][stage]) for r in runs)] for stage in STAGE_ORDER]
    return (
        "**(b) Rate per core, one worker**: input documents / CPU second · input MB / CPU second"
        " (CPU seconds: the task's user + system time, children included; in brackets CPU / wall)\n\n"
        + _table(header, rows)
    )


def _rate_cell(stage: dict) -> str:
    return f"{stage['documents_per_cpu_s']:,.0f} · {stage['mb_per_cpu_s']:.2f} ({stage['cpu_per_wall']:.2f})"


def scaling_table(results: dict) -> str:
    size = results["scaling_size_mb"]
    by_workers = {r["workers"]: r for r in results["runs"] if r["size_mb"] == size}
    if 1 not in by_workers or 2 not in by_workers:
        return f"**(c)** no 1 and 2 worker runs at {size} MB"
    one, two = by_workers[1]["stages"], by_workers[2]["stages"]
    header = [
        "stage",
        "wall, 1 worker (s)",
        "wall, 2 workers (s)",
        "speedup",
        "CPU 1 / 2 (s)",
        "peak PSS per task 1 / 2",
    ]
    rows = [
        [
            stage,
            f"{one[stage]['wall_s']:.1f}",
            f"{two[stage]['wall_s']:.1f}",
            f"{one[stage]['wall_s'] / two[stage]['wall_s']:.2f}x",
            f"{one[stage]['cpu_s']:.1f} / {two[stage]['cpu_s']:.1f}",
            f"{one[stage]['peak_pss_per_task_mib']:.0f} / {two[stage]['peak_pss_per_task_mib']:.0f} MiB",
        ]
        for stage in INDEXED
    ]
    machine = results["machine"]
    return (
        f"**(c) 1 -> 2 workers at {size} MB** (the two tasks of each indexed stage side by side; machine:"
        f" {machine['cpus']} cores, load average {machine['load_average_at_start']} at start)\n\n"
        + _table(header, rows)
    )


def projection_section(results: dict) -> str:
    projection = results["projection"]
    terabyte = projection["terabyte"]
    pods = list(projection["pods"])
    header = ["stage", *(f"{count} pods: hours / GiB per pod (anon)" for count in pods), "model"]
    rows = []
    for stage in STAGE_ORDER:
        cells = [_projection_cell(projection["pods"][count][stage]) for count in pods]
        rows.append([stage, *cells, _model(projection["stages"][stage])])
    rows.append(["**total**", *(f"**{projection['pods'][count]['total_hours']:.2f} h**" for count in pods), ""])
    basis = projection["basis_run"]
    return (
        f"**(d) 1 TB: a PROJECTION on paper, not a measurement.** 1 TB of jsonl like the {basis['size_mb']} MB"
        f" corpus: mean document {terabyte['mean_document_bytes']:,.0f} bytes, so 10^12 / that ="
        f" {terabyte['documents']:,.0f} documents; candidate and verified pairs scaled linearly with documents"
        f" from that run: {terabyte['candidate_pairs']:,.0f} and {terabyte['verified_pairs']:,.0f};"
        f" {terabyte['dedup_units']:,} dedup units (bands x key-range groups), so dedup uses at most that many"
        f" pods. Each pod runs one task on {projection['pod_cores']} core(s), at the measured CPU time per"
        " unit of work (fitted across sizes; CPU time divided by the cores assumes linear scaling); storage"
        " bandwidth, scheduling and start-up of pods are not modelled. Hours are per stage, wall (the stage's"
        " pods in parallel); the total runs the stages one after another.\n\n" + _table(header, rows)
    )


def _projection_cell(estimate: dict) -> str:
    return (
        f"{estimate['hours']:.2f} h / {estimate['memory_gib']:.2f} GiB ({estimate['anon_memory_gib']:.2f});"
        f" {estimate['busy_pods']} busy"
    )


def _model(stage: dict) -> str:
    if "cpu" not in stage:
        return stage["basis"]
    cpu, memory, anon = stage["cpu"], stage["memory_mib"], stage["anon_memory_mib"]
    return (
        f"x = {X_UNITS[stage['name']]}: CPU {cpu['fixed']:.2f} s + {cpu['slope'] * 1000:.3f} ms/x ({cpu['basis']});"
        f" PSS {memory['fixed']:.0f} MiB + {memory['slope'] * 1024:.2f} KiB/x ({memory['basis']});"
        f" anon {anon['fixed']:.0f} MiB + {anon['slope'] * 1024:.2f} KiB/x ({anon['basis']})"
    )


def render(results: dict) -> str:
    sections = [peak_memory_table(results), rate_table(results), scaling_table(results)]
    if results.get("projection"):
        sections.append(projection_section(results))
    return "\n\n".join(sections) + "\n"
