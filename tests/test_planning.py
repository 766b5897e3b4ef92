"""Plans are pure data: the same inputs give the same steps, and each byte is delivered once."""

from collections import Counter

import pytest

from halsim.caps import DeviceCaps
from halsim.plan import Op
from halsim.policies import parse_policy
from halsim.request import BufferSpec, Direction, SourceInfo, Transfer, UploadRequest, request_from_tensors


class T:
    def __init__(self, name, offset, nbytes):
        self.name, self.offset, self.nbytes, self.dtype, self.shape = name, offset, nbytes, "U8", (nbytes,)


def make_request(sizes=(100, 0, 250, 300, 7), start=8, host_alignment=4096, devices=1, shard="whole"):
    tensors, offset = [], start
    for i, n in enumerate(sizes):
        tensors.append(T(f"t{i}", offset, n))
        offset += n
    return request_from_tensors(SourceInfo("m.safetensors", offset + 5, host_alignment), tensors,
                                devices=devices, shard=shard)


DEDICATED = DeviceCaps()
INTEGRATED = DeviceCaps(kind="integrated", unified_memory=True)


def delivered(plan):
    """byte ranges (buffer, offset) -> times delivered"""
    seen = Counter()
    for s in plan.steps:
        if s.op in (Op.COPY, Op.COPY_IMPORTED, Op.BIND, Op.DIRECT, Op.COPY_BACK):
            for i in range(s.length):
                seen[(s.buffer, s.buffer_offset + i)] += 1
    return seen


def expected(request):
    return Counter({(t.buffer, t.buffer_offset + i): 1 for t in request.transfers for i in range(t.length)})


@pytest.mark.parametrize("spec", ["streaming:chunk=128,slots=2,readers=2", "streaming:chunk=1,slots=3",
                                  "streaming:chunk=64MiB,slots=1,readers=1", "staged:chunk=77", "import",
                                  "import:piece=4096", "direct:chunk=33", "auto", "hybrid",
                                  "hybrid:share=0.3,streamed=streaming(chunk=50,slots=2,queues=2)"])
@pytest.mark.parametrize("caps", [DEDICATED, INTEGRATED, DeviceCaps(direct_storage=True)])
def test_every_byte_once(spec, caps):
    request = make_request()
    plan = parse_policy(spec).plan(request, caps)
    assert delivered(plan) == expected(request)
    # deps point backwards: the plan is a DAG in step order
    assert all(d < s.id for s in plan.steps for d in s.deps)


def test_same_policy_same_plan():
    request = make_request()
    a = parse_policy("streaming:chunk=64,slots=3,readers=2").plan(request, DEDICATED)
    b = parse_policy("streaming:chunk=64,slots=3,readers=2").plan(make_request(), DeviceCaps())
    assert a == b and hash(a) == hash(b)
    assert a.to_json() == b.to_json()


def test_streaming_bounds_staging_and_gates_slots():
    request = make_request()
    plan = parse_policy("streaming:chunk=100,slots=2,readers=2").plan(request, DEDICATED)
    assert plan.staging_bytes <= 100 * 2
    fills = {}
    for s in plan.steps:
        if s.op is Op.READ:
            previous = fills.get(s.slot)
            if previous is not None:
                consumers = {c.id for c in plan.steps if c.op is Op.COPY and c.deps == (previous,)}
                assert consumers and consumers <= set(s.deps)
            fills[s.slot] = s.id


def test_iree_streaming_is_one_slot():
    plan = parse_policy("streaming:chunk=64MiB,slots=1,readers=1").plan(make_request(), DEDICATED)
    assert {p.slots for p in plan.pools} == {1}
    assert plan.limits.readers == 1


def test_staged_reads_everything_before_copying():
    plan = parse_policy("staged:chunk=50").plan(make_request(), DEDICATED)
    reads = {s.id for s in plan.steps if s.op is Op.READ}
    assert plan.staging_bytes == make_request().total_bytes
    for s in plan.steps:
        if s.op is Op.COPY:
            assert set(s.deps) == reads


def test_import_in_place_has_no_copies_and_no_staging():
    plan = parse_policy("import").plan(make_request(), INTEGRATED)
    assert plan.count(Op.COPY, Op.COPY_IMPORTED) == 0
    assert plan.count(Op.BIND) == 4  # zero-length tensors need no bind
    assert plan.staging_bytes == 0


def test_import_dedicated_pipelines_pieces():
    request = make_request(sizes=(5000, 9000, 3000), host_alignment=4096)
    plan = parse_policy("import:piece=4096").plan(request, DEDICATED)
    windows = plan.windows
    assert len(windows) >= 4
    assert all(w.file_offset % 4096 == 0 and w.length % 4096 == 0 for w in windows)
    imports = [s for s in plan.steps if s.op is Op.IMPORT]
    unimports = {s.window: s.id for s in plan.steps if s.op is Op.UNIMPORT}
    # at most two windows imported at once: import k waits for unimport k-2
    for k, imp in enumerate(imports):
        if k >= 2:
            assert unimports[imports[k - 2].window] in imp.deps


@pytest.mark.parametrize("alignment,caps,why", [
    (0, DEDICATED, "not in host memory"),
    (16, DEDICATED, "aligned to 16 bytes"),
    (4096, DeviceCaps(can_import_host=False), "cannot import"),
])
def test_import_falls_back_and_says_why(alignment, caps, why):
    plan = parse_policy("import:fallback=staged").plan(make_request(host_alignment=alignment), caps)
    assert plan.policy.kind == "staged"
    assert plan.requested.kind == "import"
    assert any(why in note for note in plan.notes)


def test_direct_falls_back_without_direct_storage():
    plan = parse_policy("direct").plan(make_request(), DEDICATED)
    assert plan.policy.kind == "streaming" and "no direct storage" in plan.notes[0]


def test_download_mirrors_upload():
    request = make_request().reversed()
    assert request.direction is Direction.DOWNLOAD
    plan = parse_policy("streaming:chunk=128,slots=2").plan(request, DEDICATED)
    assert plan.count(Op.WRITE) > 0 and plan.count(Op.READ) == 0
    assert delivered(plan) == expected(request)
    for s in plan.steps:
        if s.op is Op.WRITE:
            assert s.deps, "a slot is written to the file only after its copies"


def test_multi_device_whole_and_rows():
    request = make_request(sizes=(100, 200, 300, 400), devices=2)
    assert {b.device for b in request.buffers} == {0, 1}
    plan = parse_policy("streaming:chunk=64,slots=2").plan(request, [DEDICATED, DEDICATED])
    assert {p.device for p in plan.pools} == {0, 1}
    assert delivered(plan) == expected(request)
    rows = make_request(sizes=(100, 200), devices=2, shard="rows")
    assert sum(b.size for b in rows.buffers) == 300
    assert [b.device for b in rows.buffers] == [0, 1, 0, 1]


def test_offsets_beyond_4gib():
    big = 5 << 30
    request = UploadRequest(SourceInfo("big", big + 1000, 4096), (BufferSpec("w", 1000),), (Transfer(big, 0, 0, 1000),))
    plan = parse_policy("streaming:chunk=300,slots=2").plan(request, DEDICATED)
    reads = [s for s in plan.steps if s.op is Op.READ]
    assert reads[0].file_offset == big and sum(r.length for r in reads) == 1000


def test_request_validation_names_the_file():
    from halsim.errors import PolicyError

    with pytest.raises(PolicyError, match="src: transfer .* past the end"):
        UploadRequest(SourceInfo("src", 10), (BufferSpec("w", 100),), (Transfer(0, 0, 0, 50),))
    with pytest.raises(PolicyError, match="overflows buffer 'w'"):
        UploadRequest(SourceInfo("src", 100), (BufferSpec("w", 10),), (Transfer(0, 0, 0, 50),))


def test_hybrid_imports_a_share_and_streams_the_rest():
    request = make_request(sizes=(5000, 9000, 3000))
    plan = parse_policy("hybrid:share=0.5,imported=import(piece=4096),"
                        "streamed=streaming(chunk=1000,slots=2,queues=1)").plan(request, DeviceCaps(copy_queues=2))
    imported = sum(s.length for s in plan.steps if s.op is Op.COPY_IMPORTED)
    streamed = sum(s.length for s in plan.steps if s.op is Op.COPY)
    assert imported == request.total_bytes // 2 and imported + streamed == request.total_bytes
    assert plan.staging_bytes <= 2 * 1000 and plan.windows
    # the two parts copy on different queues
    assert {s.queue for s in plan.steps if s.op is Op.COPY_IMPORTED} == {0}
    assert {s.queue for s in plan.steps if s.op is Op.COPY} == {1}
    assert delivered(plan) == expected(request)


def test_hybrid_streams_everything_when_import_is_impossible():
    plan = parse_policy("hybrid").plan(make_request(host_alignment=0), DEDICATED)
    assert plan.policy.kind == "streaming" and plan.requested.kind == "hybrid"
    assert "not in host memory" in plan.notes[0]


def _releases_wait_for(plan, device=0):
    """The copies each release of ``device`` waits for, directly or through other steps."""
    by_id = {s.id: s for s in plan.steps}

    def before(step_id, seen):
        for d in by_id[step_id].deps:
            if d not in seen:
                seen.add(d)
                before(d, seen)
        return seen
    return {s.window: before(s.id, set()) for s in plan.steps if s.op is Op.UNIMPORT and s.device == device}


def test_import_released_at_end_holds_every_piece_until_the_last_copy():
    request = make_request(sizes=(5000, 9000, 3000), host_alignment=4096)
    rolling = parse_policy("import:piece=4096").plan(request, DEDICATED)
    at_end = parse_policy("import:piece=4096,release=at_end").plan(request, DEDICATED)
    assert delivered(at_end) == expected(request)
    assert all(d < s.id for s in at_end.steps for d in s.deps)
    copies = {s.id for s in at_end.steps if s.op is Op.COPY_IMPORTED}
    waits = _releases_wait_for(at_end)
    assert len(waits) == len(at_end.windows) >= 4
    assert all(copies <= seen for seen in waits.values())
    # no import waits for a release, so every window can be held at once
    assert not any(s.deps for s in at_end.steps if s.op is Op.IMPORT)
    assert any(s.deps for s in rolling.steps if s.op is Op.IMPORT)


def test_hybrid_released_at_end_waits_for_the_streamed_copies_too():
    request = make_request(sizes=(5000, 9000, 3000))
    spec = ("hybrid:share=0.5,imported=import(piece=4096,release=at_end),"
            "streamed=streaming(chunk=1000,slots=2,queues=1)")
    plan = parse_policy(spec).plan(request, DeviceCaps(copy_queues=2))
    assert delivered(plan) == expected(request)
    assert all(d < s.id for s in plan.steps for d in s.deps)
    copies = {s.id for s in plan.steps if s.op in (Op.COPY, Op.COPY_IMPORTED)}
    assert {s.op for s in plan.steps if s.id in copies} == {Op.COPY, Op.COPY_IMPORTED}
    assert all(copies <= seen for seen in _releases_wait_for(plan).values())
    # the releases are the last steps
    releases = [s.id for s in plan.steps if s.op is Op.UNIMPORT]
    assert releases == list(range(len(plan.steps) - len(releases), len(plan.steps)))


@pytest.mark.parametrize("spec, devices, threads", [
    ("streaming:chunk=64KiB,slots=8,readers=4", 1, 4 + 1 + 1),  # readers, one copy thread, the engine
    ("streaming:chunk=64KiB,slots=8,readers=4,queues=2", 2, 4 + 2 * 2 + 1),  # every device's queues
    ("import:piece=64KiB,queues=2", 1, 0 + 2 * 4 + 1 + 1),  # no readers; imported queues copy 4 ahead; one import lane
])
def test_threads_at_once_counts_what_a_real_run_keeps_busy(spec, devices, threads):
    request = make_request(sizes=[1 << 20] * 4, devices=devices, shard="rows" if devices > 1 else "whole")
    plan = parse_policy(spec).plan(request, [DeviceCaps(copy_queues=2)] * devices)
    assert plan.threads_at_once() == threads
    assert plan.threads_at_once(lambda device: [1] * max(1, plan.limits.queues)) <= threads
