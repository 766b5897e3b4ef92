import json

import pytest

from halsim.errors import PolicyError
from halsim.policies import (
    IREE_STREAMING, AutoPolicy, ImportPolicy, StagedPolicy, StreamingPolicy, load_policy, parse_policy,
    policy_to_toml,
)

SPECS = [
    "staged", "staged:chunk=1MiB,readers=2", "streaming", "streaming:chunk=64MiB,slots=1,readers=1",
    "streaming:chunk=3,slots=7,readers=5,queues=2", "import", "import:piece=64MiB,fallback=staged",
    "import:fallback=streaming(chunk=4MiB,slots=2)", "direct:chunk=1MiB,readers=8", "auto:budget=128MiB",
]


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trip(spec):
    policy = parse_policy(spec)
    assert parse_policy(policy.spec()) == policy
    assert hash(policy) == hash(parse_policy(policy.spec()))


@pytest.mark.parametrize("spec", SPECS)
def test_toml_and_json_round_trip(spec, tmp_path):
    policy = parse_policy(spec)
    (tmp_path / "p.toml").write_text(policy_to_toml(policy))
    assert load_policy(tmp_path / "p.toml") == policy
    (tmp_path / "p.json").write_text(json.dumps(policy.model_dump()))
    assert load_policy(tmp_path / "p.json") == policy


def test_iree_default_is_serial_streaming():
    assert parse_policy("streaming:chunk=64MiB,slots=1,readers=1") == IREE_STREAMING
    assert IREE_STREAMING.staging_bound == 64 << 20


def test_policies_are_frozen():
    with pytest.raises(Exception):
        StreamingPolicy().chunk = 5


@pytest.mark.parametrize("bad,phrase", [
    ("foo", "unknown policy kind 'foo'"), ("streaming:chunk=0", "chunk"), ("streaming:slots=0", "slots"),
    ("streaming:chunk=12XB", "not a size"), ("streaming:colour=red", "colour"), ("streaming:chunk", "key=value"),
    ("import:fallback=import", "fallback"), ("streaming:chunk=1,chunk=2", "twice"), ("import:fallback=staged(", "unbalanced"),
])
def test_bad_specs_name_the_problem(bad, phrase):
    with pytest.raises(PolicyError, match=phrase):
        parse_policy(bad)


def test_bad_policy_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("kind = 'streaming'\nslots = -3\n")
    with pytest.raises(PolicyError, match="bad.toml"):
        load_policy(path)
    path.write_text("not toml [[[")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(path)


def test_policy_kinds():
    assert isinstance(parse_policy("staged"), StagedPolicy)
    assert isinstance(parse_policy("import"), ImportPolicy)
    assert isinstance(parse_policy("auto"), AutoPolicy)
