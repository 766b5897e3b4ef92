"""Policy sweeps: grid specs, executors, the Pareto front, and auto choosing by simulation."""

import os

import pandas as pd
import pandas.testing as pdt
import pytest
from typer.testing import CliRunner

import halsim
from halsim.choose import Choice, candidates, choose_by_simulation, request_digest
from halsim.errors import PolicyError
from halsim.pareto import front_indices, pareto_front
from halsim.platform import load_platform
from halsim.policies import (
    IREE_STREAMING, AutoPolicy, ImportPolicy, StagedPolicy, StreamingPolicy, parse_policy, policy_to_toml,
)
from halsim.request import SourceInfo, UploadRequest
from halsim.sweep import load_results, make_targets, parse_grid, parse_grids, run_sweep
from halsim.workloads import load_workload

MiB = 1 << 20
SMALL_GRIDS = ["streaming:chunk=[16MiB,64MiB],slots=[1,2],readers=[1,2]", "import", "direct", "staged"]


@pytest.fixture(scope="module")
def targets():
    return make_targets(["h100-pcie5", "dgpu-pcie4"], ["iree-1gib", "gpt2"])


@pytest.fixture(scope="module")
def local(targets):
    return run_sweep(parse_grids(SMALL_GRIDS), targets, executor="serial")


# ---------------------------------------------------------------- grid specs


def test_grid_is_the_product_in_order():
    grid = parse_grid("streaming:chunk=[1MiB,4MiB],slots=[1,2],readers=3")
    assert grid == [
        StreamingPolicy(chunk=MiB, slots=1, readers=3), StreamingPolicy(chunk=MiB, slots=2, readers=3),
        StreamingPolicy(chunk=4 * MiB, slots=1, readers=3), StreamingPolicy(chunk=4 * MiB, slots=2, readers=3),
    ]


def test_issue_grid_has_48_configurations():
    grid = parse_grid("streaming:chunk=[1MiB,4MiB,16MiB,64MiB],slots=[1,2,4,8],readers=[1,2,4]")
    assert len(grid) == 48 and len(set(grid)) == 48


def test_plain_kind_and_nested_fallbacks():
    assert parse_grid("import") == [ImportPolicy()]
    grid = parse_grid("import:piece=[64MiB,256MiB],fallback=[staged,streaming(chunk=4MiB,slots=2)]")
    assert [(p.piece, p.fallback) for p in grid] == [
        (64 * MiB, StagedPolicy()), (64 * MiB, StreamingPolicy(chunk=4 * MiB, slots=2)),
        (256 * MiB, StagedPolicy()), (256 * MiB, StreamingPolicy(chunk=4 * MiB, slots=2)),
    ]


def test_grids_share_configurations_once():
    configs = parse_grids(["streaming:chunk=[16MiB,64MiB],slots=1,readers=1",
                           "streaming:chunk=64MiB,slots=1,readers=1"])
    assert configs == [StreamingPolicy(chunk=16 * MiB, slots=1, readers=1), IREE_STREAMING]


@pytest.mark.parametrize("bad,phrase", [
    ("", "empty"),
    ("auto:budget=[1MiB,2MiB]", "cannot be swept"),
    ("foo:chunk=[1MiB]", "unknown policy kind 'foo'"),
    ("streaming:chunk=[1MiB,4MiB", "unbalanced '\\['"),
    ("streaming:chunk=1MiB]", "unbalanced '\\]'"),
    ("streaming:chunk=[]", "empty"),
    ("streaming:chunk=[1MiB,,4MiB]", "empty value"),
    ("streaming:chunk=[1MiB]x", "after its closing"),
    ("streaming:chunk=1[MiB]", "whole value"),
    ("streaming:slots=[1,0]", "slots=0"),
    ("streaming:chunk=[1MiB,12XB]", "not a size"),
    ("streaming:colour=[red]", "colour"),
    ("streaming:chunk", "key=value"),
    ("streaming:slots=1,slots=[2,4]", "twice"),
    ("import:fallback=[staged,import]", "fallback"),
])
def test_bad_grids_name_the_problem(bad, phrase):
    with pytest.raises(PolicyError, match=phrase):
        parse_grid(bad)


def test_no_grid_and_no_sources_are_errors():
    with pytest.raises(PolicyError, match="--grid"):
        parse_grids([])
    with pytest.raises(PolicyError, match="--workload"):
        make_targets(["h100-pcie5"])
    with pytest.raises(halsim.HalsimError, match="unknown platform"):
        make_targets(["no-such-platform"], ["gpt2"])


# ---------------------------------------------------------------- the rows


def test_one_row_per_config_platform_and_workload(local):
    frame = local.frame
    assert len(frame) == len(parse_grids(SMALL_GRIDS)) * 4
    assert list(frame.columns[:2]) == ["policy", "kind"]
    for column in ("chunk", "slots", "readers", "queues", "piece", "fallback", "platform", "workload", "seconds",
                   "gb_per_s", "peak_staging_bytes", "peak_device_bytes", "bound", "bound_share", "ran", "error"):
        assert column in frame.columns
    assert (frame["error"] == "").all() and (frame["seconds"] > 0).all()
    assert set(zip(frame["platform"], frame["workload"])) == {
        ("h100-pcie5", "iree-1gib"), ("h100-pcie5", "gpt2"), ("dgpu-pcie4", "iree-1gib"), ("dgpu-pcie4", "gpt2")}
    staged = frame[frame["kind"] == "staged"]
    assert pd.isna(staged["slots"]).all()  # a field the kind lacks is missing, not 0
    # Each row is what a single simulation reports.
    row = frame[(frame["policy"] == IREE_STREAMING.spec()) & (frame["workload"] == "gpt2")].iloc[0]
    report = halsim.simulate("gpt2", row["platform"], IREE_STREAMING)
    assert row["seconds"] == report.seconds and row["peak_staging_bytes"] == report.peak_staging_bytes
    assert row["bound"] and 0 < row["bound_share"] <= 1


def test_process_pool_gives_the_same_rows(local, targets):
    pooled = run_sweep(parse_grids(SMALL_GRIDS), targets, executor="processes", workers=2)
    pdt.assert_frame_equal(local.frame, pooled.frame, check_exact=True)
    assert pooled.simulations == local.simulations and 1 <= len(pooled.worker_cpu) <= 2
    assert os.getpid() not in pooled.worker_cpu and pooled.cpu_seconds > 0


def test_dask_local_cluster_gives_the_same_rows(local, targets):
    seen = []
    dask = run_sweep(parse_grids(SMALL_GRIDS), targets, executor="dask", workers=2,
                     progress=lambda done, total: seen.append((done, total)))
    pdt.assert_frame_equal(local.frame, dask.frame, check_exact=True)
    assert seen[0] == (0, len(local.frame)) and seen[-1] == (len(local.frame), len(local.frame))


def test_existing_dask_cluster_by_address_gives_the_same_rows(local, targets):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_sweep(parse_grids(SMALL_GRIDS), targets, scheduler=cluster.scheduler_address)
    pdt.assert_frame_equal(local.frame, remote.frame, check_exact=True)


def test_a_refused_run_is_a_row_with_its_error():
    result = run_sweep(["staged"], make_targets(["h100-pcie5"], ["gpt2"], gpus=2), executor="serial")
    assert "no GPU 1" in result.frame["error"].iloc[0]
    assert result.best().empty and result.pareto().empty


@pytest.mark.parametrize("platform,gpus,readers", [("h100-pcie5", 1, [2, 8]), ("dgx-h100", 2, [4, 16])])
def test_rings_with_readers_to_spare_are_simulated_once_and_match_their_own_run(monkeypatch, platform, gpus, readers):
    import halsim.sweep as sweep

    calls = []
    real = sweep.simulate_row
    monkeypatch.setattr(sweep, "simulate_row", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    grid = f"streaming:chunk=16MiB,slots=2,readers=[{readers[0]},{readers[1]}]"
    result = run_sweep(parse_grid(grid), make_targets([platform], ["gpt2"], gpus=gpus), executor="serial")
    assert len(calls) == 1  # 2 slots per GPU: no more than 2 x gpus reads in flight either way
    spare = parse_grid(grid)[1]
    own = halsim.simulate("gpt2", platform, spare, gpus=gpus)
    row = result.frame.iloc[1]
    assert row["seconds"] == own.seconds == result.frame["seconds"].iloc[0]
    assert row["peak_staging_bytes"] == own.peak_staging_bytes and row["ran"] == own.policy == spare.spec()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_results_round_trip(local, tmp_path, suffix):
    path = local.save(tmp_path / f"rows{suffix}")
    back = load_results(path)
    assert back["policy"].tolist() == local.frame["policy"].tolist()
    assert back["seconds"].tolist() == pytest.approx(local.frame["seconds"].tolist(), rel=1e-12)
    assert back["peak_staging_bytes"].tolist() == local.frame["peak_staging_bytes"].tolist()
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        local.save(tmp_path / "rows.xlsx")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_policy_columns_keep_their_types_across_kinds(tmp_path, suffix):
    grids = ["import:piece=[64MiB,256MiB],release=[rolling,at_end]", "hybrid:share=[0.2,0.4]",
             "streaming:chunk=[16MiB]"]
    result = run_sweep(parse_grids(grids), make_targets(["h100-pcie5"], ["gpt2"]), executor="serial")
    for frame in (result.frame, load_results(result.save(tmp_path / f"rows{suffix}"))):
        # Whole numbers stay whole where other kinds leave gaps; fractions and words keep theirs.
        assert {name: str(frame[name].dtype) for name in ("piece", "chunk", "slots", "share")} == {
            "piece": "Int64", "chunk": "Int64", "slots": "Int64", "share": "float64"}
        assert frame["release"].fillna("").tolist() == ["rolling", "at_end", "rolling", "at_end", "", "", ""]
        assert frame["share"].tolist()[4:6] == [0.2, 0.4] and frame["share"].isna().sum() == 5
        assert frame["piece"].tolist()[:4] == [64 * MiB, 64 * MiB, 256 * MiB, 256 * MiB]
        assert frame["chunk"].tolist()[6] == 16 * MiB
        assert frame["imported"].tolist()[4].startswith("import:piece=64MiB")


def test_best_respects_the_budget(local):
    best = local.best("32MiB", n=3)
    assert (best["peak_staging_bytes"] <= 32 * MiB).all()
    for (platform, workload), group in best.groupby(["platform", "workload"]):
        assert len(group) == 3 and group["seconds"].is_monotonic_increasing
        every = local.frame[(local.frame["platform"] == platform) & (local.frame["workload"] == workload)]
        fits = every[every["peak_staging_bytes"] <= 32 * MiB]
        assert group["seconds"].iloc[0] == fits["seconds"].min()


# ---------------------------------------------------------------- Pareto front


def test_front_by_hand():
    #          0        1        2        3        4        5        6 (a repeat of 0)
    points = [(0, 5.0), (10, 3.0), (10, 4.0), (20, 3.0), (30, 1.0), (5, 5.0), (0, 5.0)]
    # 2 loses to 1 (same staging, slower); 3 to 1 (same time, more staging); 5 to 0; 6 repeats 0.
    assert front_indices(points) == [0, 1, 4]
    assert front_indices([]) == []


def test_front_of_a_hand_made_grid_per_group():
    frame = pd.DataFrame({
        "platform": ["a"] * 4 + ["b"] * 3,
        "workload": ["w"] * 7,
        "policy": ["slow-small", "fast-big", "mid-mid", "slow-big", "x", "y", "z"],
        "peak_staging_bytes": [1, 100, 10, 100, 0, 0, 5],
        "seconds": [9.0, 1.0, 4.0, 2.0, 3.0, 2.0, 2.0],
    })
    front = pareto_front(frame)
    assert front["policy"].tolist() == ["slow-small", "mid-mid", "fast-big", "y"]


def test_front_of_a_sweep_is_non_dominated_and_beats_the_rest(local):
    def beats(q, p):
        return q[0] <= p[0] and q[1] <= p[1] and q != p

    front = local.pareto()
    for (platform, workload), group in local.ok.groupby(["platform", "workload"]):
        on = front[(front["platform"] == platform) & (front["workload"] == workload)]
        assert len(on)
        front_points = list(zip(on["peak_staging_bytes"], on["seconds"]))
        every = list(zip(group["peak_staging_bytes"], group["seconds"]))
        for index, p in zip(group.index, every):
            if index in on.index:
                assert not any(beats(q, p) for q in every)
            else:  # beaten by the front, or a repeat of a point on it
                assert any(beats(q, p) or q == p for q in front_points)


def test_plot_marks_the_iree_default(local, tmp_path):
    path = local.plot(tmp_path / "pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reference = local.reference()
    assert (reference["policy"] == IREE_STREAMING.spec()).all() and len(reference) == 4


def test_reference_simulates_the_iree_default_when_the_grid_lacks_it():
    result = run_sweep(["import"], make_targets(["h100-pcie5"], ["gpt2"]), executor="serial")
    reference = result.reference()
    assert len(reference) == 1 and reference["seconds"].iloc[0] > 0


# ---------------------------------------------------------------- auto by simulation


@pytest.fixture()
def no_import_caps():
    """An H100 that can neither import nor read storage directly: rings must compete."""
    return [load_platform("h100-pcie5").caps(0).model_copy(update={"can_import_host": False,
                                                                     "direct_storage": False})]


@pytest.mark.parametrize("budget", [8 * MiB, 32 * MiB, 256 * MiB])
def test_auto_chooses_the_predicted_fastest_within_the_budget(budget, no_import_caps):
    request = load_workload("iree-1gib").request()
    choice = choose_by_simulation(request, "h100-pcie5", budget, caps=no_import_caps)
    # Independently: simulate every candidate, keep those that fit and run as themselves, take the fastest.
    cpus = load_platform("h100-pcie5").host.cpus  # auto's candidates go up to the host's threads
    rows = run_sweep(candidates(request, budget, cpus), make_targets(["h100-pcie5"], ["iree-1gib"]),
                     executor="serial").frame
    fits = rows[(rows["peak_staging_bytes"] <= budget) & ~rows["kind"].isin(["import", "direct"])]
    fastest = fits.sort_values(["seconds", "peak_staging_bytes"], kind="stable").iloc[0]
    assert choice.policy.spec() == fastest["policy"]
    assert choice.seconds == fastest["seconds"] and choice.peak_staging_bytes <= budget
    assert choice.eligible == len(fits)


def test_a_bigger_budget_never_chooses_slower(no_import_caps):
    request = load_workload("iree-1gib").request()
    small, big = (choose_by_simulation(request, "h100-pcie5", b, caps=no_import_caps) for b in (8 * MiB, 256 * MiB))
    assert big.seconds <= small.seconds
    assert small.peak_staging_bytes <= 8 * MiB and big.peak_staging_bytes <= 256 * MiB


def test_choose_returns_a_concrete_policy_and_checks_its_arguments():
    request = load_workload("gpt2").request()
    policy = halsim.choose(request, "h100-pcie5", budget="64MiB")
    assert policy.kind != "auto" and policy == choose_by_simulation(request, "h100-pcie5", 64 * MiB).policy
    with pytest.raises(PolicyError, match="objective"):
        halsim.choose(request, "h100-pcie5", objective="memory")
    with pytest.raises(halsim.HalsimError, match="unknown platform"):
        halsim.choose(request, "no-such-platform")


def test_the_choice_is_cached_per_request_layout_platform_and_budget(monkeypatch):
    import importlib

    import halsim.sweep as sweep

    chooser = importlib.import_module("halsim.choose")  # halsim.choose is the function

    calls = []
    real = sweep.simulate_row
    monkeypatch.setattr(sweep, "simulate_row", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    monkeypatch.setattr(chooser, "_CACHE", type(chooser._CACHE)())
    request = load_workload("gpt2").request()
    first = choose_by_simulation(request, "h100-pcie5", 64 * MiB)
    simulated = len(calls)
    assert simulated == first.considered
    # The same layout from a file of another name is the same question.
    renamed = UploadRequest(SourceInfo("elsewhere.safetensors", request.source.length, request.source.host_alignment,
                                       request.source.page_cached), request.buffers, request.transfers)
    assert request_digest(renamed) == request_digest(request)
    assert choose_by_simulation(renamed, "h100-pcie5", 64 * MiB) == first
    assert len(calls) == simulated
    choose_by_simulation(request, "h100-pcie5", 32 * MiB)  # another budget is another sweep
    assert len(calls) > simulated


def test_auto_with_a_platform_plans_through_the_choice():
    request = load_workload("gpt2").request()
    caps = [load_platform("h100-pcie5").caps(0)]
    auto = parse_policy("auto:budget=64MiB,platform=h100-pcie5")
    assert auto == AutoPolicy(budget=64 * MiB, platform="h100-pcie5")
    plan = auto.plan(request, caps)
    choice = choose_by_simulation(request, "h100-pcie5", 64 * MiB, caps=caps)
    assert plan.policy == choice.policy and plan.requested == auto
    assert any("predicted" in note for note in plan.notes)
    assert plan == auto.plan(request, caps)  # a function of its inputs


def test_auto_without_a_platform_keeps_choosing_by_caps():
    request = load_workload("gpt2").request()
    plan = AutoPolicy().plan(request, [load_platform("h100-pcie5").caps(0)])
    assert plan.notes and not any("predicted" in note for note in plan.notes)


def test_auto_platform_round_trips_and_stays_out_of_specs_when_unset(tmp_path):
    from halsim.policies import load_policy

    auto = AutoPolicy(platform="h100-pcie5")
    assert parse_policy(auto.spec()) == auto
    assert "platform" not in AutoPolicy().spec()
    (tmp_path / "auto.toml").write_text(policy_to_toml(auto))
    assert load_policy(tmp_path / "auto.toml") == auto
    (tmp_path / "plain.toml").write_text(policy_to_toml(AutoPolicy()))
    assert load_policy(tmp_path / "plain.toml") == AutoPolicy()


def test_why_names_the_prediction():
    choice = Choice(StreamingPolicy(), "h100-pcie5", 256 * MiB, 0.75, 21.3, 128 * MiB, "host memory 94%", 26, 25, 3.1)
    why = choice.why()
    for phrase in ("0.750 s", "128MiB", "h100-pcie5", "25 candidates", "256MiB", "host memory 94%", "3.100 s"):
        assert phrase in why


# ---------------------------------------------------------------- command line


def test_sweep_command_writes_rows_and_plot(tmp_path):
    from halsim.cli import app

    rows, png = tmp_path / "rows.parquet", tmp_path / "pareto.png"
    result = CliRunner().invoke(app, ["sweep", "-w", "gpt2", "-p", "h100-pcie5", "--executor", "serial",
                                      "--grid", "streaming:chunk=[16MiB,64MiB],slots=[1,2],readers=1",
                                      "--grid", "import", "--budget", "32MiB", "-o", str(rows), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "fastest within 32MiB" in result.output
    assert len(load_results(rows)) == 5 and png.stat().st_size > 0


@pytest.mark.parametrize("args,phrase", [
    (["--grid", "auto"], "cannot be swept"),
    (["--grid", "streaming:slots=[0]"], "slots"),
    (["--budget", "lots"], "not a size"),
    (["-o", "rows.xlsx"], ".parquet or .csv"),
    (["--executor", "threads"], "executor"),
])
def test_sweep_command_errors(args, phrase):
    from halsim.cli import app

    result = CliRunner().invoke(app, ["sweep", "-w", "gpt2", "--grid", "import", *args])
    assert result.exit_code == 1 and phrase in result.output


def test_upload_with_auto_and_a_platform_says_what_it_chose(tmp_path):
    from halsim.cli import app

    path = tmp_path / "small.safetensors"
    load_workload("test-small").write(path)
    result = CliRunner().invoke(app, ["upload", str(path), "--device", "cpu", "--policy", "auto:budget=1MiB",
                                      "--platform", "h100-pcie5", "--verify"])
    assert result.exit_code == 0, result.output
    assert "auto chose" in result.output and "predicted" in result.output and "verified" in result.output
    refused = CliRunner().invoke(app, ["upload", str(path), "--policy", "streaming", "--platform", "h100-pcie5"])
    assert refused.exit_code == 1 and "--policy auto" in refused.output
