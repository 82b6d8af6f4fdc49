"""The results file of a sweep: one JSON record a line, appended under a lock, read back with a crash-cut last line
ignored; the latest record per run id; and the finished records other sweeps' files lend (`fpt sweep --reuse`)."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

from fpt.errors import FPTError
from fpt.experiments.settings import Record


def read_records(path: str | Path) -> list[Record]:
    """The records of a results JSONL file (none if it does not exist yet). A last line without its newline, cut
    short by a crash, is ignored; a later append repairs it. Any other bad line is an FPTError naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: a write cut short
                print(
                    f"fpt: ignoring the unfinished last line of {path} (a crash cut its write short)", file=sys.stderr
                )
                break
            raise FPTError(f"{path}:{number}: not a JSON record ({err})") from None
    return records


def latest_records(records: list[Record]) -> list[Record]:
    """One record per run id, the last written (a retried run's record replaces its failed one)."""
    by_id: dict[str, Record] = {}
    for record in records:
        by_id.pop(record["run_id"], None)
        by_id[record["run_id"]] = record
    return list(by_id.values())


def append_record(path: str | Path, record: Record, unless_finished: bool = False) -> bool:
    """Append one record as a line, under an exclusive lock, flushed and fsynced: concurrent writers interleave whole
    lines. A partial last line left by a crash is cut off first. With `unless_finished`, nothing is written when the
    file already ends the record's run id on a finished (ok) record, checked under the same lock, so that two sweep
    processes over one config write each run once. Returns whether the line was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str) + "\n").encode()
    with open(path, "ab+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
            if unless_finished and finished_in(f, record["run_id"]):
                return False
            f.seek(0, os.SEEK_END)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def finished_in(f: BinaryIO, run_id: str) -> bool:
    """Whether the open results file's latest record of `run_id` finished (status ok)."""
    f.seek(0)
    lines = (json.loads(line) for line in f.read().split(b"\n") if run_id.encode() in line)  # parse only candidates
    ours = [r for r in lines if r.get("run_id") == run_id]
    return bool(ours) and ours[-1].get("status") == "ok"  # the last written is the latest (latest_records)


def reusable(paths: list[Path]) -> dict[str, tuple[Path, Record]]:
    """The finished (status ok) records of other sweeps' results files by run id, with the file each came from. Only
    records that hold all a trained run's record holds (what moved included) are reused: older ones train again."""
    found: dict[str, tuple[Path, Record]] = {}
    for path in paths:
        for record in latest_records(read_records(path)):
            if record.get("status") == "ok" and "moved" in record and "curve" in record:
                found.setdefault(record["run_id"], (path, record))
    return found


def finished_ids(records: list[Record], retry_failed: bool = False) -> set[str]:
    latest = latest_records(records)
    return {r["run_id"] for r in latest if not (retry_failed and r.get("status") == "failed")}


def chosen_labels(key: str, chosen: str, known: list[str], where: str) -> list[str]:
    """The labels of a `--tasks`/`--models` comma list (`key` "task" or "model"), each one of `known`; else an error
    naming the first unknown one and the labels `where` ("of sweep 'x'", "in the results") holds."""
    labels = [label.strip() for label in chosen.split(",") if label.strip()]
    unknown = [label for label in labels if label not in known]
    if unknown or not labels:
        raise FPTError(f"--{key}s: no {key} labelled {(unknown or [chosen])[0]!r}{where}: {', '.join(known)}")
    return labels
