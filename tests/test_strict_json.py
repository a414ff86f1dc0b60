"""`lightnets models --json` is strict JSON: parsers that reject NaN/Infinity accept it."""

from __future__ import annotations

import json

import lightnets.cli.models
from lightnets.cli import main


def strict_loads(text: str):
    """json.loads that refuses the non-standard constants Python's json accepts."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_models_json_is_strict(capsys):
    assert main(["models", "--json"]) == 0
    records = strict_loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == set(lightnets.list_models())


def test_non_finite_numbers_are_written_as_null(capsys, monkeypatch):
    describe = lightnets.cli.models.describe_model

    def with_nan(name: str) -> dict:
        record = describe(name)
        record["hparams"]["width_mult"]["default"] = float("nan")
        record["params"]["imagenet"]["params"] = float("inf")
        return record

    monkeypatch.setattr(lightnets.cli.models, "describe_model", with_nan)
    monkeypatch.setattr(lightnets.cli.models, "catalog_records", lambda names: None)
    assert main(["models", "--json", "mobilenet_v2"]) == 0
    (record,) = strict_loads(capsys.readouterr().out)
    assert record["hparams"]["width_mult"]["default"] is None
    assert record["params"]["imagenet"]["params"] is None
