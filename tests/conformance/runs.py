"""Running generated cases on devices and checking every invariant on the result."""

from __future__ import annotations

import os
from contextlib import contextmanager

from halsim.engine import Engine, RunResult
from halsim.invariants import InvariantError, check_clean, check_contents, check_plan, check_run
from halsim.request import Direction, SourceInfo, UploadRequest

from .strategies import Layout, expected_bytes, open_source, write_file


@contextmanager
def source_file(scratch, layout: Layout, kind: str):
    path = scratch.path()
    write_file(path, layout)
    file = open_source(path, layout, kind)
    try:
        yield file
    finally:
        file.close()
        os.unlink(path)


def check_against_layout(result: RunResult, layout: Layout) -> None:
    """Invariant 1 by content, against what the generated file holds."""
    request = result.plan.request
    for t in request.transfers:
        if not t.length:
            continue
        got = result.buffers[t.buffer].to_bytes()[t.buffer_offset : t.buffer_offset + t.length]
        want = expected_bytes(layout, t.file_offset, t.length)
        if got != want:
            bad = next(i for i in range(t.length) if got[i] != want[i])
            raise InvariantError(
                f"invariant 1 (coverage): buffer {request.buffers[t.buffer].name!r} byte {t.buffer_offset + bad} "
                f"differs from file byte {t.file_offset + bad} ({got[bad]} != {want[bad]}) in {result.plan.policy.spec()}")


def run_upload(plan, file, devices, mode: str, layout: Layout | None) -> RunResult:
    """Run an upload plan and check invariants 1-6 on it; the caller frees the result."""
    check_plan(plan, [d.caps for d in devices])
    result = Engine(mode).run(plan, file, devices)
    check_run(result)
    if layout is not None:
        check_against_layout(result, layout)
    return result


def free_and_check(result: RunResult) -> None:
    result.free()
    check_clean(result.trace, "freeing the upload's buffers")
