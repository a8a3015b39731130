"""Read an offline W&B run file (``run-*.wandb``) to check what was really logged.

The file is a LevelDB-style log: a 7-byte file header (":W&B", magic, version), then 32 KiB
blocks of records, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle,
4 last) and a protobuf ``wandb_internal_pb2.Record`` payload.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
FILE_HEADER = 7
RECORD_HEADER = 7


def records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, pending = FILE_HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        block_left = BLOCK - (pos % BLOCK)
        if block_left < RECORD_HEADER:
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        if kind == 0 and length == 0:
            pos += block_left  # zero padding to the block end
            continue
        payload = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 1:
            pending = payload
        elif kind == 2:
            pending = payload
            continue
        elif kind == 3:
            pending += payload
            continue
        elif kind == 4:
            pending += payload
        rec = pb.Record()
        rec.ParseFromString(pending)
        yield rec


def history_and_summary(path: str | Path) -> tuple[Counter, dict[str, str], dict[str, str]]:
    """(count of logged values per history key, final summary key -> json, config key -> json)."""
    history: Counter = Counter()
    summary: dict[str, str] = {}
    config: dict[str, str] = {}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            for item in rec.history.item:
                history[item.key or "/".join(item.nested_key)] += 1
        elif kind == "summary":
            for item in rec.summary.update:
                summary[item.key or "/".join(item.nested_key)] = item.value_json
        elif kind == "run":
            for item in rec.run.config.update:
                config[item.key or "/".join(item.nested_key)] = item.value_json
        elif kind == "config":
            for item in rec.config.update:
                config[item.key or "/".join(item.nested_key)] = item.value_json
    return history, summary, config
