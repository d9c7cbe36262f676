"""Config validation: defaults filled from the schema, bad keys/values rejected naming the key."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from workflow_scripts.common.config import format_cs, load_config, load_schema, validate_config
from workflow_scripts.common.errors import InputError


@pytest.fixture(scope="module")
def default_config(repo):
    with open(repo / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_shipped_configs_are_valid(repo):
    for path in [repo / "config.yaml", repo / "tests/config/test.yaml"]:
        cfg = load_config(path)
        assert cfg["misalign"]["top_k"] == 10
    example = repo / "config/real_data.example.yaml"
    cfg = load_config(example)
    assert cfg["world"]["enabled"] is False
    assert cfg["models"]["laclip"]["source"] == "laclip"


def test_defaults_are_filled_in_nested_sections():
    cfg = validate_config({"models": {"m": {"source": "pretrain", "arch": "fp-tiny-vit"}}, "finetune": {"models": ["m"]},
                           "evaluate": {"pruning": {"models": ["m"]}}})
    assert cfg["misalign"]["tfidf"]["max_features"] == 5000
    assert cfg["misalign"]["tfidf"]["ngram_range"] == [1, 2]
    assert cfg["finetune"]["weight_decay"] == 0.5
    assert cfg["models"]["m"]["captions"] == "human"
    assert cfg["models"]["m"]["trust_legacy_pickle"] is False


def test_every_schema_property_has_a_description():
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node:
                for key, sub in node["properties"].items():
                    if "description" not in sub:
                        missing.append(f"{path}.{key}")
                    walk(sub, f"{path}.{key}")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], path + ".*")

    walk(load_schema(), "")
    assert not missing, missing


BAD = [
    (lambda c: c["finetune"].__setitem__("epochs", 0), r"finetune\.epochs"),
    (lambda c: c["misalign"].__setitem__("cs_values", [0.1, 1.5]), r"misalign\.cs_values\.1"),
    (lambda c: c["misalign"].__setitem__("strategies", ["similarity", "shuffle"]), r"misalign\.strategies\.1"),
    (lambda c: c["finetune"].__setitem__("models", ["clip", "vit-huge"]), r"finetune\.models\.1.*vit-huge"),
    (lambda c: c.__setitem__("finetune_epochs", 3), r"finetune_epochs"),
    (lambda c: c["models"]["clip"].__setitem__("source", "hub"), r"models\.clip\.source"),
    (lambda c: c["misalign"]["tfidf"].__setitem__("ngram_range", [1]), r"misalign\.tfidf\.ngram_range"),
    (lambda c: c["models"]["clip"].update(url="https://example.org/x.pt"), r"models\.clip\.sha256"),
    (lambda c: c["evaluate"]["templates"].append("no placeholder"), r"evaluate\.templates\.1"),
    (lambda c: c["misalign"].__setitem__("cs_values", [0.1, 0.10]), r"misalign\.cs_values.*duplicate"),
    (lambda c: (c["world"].__setitem__("enabled", False), c["multilingual"].__setitem__("enabled", True)),
     r"multilingual\.models\.mclip\.source"),
]


@pytest.mark.parametrize("mutate,pattern", BAD)
def test_bad_config_names_the_key(default_config, mutate, pattern):
    cfg = copy.deepcopy(default_config)
    mutate(cfg)
    with pytest.raises(InputError, match=pattern):
        validate_config(cfg, source="config.yaml")


def test_missing_and_unparsable_config_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_format_cs():
    assert [format_cs(c) for c in (0, 0.1, 0.3, 0.25, 1)] == ["0.0", "0.1", "0.3", "0.25", "1.0"]


def test_a_run_name_stands_for_one_data_set_and_its_models(default_config, tmp_path):
    from workflow_scripts.common.config import claim_run, run_paths

    real = copy.deepcopy(default_config)
    real["world"]["enabled"] = False
    with pytest.raises(InputError, match="key 'run'"):                  # real data must name its study
        claim_run(real, tmp_path / "unnamed")
    real["run"] = "cc3m"
    assert run_paths(real)["results"] == "results/runs/cc3m" and run_paths(default_config)["results"] == "results"
    results = tmp_path / "results/runs/cc3m"
    claim_run(real, results)
    claim_run(copy.deepcopy(real), results)                               # the same study again: fine
    more = copy.deepcopy(real)
    more["models"]["third"] = {**more["models"]["clip"]}
    claim_run(more, results)                                              # a new model name is added
    assert "third" in json.loads((results / "run.json").read_text())["models"]
    other_data = copy.deepcopy(real)
    other_data["data"]["captions"] = "elsewhere/captions.txt"
    # nothing made yet (only run.json and settings/, as a dry run leaves them): the name is released
    (results / "settings").mkdir()
    (results / "settings" / "abc.yaml").write_text("x")
    claim_run(other_data, results)
    assert json.loads((results / "run.json").read_text())["data"]["captions"] == "elsewhere/captions.txt"
    claim_run(real, results)                                              # and back, still nothing made
    (results / "pretrain").mkdir()
    (results / "pretrain" / "checkpoint.pt").write_bytes(b"made")         # a run made something: protected
    with pytest.raises(InputError, match=r"other data\.captions .*run\.json.*delete"):
        claim_run(other_data, results)
    other_model = copy.deepcopy(real)
    other_model["models"]["clip"]["arch"] = "ViT-B-16"
    with pytest.raises(InputError, match="models.clip"):
        claim_run(other_model, results)


def test_settings_files_are_named_by_their_content_and_never_rewritten(default_config, tmp_path):
    from workflow_scripts.common.config import write_settings

    a = write_settings(default_config, tmp_path)
    text_a = a.read_text()
    changed = copy.deepcopy(default_config)
    changed["finetune"]["epochs"] += 1
    b = write_settings(changed, tmp_path)
    assert a != b and a.read_text() == text_a                             # another config: another file
    assert write_settings(copy.deepcopy(default_config), tmp_path) == a
    assert load_config(b)["finetune"]["epochs"] == default_config["finetune"]["epochs"] + 1
