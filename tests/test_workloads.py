"""Workloads: catalogue numbers, the computed safetensors layout, real files, and requests."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import halsim.workloads as workloads_module
from halsim.errors import FormatError
from halsim.formats import read_index
from halsim.formats.dtypes import DTYPES
from halsim.workloads import (
    TensorSpec,
    Workload,
    list_workloads,
    load_workload,
    pattern_bytes,
    workload_from_index,
)

MiB, GiB = 1 << 20, 1 << 30


def layout(index):
    return [(t.name, t.dtype, tuple(t.shape), t.offset, t.nbytes) for t in index.tensors]


def header_length(path) -> int:
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), "little")


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Workload]:
    return {name: load_workload(name) for name in list_workloads()}


@pytest.fixture
def mixed() -> Workload:
    """Odd sizes and every item size, so padding and ordering both matter."""
    return Workload(
        name="mixed",
        dtype="F32",
        tensors=[
            TensorSpec(name="bytes", dtype="U8", shape=(37,)),
            TensorSpec(name="halves", dtype="BF16", shape=(5, 3)),
            TensorSpec(name="floats", dtype="F32", shape=(7,)),
            TensorSpec(name="scalar", dtype="F64", shape=()),
            TensorSpec(name="empty", dtype="I32", shape=(0, 4)),
            TensorSpec(name="ünïcode", dtype="I64", shape=(2,)),
        ],
    )


# --- the catalogue's numbers ---------------------------------------------------------


def test_catalogue_lists_the_models():
    assert {"iree-1gib", "llama-3-8b", "mistral-7b", "gpt2", "test-small"} <= set(list_workloads())


def test_llama_3_8b_parameter_count(catalogue):
    w = catalogue["llama-3-8b"]
    assert w.params == 8_030_261_248
    assert w.total_bytes == 16_060_522_496
    assert len(w.tensors) == 291
    assert {t.dtype for t in w.tensors} == {"BF16"}
    shapes = {t.name: t.shape for t in w.tensors}
    assert shapes["model.embed_tokens.weight"] == (128256, 4096)
    assert shapes["lm_head.weight"] == (128256, 4096)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (4096, 4096)
    assert shapes["model.layers.31.self_attn.k_proj.weight"] == (1024, 4096)  # 8 kv heads of 128
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (4096, 14336)
    assert shapes["model.norm.weight"] == (4096,)


def test_mistral_7b_parameter_count(catalogue):
    w = catalogue["mistral-7b"]
    assert w.params == 7_241_732_096
    assert w.total_bytes == 2 * 7_241_732_096


def test_gpt2_parameter_count(catalogue):
    w = catalogue["gpt2"]
    assert w.params == 124_439_808
    assert len(w.tensors) == 148
    shapes = {t.name: t.shape for t in w.tensors}
    assert shapes["h.0.attn.c_attn.weight"] == (768, 2304)
    assert shapes["h.11.mlp.c_proj.weight"] == (3072, 768)
    assert shapes["wpe.weight"] == (1024, 768)
    assert "lm_head.weight" not in shapes  # tied to wte


def test_iree_1gib_is_exactly_one_gib(catalogue):
    w = catalogue["iree-1gib"]
    assert w.total_bytes == GiB
    assert len(w.tensors) == 32 and all(t.nbytes == 32 * MiB and t.dtype == "F32" for t in w.tensors)


def test_every_workload_says_where_its_numbers_come_from(catalogue):
    for w in catalogue.values():
        assert w.source and w.description, w.name


# --- layout --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iree-1gib", "llama-3-8b", "mistral-7b", "gpt2", "test-small"])
def test_index_is_contiguous_after_an_aligned_header(catalogue, name):
    w = catalogue[name]
    index = w.index()
    assert index.path == f"{name}.safetensors" and index.format == "safetensors"
    assert sorted(t.name for t in index.tensors) == sorted(t.name for t in w.tensors)
    first = index.tensors[0].offset
    assert (first - 8) % 8 == 0  # the header length is a multiple of 8
    for before, after in zip(index.tensors, index.tensors[1:]):
        assert after.offset == before.end
    assert index.file_length == index.tensors[-1].end == first + w.total_bytes
    for t in index.tensors:  # every tensor aligned to its item size
        assert t.offset % DTYPES[t.dtype].itemsize == 0


@pytest.mark.parametrize("name", ["llama-3-8b", "gpt2"])
def test_header_length_is_the_compact_json_header(catalogue, name):
    index = catalogue[name].index()
    data_start = index.tensors[0].offset
    header = {
        t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.offset - data_start, t.end - data_start]}
        for t in index.tensors
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert data_start == 8 + len(raw) + (-len(raw) % 8)


@pytest.mark.parametrize("name", ["iree-1gib", "gpt2"])
def test_index_matches_a_real_written_file(catalogue, name, tmp_path):
    # A sparse write holds the exact header with no data to spend disk on.
    w = catalogue[name]
    written = w.write(tmp_path / w.file_name, fill="sparse")
    assert layout(written) == layout(w.index())
    assert layout(read_index(tmp_path / w.file_name)) == layout(w.index())
    assert header_length(tmp_path / w.file_name) == w.index().tensors[0].offset - 8


def test_larger_item_sizes_come_first(mixed):
    order = [t.name for t in mixed.index().tensors]
    assert order == ["scalar", "ünïcode", "floats", "empty", "halves", "bytes"]


def test_page_aligned_index_starts_data_on_a_page(catalogue):
    index = catalogue["test-small"].index(alignment=4096)
    assert index.tensors[0].offset == 4096
    with pytest.raises(ValueError):
        catalogue["test-small"].index(alignment=12)


# --- real files ---------------------------------------------------------------------------


def test_write_test_small_reads_back_identically(catalogue, tmp_path):
    w = catalogue["test-small"]
    path = tmp_path / "small.safetensors"
    written = w.write(path)
    back = read_index(path)
    assert layout(back) == layout(written) == layout(w.index())
    assert back.file_length == w.index().file_length == path.stat().st_size
    assert {t.dtype for t in back.tensors} == {"BF16", "F32"}


@pytest.mark.parametrize("piece_bytes", [1000, 4096, 1 << 20])
def test_pattern_fill_is_a_function_of_file_offset(mixed, tmp_path, piece_bytes):
    path = tmp_path / "mixed.safetensors"
    index = mixed.write(path, fill="pattern", piece_bytes=piece_bytes)
    data = np.fromfile(path, np.uint8)
    for t in index.tensors:
        assert np.array_equal(data[t.offset : t.end], pattern_bytes(t.offset, t.nbytes)), t.name
    start = index.tensors[0].offset
    assert np.array_equal(data[start:], pattern_bytes(start, len(data) - start))


def test_pattern_slices_agree_and_differ_when_shifted():
    whole = pattern_bytes(0, 4096)
    assert np.array_equal(whole[13:3000], pattern_bytes(13, 2987))
    assert not np.array_equal(whole[8:1032], whole[0:1024])
    assert not np.array_equal(whole[0:8], np.zeros(8, np.uint8))
    assert pattern_bytes(5, 0).size == 0


def test_random_fill_is_seeded(catalogue, tmp_path):
    w = catalogue["test-small"]
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    w.write(a, fill="random", seed=7, piece_bytes=4096)
    w.write(b, fill="random", seed=7, piece_bytes=4096)
    w.write(c, fill="random", seed=8, piece_bytes=4096)
    start = w.index().tensors[0].offset
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[start:] != c.read_bytes()[start:]
    assert len(set(a.read_bytes()[start:])) > 200  # looks random, not constant


def test_zero_fill_writes_zeros(mixed, tmp_path):
    path = tmp_path / "z.safetensors"
    index = mixed.write(path, fill="zeros")
    data = path.read_bytes()
    assert data[index.tensors[0].offset :] == bytes(mixed.total_bytes)
    with pytest.raises(ValueError):
        mixed.write(tmp_path / "bad.safetensors", fill="ones")  # type: ignore[arg-type]


# --- requests ---------------------------------------------------------------------------------


def test_request_one_device(catalogue):
    w = catalogue["test-small"]
    index = w.index()
    request = w.request(page_cached=False, host_alignment=64)
    assert request.source.name == "test-small.safetensors"
    assert request.source.length == index.file_length
    assert (request.source.host_alignment, request.source.page_cached) == (64, False)
    assert request.total_bytes == w.total_bytes
    assert request.devices == (0,)
    assert [(b.name, b.size, b.dtype, b.shape) for b in request.buffers] == [
        (t.name, t.nbytes, t.dtype, t.shape) for t in index.tensors
    ]
    assert [(t.file_offset, t.length) for t in request.transfers] == [(t.offset, t.nbytes) for t in index.tensors]


def test_request_two_devices_whole_deals_tensors(catalogue):
    w = catalogue["llama-3-8b"]
    request = w.request(devices=2)
    assert request.devices == (0, 1)
    assert request.total_bytes == w.total_bytes
    assert sorted(b.name for b in request.buffers) == sorted(t.name for t in w.tensors)
    loads = [sum(b.size for b in request.buffers if b.device == d) for d in (0, 1)]
    assert abs(loads[0] - loads[1]) <= max(t.nbytes for t in w.tensors)
    offsets = [t.file_offset for t in request.transfers]
    assert offsets == sorted(offsets)  # reads stay in file order


def test_request_two_devices_rows_splits_every_tensor(catalogue):
    w = catalogue["llama-3-8b"]
    index = w.index()
    request = w.request(devices=2, shard="rows")
    assert len(request.buffers) == 2 * len(w.tensors)
    assert request.total_bytes == w.total_bytes
    by_name = {b.name: b for b in request.buffers}
    assert by_name["model.layers.0.self_attn.q_proj.weight@0"].shape == (2048, 4096)
    assert by_name["model.layers.0.self_attn.k_proj.weight@1"].device == 1
    spans = {}
    for t in request.transfers:
        name = request.buffers[t.buffer].name.rsplit("@", 1)[0]
        spans.setdefault(name, []).append((t.file_offset, t.length))
    for info in index.tensors:
        (a, la), (b, lb) = spans[info.name]
        assert a == info.offset and a + la == b and b + lb == info.end


# --- files and conversions -------------------------------------------------------------------------


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(FormatError) as info:
        load_workload("llama-99b")
    assert info.value.path == "llama-99b"
    assert "unknown workload" in str(info.value) and "llama-3-8b" in str(info.value)


def test_toml_and_json_round_trip(mixed, catalogue, tmp_path):
    toml_path = tmp_path / "mixed.toml"
    toml_path.write_text(mixed.to_toml(), encoding="utf-8")
    assert load_workload(toml_path) == mixed
    json_path = tmp_path / "gpt2.json"
    json_path.write_text(catalogue["gpt2"].model_dump_json())
    assert load_workload(str(json_path)) == catalogue["gpt2"]


def test_toml_tensors_default_to_the_workload_dtype(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text(
        '[workload]\nname = "w"\ndtype = "F16"\n'
        '[[workload.tensors]]\nname = "a"\nshape = [4, 4]\n'
        '[[workload.tensors]]\nname = "b"\ndtype = "F32"\nshape = [2]\n'
    )
    w = load_workload(path)
    assert [(t.dtype, t.nbytes) for t in w.tensors] == [("F16", 32), ("F32", 8)]


@pytest.mark.parametrize(
    "text, phrase",
    [
        ('name = "w"\ndtype = "F32"\n[[tensors]]\nname = "a"\nshape = [-1]\n', "tensors.0.shape"),
        ('name = "w"\ndtype = "F99"\ntensors = []\n', "unknown safetensors dtype"),
        ('name = "w"\ndtype = "F32"\n[[tensors]]\nname = "a"\nshape = [true]\n', "tensors.0.shape"),
        ('name = "w"\ndtype = "F32"\n[[tensors]]\nname = "a"\nshape = [1]\n[[tensors]]\nname = "a"\nshape = [1]\n',
         "two tensors are named"),
        ('name = "w"\ndtype = "F32"\nsize = 3\ntensors = []\n', "size"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_bad_workload_files_name_the_file_and_problem(tmp_path, text, phrase):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        load_workload(path)
    assert info.value.path == str(path)
    assert phrase in str(info.value), str(info.value)


def test_missing_workload_file(tmp_path):
    with pytest.raises(FormatError, match="does not exist"):
        load_workload(tmp_path / "nope.json")


def test_workload_from_index_reproduces_the_layout(catalogue, tmp_path):
    w = catalogue["test-small"]
    path = tmp_path / "test-small.safetensors"
    w.write(path, fill="zeros")
    again = workload_from_index(read_index(path))
    assert again.name == "test-small" and again.dtype == "BF16"
    assert layout(again.index()) == layout(w.index())
    assert load_workload(path).tensors == again.tensors


def test_catalogue_loads_from_the_repository_when_not_installed(monkeypatch):
    # Simulate an environment where halsim.models is not importable.
    real_import = workloads_module.importlib.import_module

    def no_models(name, *args):
        if name.startswith("halsim.models"):
            raise ModuleNotFoundError(f"No module named {name!r}", name="halsim.models")
        return real_import(name, *args)

    monkeypatch.setattr(workloads_module.importlib, "import_module", no_models)
    monkeypatch.setattr(workloads_module, "_catalogue", None)
    monkeypatch.delitem(sys.modules, "halsim_models_workloads", raising=False)
    assert "llama-3-8b" in list_workloads()
    assert workloads_module._catalogue.__name__ == "halsim_models_workloads"
    assert load_workload("gpt2").params == 124_439_808
