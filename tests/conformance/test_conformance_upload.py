"""Uploads and downloads on every device: invariants 1-8 on generated cases."""

from __future__ import annotations

import os

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from halsim.caps import DeviceCaps
from halsim.engine import Engine
from halsim.errors import PolicyError
from halsim.files import open_file
from halsim.invariants import check_plan, check_run
from halsim.request import Direction, SourceInfo, UploadRequest

from . import devices as devs
from .conftest import examples
from .runs import check_against_layout, free_and_check, run_upload, source_file
from .strategies import (
    MAX_CHUNKS, MAX_STEPS, RUN_CAP, caps_strategy, download_policies, expected_bytes, file_kinds, granularity,
    layouts, modes, policies, requests,
)


def _plan_or_skip(policy, request, caps):
    try:
        plan = policy.plan(request, caps)
    except PolicyError as err:
        assert policy.kind == "auto" and "budget" in str(err), err
        assume(False)
    assume(len(plan.steps) <= MAX_STEPS)
    return plan


@st.composite
def cases(draw, max_devices=3):
    policy = draw(policies)
    layout = draw(layouts(min(RUN_CAP, granularity(policy) * MAX_CHUNKS)))
    return policy, layout, draw(file_kinds), draw(modes), draw(st.integers(1, max_devices)), draw(st.data())


def _request(data, file, layout, n_devices, direction=Direction.UPLOAD) -> UploadRequest:
    request = data.draw(requests(SourceInfo.of(file), layout, max_devices=n_devices, direction=direction))
    return request


@settings(max_examples=examples(100))
@given(case=cases())
def test_upload_every_byte_once_within_bounds(device_spec, scratch, case):
    """Invariants 1-6 on a successful upload: bytes exact, staging, slots, deps, memory, clean."""
    policy, layout, kind, mode, n, data = case
    with source_file(scratch, layout, kind) as file:
        devices = devs.make_many(device_spec, n)
        request = _request(data, file, layout, n)
        plan = _plan_or_skip(policy, request, [d.caps for d in devices[: max(request.devices) + 1]])
        result = run_upload(plan, file, devices, mode, layout)
        free_and_check(result)


@settings(max_examples=examples(60))
@given(case=cases(), down=download_policies)
def test_download_mirrors_upload(device_spec, scratch, case, down):
    """Invariant 8 at the engine: the file ends byte-exact over every transfer, and nothing stays allocated."""
    policy, layout, kind, mode, n, data = case
    with source_file(scratch, layout, kind) as file:
        devices = devs.make_many(device_spec, n)
        request = _request(data, file, layout, n)
        caps = [d.caps for d in devices[: max(request.devices) + 1]]
        plan = _plan_or_skip(policy, request, caps)
        uploaded = run_upload(plan, file, devices, mode, layout)
        try:
            target_path = scratch.path(".out")
            target = open_file(target_path, "rw", kind="fd", length=layout.length)
            try:
                back = UploadRequest(SourceInfo(target_path, layout.length, 0), request.buffers, request.transfers,
                                     Direction.DOWNLOAD)
                down_plan = _plan_or_skip(down, back, caps)
                check_plan(down_plan, caps)
                adopt = {d: e.buffers() for d, e in uploaded.executions.items()}
                result = Engine(mode).run(down_plan, target, devices, adopt=adopt)
                check_run(result, adopted=True)
                target.flush()
                for t in request.transfers:
                    got = bytearray(t.length)
                    target.read_into(t.file_offset, got)
                    assert bytes(got) == expected_bytes(layout, t.file_offset, t.length), \
                        f"file bytes [{t.file_offset}, {t.file_offset + t.length}) differ after download"
            finally:
                target.close()
                os.unlink(target_path)
        finally:
            free_and_check(uploaded)


@settings(max_examples=examples(100))
@given(case=cases(max_devices=2), caps=st.lists(caps_strategy, min_size=2, max_size=2))
def test_cpu_runs_plans_for_any_caps(scratch, case, caps):
    """The CPU device moves real bytes for plans made for any caps — in place, dedicated
    imports, direct, no import — so every plan shape is checked by content."""
    policy, layout, kind, mode, n, data = case
    with source_file(scratch, layout, kind) as file:
        devices = [devs.cpu_with_caps(c) for c in caps[:n]]
        request = _request(data, file, layout, n)
        plan = _plan_or_skip(policy, request, [d.caps for d in devices[: max(request.devices) + 1]])
        result = run_upload(plan, file, devices, mode, layout)
        free_and_check(result)


@settings(max_examples=examples(60))
@given(case=cases(max_devices=1))
def test_same_plan_same_bytes_as_the_cpu(device_spec, scratch, case):
    """Invariant 7: a device and the CPU device given the same caps get the same Plan,
    and put the same bytes in the same places."""
    policy, layout, kind, mode, n, data = case
    with source_file(scratch, layout, kind) as file:
        device = devs.make(device_spec)
        reference = devs.cpu_with_caps(DeviceCaps(**device.caps.model_dump()))
        request = _request(data, file, layout, 1)
        plan = _plan_or_skip(policy, request, [device.caps])
        assert policy.plan(request, [reference.caps]) == plan
        ours = run_upload(plan, file, [device], mode, None)
        theirs = run_upload(plan, file, [reference], mode, None)
        try:
            for t in request.transfers:
                a = ours.buffers[t.buffer].to_bytes()[t.buffer_offset : t.buffer_offset + t.length]
                b = theirs.buffers[t.buffer].to_bytes()[t.buffer_offset : t.buffer_offset + t.length]
                assert a == b, f"{device_spec} and cpu disagree on buffer {request.buffers[t.buffer].name!r}"
            check_against_layout(theirs, layout)
        finally:
            free_and_check(ours)
            free_and_check(theirs)
