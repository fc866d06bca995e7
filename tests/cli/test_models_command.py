"""`medchat models`: the catalogue table (the catalogue module returns the data, the command prints it)."""

from __future__ import annotations

from click.testing import CliRunner

from medchat.cli.main import cli
from medchat.models.catalog import CATALOGUE, catalogue_status


def test_models_prints_one_row_per_catalogue_entry(monkeypatch):
    monkeypatch.setattr("medchat.models.catalog.hub_cached", lambda hub_id: hub_id == CATALOGUE["r1-qwen-1.5b"].hub_id)
    monkeypatch.setattr("medchat.models.catalog.embedded_ready", lambda: False)
    assert [cached for _entry, cached in catalogue_status()] == [e.name == "r1-qwen-1.5b" for e in CATALOGUE.values()]

    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "CACHED", "HUB", "ID", "/", "DESCRIPTION"]
    rows = {line.split()[0]: line.split()[2] for line in lines[1:len(CATALOGUE) + 1]}
    assert rows == {name: "yes" if name == "r1-qwen-1.5b" else "no" for name in CATALOGUE}
    assert lines[-1].startswith("auto = ") and lines[-2] == ""
    column = lines[0].index("CACHED")
    assert all(line[column:column + 3] in ("yes", "no ") for line in lines[1:len(CATALOGUE) + 1])
