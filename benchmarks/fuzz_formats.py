"""Coverage-guided fuzzing of the format parsers (``halsim.formats.read_index``) with atheris.

Run by hand, for as long as you like::

    pip install atheris
    python benchmarks/fuzz_formats.py -atheris_runs=2000000 /tmp/fuzz-corpus   # libFuzzer flags pass through
    python benchmarks/fuzz_formats.py -max_total_time=600

The property: every input either indexes soundly — each tensor's bytes lie
inside the file, no two tensors overlap, ``nbytes == prod(shape) * itemsize`` —
or raises :class:`~halsim.errors.FormatError` naming the file. Anything else
(another exception, a hang, a crash) is a finding; libFuzzer saves the input.

The first byte of an input picks the format (its extension); the rest is the
file. Seeds are valid files of every format, written at start. Without atheris
the same target runs on random mutations of the seeds (no coverage guidance),
so ``--runs N`` still exercises it: ``python benchmarks/fuzz_formats.py --plain --runs 20000``.
CI runs it briefly (tests/conformance/test_conformance_fuzz_target.py).
"""

from __future__ import annotations

import io
import os
import random
import sys
import tempfile

FORMATS = ("safetensors", "npy", "npz", "bin")
_DIR = tempfile.mkdtemp(prefix="halsim-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def seeds() -> list[bytes]:
    """Valid files of each format, prefixed with their format byte."""
    import numpy as np

    from halsim.formats import write_npy, write_npz, write_safetensors

    out = []
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.uint8),
              "e": np.zeros(0, dtype=np.float16)}
    for i, (fmt, writer) in enumerate([
        ("safetensors", lambda p: write_safetensors(p, arrays, metadata={"k": "v"})),
        ("npy", lambda p: write_npy(p, arrays["w"])),
        ("npz", lambda p: write_npz(p, {"a": arrays["w"], "b": arrays["b"]})),
    ]):
        path = os.path.join(_DIR, f"seed.{fmt}")
        writer(path)
        with open(path, "rb") as f:
            out.append(bytes([FORMATS.index(fmt)]) + f.read())
        os.unlink(path)
    return out


def check_one(data: bytes) -> None:
    """The fuzz target: parse ``data[1:]`` as the format ``data[0]`` names."""
    from halsim.errors import FormatError
    from halsim.formats import DTYPES, read_index

    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    content = data[1:]
    path = os.path.join(_DIR, f"input.{fmt}")
    with open(path, "wb") as f:
        f.write(content)
    try:
        index = read_index(path)
    except FormatError as err:
        if not str(err).startswith(path):
            raise AssertionError(f"FormatError does not name the file: {err}") from err
        return
    finally:
        os.unlink(path)
    if index.file_length != len(content):
        raise AssertionError(f"index says {index.file_length} bytes, file has {len(content)}")
    spans = []
    for t in index.tensors:
        count = 1
        for dim in t.shape:
            if not isinstance(dim, int) or dim < 0:
                raise AssertionError(f"tensor {t.name!r} has shape {t.shape}")
            count *= dim
        if count * DTYPES[t.dtype].itemsize != t.nbytes:
            raise AssertionError(f"tensor {t.name!r}: shape {t.shape} x {t.dtype} != {t.nbytes} bytes")
        if not 0 <= t.offset <= t.offset + t.nbytes <= len(content):
            raise AssertionError(f"tensor {t.name!r} [{t.offset}, {t.offset + t.nbytes}) is outside the file")
        if t.nbytes:
            spans.append((t.offset, t.offset + t.nbytes))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise AssertionError(f"tensors overlap: {a} and {b}")


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        at = rng.randrange(max(len(buf), 1))
        if op == 0 and buf:
            buf[at] = rng.randrange(256)
        elif op == 1:
            del buf[at : at + rng.randint(1, 16)]
        elif op == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3:
            del buf[at:]
        elif op == 4 and len(buf) > 9:  # a length field: the safetensors prefix or the npy header length
            where, width = rng.choice([(1, 8), (9, 2)])
            value = rng.choice([0, 1, 7, 8, 255, 65535, 1 << 31, (1 << 63) + 1, rng.randrange(1 << 20)])
            buf[where : where + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif op == 5 and buf:
            buf[0] = rng.randrange(len(FORMATS))
    return bytes(buf)


def plain(runs: int, seed: int = 0) -> int:
    """Random mutations of the seeds, no coverage guidance. Returns inputs tried."""
    rng = random.Random(seed)
    pool = seeds()
    for i in range(runs):
        data = mutate(rng.choice(pool), rng)
        try:
            check_one(data)
        except Exception:
            print(f"finding after {i} inputs: {data!r}", file=sys.stderr)
            raise
    return runs


def main(argv: list[str]) -> None:
    if "--plain" in argv or not _have_atheris():
        runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 10_000
        print(f"fuzz_formats: {plain(runs)} random mutations, no findings"
              + ("" if _have_atheris() else " (atheris is not installed: pip install atheris)"))
        return
    import atheris

    with atheris.instrument_imports(include=["halsim.formats"]):  # the parsers only: quick to start
        import halsim.formats  # noqa: F401
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    if corpus and os.path.isdir(corpus[0]) and not os.listdir(corpus[0]):
        for i, s in enumerate(seeds()):
            with open(os.path.join(corpus[0], f"seed{i}"), "wb") as f:
                f.write(s)
    atheris.Setup(argv, check_one)
    atheris.Fuzz()


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main(sys.argv)
