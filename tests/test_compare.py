"""``compare``: the same policies simulated and run on the CPU device, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import halsim
from halsim.calibrate import Config, calibrate
from halsim.cli import app
from halsim.compare import STEP_LANES, Case, cases, compare, pooled, rank
from halsim.formats import write_safetensors_layout
from halsim.noise import noise_floor
from halsim.platform import load_platform
from halsim.policies import parse_policy

KiB, MiB = 1 << 10, 1 << 20
TINY = Config(scratch=4 * MiB, copy_chunks=(64 * KiB, 256 * KiB, MiB), read_sizes=(64 * KiB, 256 * KiB, MiB),
              cold_sizes=(256 * KiB, MiB), threads=(1, 2), thread_chunk=512 * KiB, memcpy_bytes=2 * MiB,
              pin_slots=(1, 2), pin_bytes=(256 * KiB, MiB), import_pieces=(256 * KiB, MiB), run_bytes=2 * MiB,
              max_steps=16, repeats=2)
POLICIES = ["streaming:chunk=1MiB,slots=2,readers=2", "streaming:chunk=4MiB,slots=1,readers=1", "staged", "direct"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("compare") / "model.safetensors"
    block = np.arange(MiB, dtype=np.uint32).astype(np.uint8)

    def fill(name, piece):
        view = np.frombuffer(piece, np.uint8)
        view[:] = np.resize(block, len(view))

    write_safetensors_layout(path, [(f"layer.{i}.weight", "F16", (MiB // 2,)) for i in range(8)], fill=fill)
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    return calibrate("cpu", TINY).save(tmp_path_factory.mktemp("platform") / "cpu.toml")


@pytest.fixture(scope="module")
def comparison(model, platform):
    return compare(model, "cpu", platform, cases(POLICIES, "both"), repeat=2)


def test_every_case_is_predicted_and_measured(comparison):
    assert [r.case.label for r in comparison.rows] == [c.label for c in cases(POLICIES, "both")]
    for row in comparison.rows:
        assert row.predicted.simulated and not any(r.simulated for r in row.measured)
        assert len(row.measured) == 2 and row.seconds > 0 and row.predicted_seconds > 0
        assert row.error == pytest.approx((row.predicted_seconds - row.seconds) / row.seconds)
        assert row.spread >= 0
        # The platform has the CPU's caps, so both sides ran the same plan and staged the same bytes.
        assert row.same_policy
        assert row.predicted.peak_staging_bytes == row.median_run.peak_staging_bytes
    assert comparison.worst_error >= comparison.median_error >= 0
    assert not comparison.notes


def test_cold_cases_are_simulated_cold(comparison, model, platform):
    # A VM's "cold" drive may be the host's cache and measure faster than its page cache, so the
    # calibrated numbers can't be ordered; instead a cold case must move with the drive, a warm one not.
    by_label = {r.case.label: r for r in comparison.rows}
    calibrated = load_platform(platform)
    staged = parse_policy("staged")
    assert by_label["staged (cold)"].predicted.seconds == pytest.approx(
        halsim.simulate(model, calibrated, staged, page_cached=False).seconds)
    assert by_label["staged"].predicted.seconds == pytest.approx(halsim.simulate(model, calibrated, staged).seconds)
    storage = calibrated.storage
    slow_drive = calibrated.model_copy(update={"storage": storage.model_copy(update={
        "bandwidth": storage.bandwidth / 100, "fault_in_bandwidth": None})})
    assert halsim.simulate(model, slow_drive, staged, page_cached=False).seconds > \
        10 * by_label["staged (cold)"].predicted.seconds
    assert halsim.simulate(model, slow_drive, staged).seconds == pytest.approx(by_label["staged"].predicted.seconds)


def test_exports(comparison, tmp_path):
    body = json.loads(comparison.to_json())
    assert len(body["rows"]) == len(comparison.rows) and "kendall_tau" in body
    for stored, row in zip(body["rows"], comparison.rows):
        # Each side's lanes: a ring's reads and copies took time on both.
        if not row.case.label.startswith("streaming"):
            continue
        for side in ("predicted", "measured"):
            ops = {(u["lane"], u["op"]) for u in stored["lanes"][side]}
            assert ("read", "read") in ops and any(op == "copy" for _, op in ops), (row.case.label, side)
            assert all(0 <= u["busy"] <= u["summed"] + 1e-9 for u in stored["lanes"][side])
            assert sum(u["busy"] for u in stored["lanes"][side] if u["op"] == "read") > 0
    markdown = comparison.markdown()
    assert markdown.count("\n| `") == len(comparison.rows) and "median |error|" in markdown
    # Two real runs a case: the summary says how a perfect model would score against them.
    floor = noise_floor([stored["measured_runs"] for stored in body["rows"]], (0.05, 0.15))
    assert body["noise_floor"] == floor.to_dict() and 0 <= floor.median <= floor.worst
    assert floor.describe() in markdown and floor.describe() in comparison.summary()

    trace = json.loads(comparison.write_perfetto(tmp_path / "trace.json").read_text())
    processes = [e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"]
    assert processes[:2] == [f"sim · {comparison.rows[0].case.label}", f"real · {comparison.rows[0].case.label}"]
    assert len(processes) == 2 * len(comparison.rows)
    # Lane for lane: every step lane of a real run is a lane of its simulation too. Which reader
    # takes a step depends on who is free first, so a real run may use a reader the simulation
    # left idle (1 MiB reads outrun their copies): a reader lane need only be one of the plan's.
    traces = comparison.traces()
    for row in comparison.rows:
        real = {s.lane for s in traces[f"real · {row.case.label}"].spans if s.lane.startswith(STEP_LANES)}
        sim = {s.lane for s in traces[f"sim · {row.case.label}"].spans if s.lane.startswith(STEP_LANES)}
        readers = {f"read/{k}" for k in range(getattr(row.case.policy, "readers", 0))}
        assert real - readers <= sim, row.case.label
        assert any(lane.startswith("read/") for lane in sim) == any(lane.startswith("read/") for lane in real)

    png = comparison.plot(tmp_path / "compare.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranking_counts_swaps():
    from halsim.compare import Row
    from halsim.report import Report

    def report(seconds):
        return Report("p", "p", "d", "overlapped", False, seconds, 1, 1.0, 0, 0, 0, 0, 0, 0, "upload", "f")

    def row(name, predicted, measured):
        return Row(Case(parse_policy(name)), report(predicted), [report(m) for m in measured])

    same = rank([row("staged", 1.0, [2.0, 2.0]), row("direct", 2.0, [3.0, 3.0])])
    assert same.same_order and same.tau == 1.0 and same.agree == 1 and not same.swapped
    noisy = rank([row("staged", 1.0, [2.0, 2.4]), row("direct", 2.0, [2.1, 2.1])])
    assert not noisy.same_order and noisy.swapped == [("staged:chunk=64MiB,readers=1",
                                                       "direct:chunk=16MiB,readers=4,fallback=streaming(chunk=16MiB,"
                                                       "slots=8,readers=4,queues=1)", True)]
    assert noisy.swapped_beyond_noise == 0 and noisy.tau == -1.0
    # Predicted equal: no claim about the order, but a miss when the device tells them apart.
    tied = rank([row("staged", 1.0, [1.0, 1.0]), row("direct", 1.001, [2.0, 2.0])])
    assert tied.tied and not tied.swapped and not tied.same_order
    assert rank([row("staged", 1.0, [1.0, 1.2]), row("direct", 1.001, [1.1, 1.1])]).same_order
    # Two rounds order no pair by the sign test: the verdict says how many would.
    assert noisy.orders_as_rounds is None and noisy.ordered == 0 and "2 round(s) cannot order" in noisy.describe()


def test_ranking_judges_the_pairs_the_rounds_order():
    from halsim.compare import Misordered, Row
    from halsim.report import Report

    def report(seconds):
        return Report("p", "p", "d", "overlapped", False, seconds, 1, 1.0, 0, 0, 0, 0, 0, 0, "upload", "f")

    def row(name, predicted, measured):
        return Row(Case(parse_policy(name)), report(predicted), [report(m) for m in measured])

    rounds = [1.0, 1.3, 0.9, 1.2, 1.1, 1.0, 1.4, 0.95]
    # direct ran 3 % ahead of staged in all 8 rounds; their half-ranges overlap, so the spread
    # test lets the simulator's swap pass, the rounds do not.
    staged, direct = row("staged", 1.0, rounds), row("direct", 1.1, [t * 0.97 for t in rounds])
    far = row("import", 5.0, [t * 4 for t in rounds])  # behind both in every round, and predicted so
    ranking = rank([staged, direct, far])
    assert ranking.swapped_beyond_noise == 0 and not ranking.same_order
    assert (ranking.rounds, ranking.ordered) == (8, 3) and ranking.orders_as_rounds is False
    assert ranking.misordered == [Misordered(direct.case.label, staged.case.label, 8, 8, False)]
    assert f"{direct.case.label} ahead of {staged.case.label} in 8 of 8" in ranking.describe()
    # Predicted level: still a miss, as a tie the device breaks every round.
    level = rank([staged, row("direct", 1.001, [t * 0.97 for t in rounds]), far])
    assert level.misordered[0].predicted_equal and level.orders_as_rounds is False
    # Swapped within rounds that change places: no order to miss.
    shuffled = rank([staged, row("direct", 1.1, [t * 0.97 for t in rounds[1:] + rounds[:1]]), far])
    assert shuffled.orders_as_rounds is True and shuffled.ordered == 2 and "all of them as the simulator" in (
        shuffled.describe())
    # The faster case first in the pair, 7 of 8 rounds (one tied): its wins, not the other's.
    first = row("direct", 1.1, [t * 0.97 for t in rounds[:6]] + [rounds[6], rounds[7] * 0.97])
    ahead = rank([first, row("staged", 1.0, rounds)])
    assert ahead.misordered == [Misordered(first.case.label, "staged:chunk=64MiB,readers=1", 7, 7, False)]
    # Six rounds can order a pair, five cannot.
    assert rank([row("staged", 1.0, rounds[:6]), row("direct", 1.1, [t * 0.97 for t in rounds[:6]])]).misordered
    five = rank([row("staged", 1.0, rounds[:5]), row("direct", 1.1, [t * 0.97 for t in rounds[:5]])])
    assert five.orders_as_rounds is None and not five.misordered and five.ordered == 0


def test_cli_compare(model, platform, tmp_path):
    result = CliRunner().invoke(app, [
        "compare", str(model), "--device", "cpu", "--platform", str(platform),
        "--policy", POLICIES[0], "--policy", "import", "--repeat", "2",
        "--trace", str(tmp_path / "t.json"), "--plot", str(tmp_path / "p.png"), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "sim s" in result.output and "median |error|" in result.output
    assert all((tmp_path / name).exists() for name in ("t.json", "p.png", "c.json"))
    assert len(json.loads((tmp_path / "c.json").read_text())["rows"]) == 2


def test_cli_compare_names_what_is_wrong(model, platform, tmp_path):
    runner = CliRunner()
    bad_policy = runner.invoke(app, ["compare", str(model), "--platform", str(platform), "--policy", "bogus"])
    assert bad_policy.exit_code == 1 and "bogus" in bad_policy.output
    missing = runner.invoke(app, ["compare", str(tmp_path / "nope.bin"), "--platform", str(platform),
                                  "--policy", "staged"])
    assert missing.exit_code == 1 and "nope.bin" in missing.output
    bad_cache = runner.invoke(app, ["compare", str(model), "--platform", str(platform), "--policy", "staged",
                                    "--cache", "tepid"])
    assert bad_cache.exit_code == 1 and "tepid" in bad_cache.output


def test_rounds_run_apart_pool_into_one_comparison(model, platform):
    """Interleaved with rounds of calibration: each round one real run of every case against a
    stand-in platform; pooled, every run of each case, predicted anew on the fitted platform."""
    from halsim.compare import pooled
    from halsim.platform import load_platform

    todo = cases(POLICIES[:2], "warm")
    parts = [compare(model, "cpu", "h100-pcie5", todo, repeat=1, warmup=k == 0) for k in range(2)]
    one = pooled(parts, platform)
    assert one.repeat == 2 and one.platform == load_platform(platform).name
    for k, row in enumerate(one.rows):
        assert row.measured == parts[0].rows[k].measured + parts[1].rows[k].measured
        assert row.predicted_seconds == compare(model, "cpu", platform, [row.case], repeat=1, warmup=False) \
            .rows[0].predicted_seconds
        assert row.same_policy
    assert not one.notes  # notes are about the platform the predictions came from, not the stand-in
    with pytest.raises(ValueError, match="same cases"):
        pooled([parts[0], compare(model, "cpu", platform, todo[:1], repeat=1, warmup=False)], platform)


def test_every_warm_case_after_a_cold_one_runs_on_a_fresh_warm_cache(model, platform, monkeypatch):
    """A cold case leaves the file cached as its readers brought it in; a warm case after it
    must not run on that (the H200's first warm upload after one ran 14-20% slower)."""
    import halsim
    from halsim import pagecache

    events: list[str] = []
    real_warm, real_drop, real_upload = pagecache.warm, pagecache.drop, halsim.upload

    def warm(path, piece=16 << 20, fresh=False):
        real_warm(path, piece, fresh)  # a fresh warm drops the file first: its own "drop" comes before
        events.append("fresh" if fresh else "warm")

    def drop(path):
        events.append("drop")
        return real_drop(path)

    def upload(path, device, policy, **kwargs):
        events.append(f"upload {policy.spec()}")
        return real_upload(path, device, policy, **kwargs)

    monkeypatch.setattr(pagecache, "warm", warm)
    monkeypatch.setattr(pagecache, "drop", drop)
    monkeypatch.setattr(halsim, "upload", upload)
    warm_case, cold_case = Case(parse_policy(POLICIES[0])), Case(parse_policy("staged"), cold=True)
    warm_spec, cold_spec = f"upload {warm_case.policy.spec()}", f"upload {cold_case.policy.spec()}"

    def check(fresh_warms):
        state = "none"
        for event in events:
            if event in ("fresh", "drop"):
                state = event
            elif event == cold_spec:
                assert state == "drop"
                state = "cold"
            elif event == warm_spec:
                assert state in ("fresh", "warm run"), events
                state = "warm run"
        assert events.count("fresh") == fresh_warms and events.count(warm_spec) == 4, events

    # In the order given, the second warm case of each round follows a cold one: 3 fresh warms.
    compare(model, "cpu", platform, [warm_case, cold_case, warm_case], repeat=2, warmup=False, shuffle=False)
    check(3)
    # Shuffled, warm cases run before cold ones: one fresh warm a round.
    events.clear()
    compare(model, "cpu", platform, [warm_case, cold_case, warm_case], repeat=2, warmup=False)
    check(2)


def test_rounds_shuffle_warm_then_cold_cases(model, platform):
    """Each round runs the warm cases, then the cold ones, each group in a fresh order, so a case's
    place in the round cannot order it (halsim.roundorder); the order given with shuffle=False."""
    todo = cases(POLICIES[:3], "both")
    seen: list[str] = []
    shuffled = compare(model, "cpu", platform, todo, repeat=4, warmup=False, seed=3,
            progress=lambda done, total, label: seen.append(label) if done < total else None)
    rounds = [seen[k:k + len(todo)] for k in range(0, len(seen), len(todo))]
    warm, cold = [c.label for c in todo if not c.cold], [c.label for c in todo if c.cold]
    assert len(rounds) == 4
    for order in rounds:
        assert sorted(order[:3]) == sorted(warm) and sorted(order[3:]) == sorted(cold)
    assert len({tuple(order) for order in rounds}) > 1  # the order changes from round to round
    assert shuffled.running_order == rounds and shuffled.to_dict()["running_order"] == rounds
    assert pooled([shuffled, shuffled], platform).running_order == rounds * 2
    seen.clear()
    compare(model, "cpu", platform, todo, repeat=2, warmup=False, shuffle=False,
            progress=lambda done, total, label: seen.append(label) if done < total else None)
    assert seen == [c.label for c in todo] * 2
