"""``lightnets models``: table, JSON, NAME filter, one-line errors."""

from __future__ import annotations

import json

import torch

import lightnets
from conftest import n_params, run_cli
from lightnets.cli import main


def run_json(capsys, *argv: str) -> list[dict]:
    assert main(["models", "--json", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return json.loads(captured.out)


def test_json_lists_every_model_with_hparams_and_counts(capsys):
    records = run_json(capsys)
    assert [r["name"] for r in records] == lightnets.list_models()
    by_name = {r["name"]: r for r in records}
    for record in records:
        entry = lightnets.get_model_entry(record["name"])
        assert record["paper"] == entry.paper
        assert {k: v["default"] for k, v in record["hparams"].items()} == entry.defaults
        for variant, size, classes in (("imagenet", 224, 1000), ("cifar", 32, 100)):
            counted = record["params"][variant]
            assert counted["input_size"] == [3, size, size]
            assert counted["num_classes"] == classes
            model = lightnets.create_model(record["name"], variant=variant, num_classes=classes)
            assert counted["params"] == n_params(model)
            assert model.default_input_size == (3, size, size)
    # The reference implementations' counts.
    assert by_name["mobilenet_v2"]["params"]["imagenet"]["params"] == 3_504_872
    assert by_name["mobilenet_v1"]["params"]["imagenet"]["params"] == 4_231_976
    assert by_name["squeezenet1_0"]["params"]["imagenet"]["params"] == 1_248_424
    assert by_name["squeezenet1_1"]["params"]["imagenet"]["params"] == 1_235_496
    assert by_name["squeezenet1_0"]["params"]["cifar"]["params"] == 775_204
    bypass = by_name["squeezenet1_0"]["hparams"]["bypass"]
    assert bypass["choices"] == ["none", "simple", "complex"] and bypass["type"] == "str"
    width = by_name["mobilenet_v2"]["hparams"]["width_mult"]
    assert width["choices"] is None and width["positive"] and width["type"] == "float"


def test_the_catalog_is_the_registrys_listing():
    # `lightnets models` prints the catalog (no torch import) when it is current; it must say
    # record for record what the registry says. Stale? Run: python -m lightnets.cli.models
    from lightnets.cli.models import catalog_records, live_records

    catalog = catalog_records()
    assert catalog is not None, "models_catalog.json is stale: python -m lightnets.cli.models"
    assert catalog == json.loads(json.dumps(live_records()))
    by_name = {record["name"]: record for record in catalog}
    picked = catalog_records(["squeezenet1_0", "mobilenet_v2"])
    assert picked == [by_name["squeezenet1_0"], by_name["mobilenet_v2"]]
    assert catalog_records(["mobilenetv2"]) is None  # the registry names the unknown model


def test_a_stale_or_missing_catalog_is_not_printed(capsys, monkeypatch, tmp_path):
    import lightnets.cli.models as models_command

    stale = tmp_path / "catalog.json"
    stale.write_text(json.dumps({"sources_digest": "0" * 64, "models": [{"name": "stale"}]}))
    for catalog in (stale, tmp_path / "missing.json"):
        monkeypatch.setattr(models_command, "CATALOG", catalog)
        assert [r["name"] for r in run_json(capsys)] == lightnets.list_models()
    # A current digest is what makes the catalog printed.
    stale.write_text(
        json.dumps({"sources_digest": models_command.sources_digest(), "models": [{"name": "x"}]})
    )
    monkeypatch.setattr(models_command, "CATALOG", stale)
    assert run_json(capsys) == [{"name": "x"}]


def test_name_filter(capsys):
    records = run_json(capsys, "squeezenet1_1", "mobilenet_v2")
    assert [r["name"] for r in records] == ["squeezenet1_1", "mobilenet_v2"]


def test_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in lightnets.list_models():
        assert name in out
    assert "3,504,872" in out and "2,351,972" in out
    assert "bypass=none {none,simple,complex}" in out


def test_unknown_name_is_one_line_exit_2(capsys):
    assert main(["models", "--json", "mobilenetv2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert "unknown model 'mobilenetv2'" in lines[0] and "mobilenet_v2" in lines[0]


def test_python_dash_m_json(tmp_path):
    result = run_cli(["models", "--json", "mobilenet_v1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["name"] == "mobilenet_v1"
    assert record["params"]["imagenet"]["params"] == 4_231_976
    assert record["params"]["cifar"]["params"] == 3_309_476


def test_counting_leaves_the_random_state_alone():
    # Counting builds on the meta device: no weights are drawn, the global RNG does not move.
    from lightnets.cli.models import count_parameters

    state = torch.get_rng_state()
    assert count_parameters("mobilenet_v2", "imagenet", 1000) == 3_504_872
    assert torch.equal(torch.get_rng_state(), state)


def test_model_flags_are_generated_from_every_declared_hyperparameter():
    # One flag per HParam of the registry: a new hyperparameter needs no CLI edit.
    from lightnets.cli import build_parser
    from lightnets.cli.common import declared_hparams, model_hparams_from_args

    declared = declared_hparams()
    assert set(declared) >= {"width_mult", "groups", "bypass", "batch_norm", "drop_rate"}
    for key, specs in declared.items():
        model, spec = next(iter(specs.items()))
        flag = "--" + key.replace("_", "-")
        value = [] if spec.kind is bool else [str(spec.default)]
        args = build_parser().parse_args(["profile", model, flag, *value])
        expected = True if spec.kind is bool else spec.default
        assert model_hparams_from_args(args) == {key: expected}
    untouched = build_parser().parse_args(["profile", "mobilenet_v2"])
    assert model_hparams_from_args(untouched) == {}
