import json

import pytest

from calibrate.scan_input import VERL_LAYOUT, read_scan
from srdd.errors import SrddError

from .conftest import DEAD, REL, SQNR, published_doc, srdd_doc


def test_both_layouts_read_to_the_same_table(published_scan, srdd_scan):
    ours, theirs = read_scan(srdd_scan), read_scan(published_scan)
    assert (ours.layout, theirs.layout) == ("srdd.scan/v1", VERL_LAYOUT)
    assert ours.values == theirs.values
    assert ours.values["relative_error"] == REL and ours.values["deadzone_ratio"] == DEAD
    assert ours.values["sqnr_db"] == SQNR
    assert ours.site == "block_output" and ours.fmt == "mxfp4" and theirs.fmt == "mxfp4"
    assert ours.num_layers == theirs.num_layers == 28


def test_layer_order_in_the_file_does_not_matter(tmp_path):
    doc = published_doc()
    doc["report"]["per_layer"].reverse()
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    assert read_scan(path).values["relative_error"] == REL


def test_scan_without_block_output_uses_primary(tmp_path):
    doc = srdd_doc()
    for layer in doc["layers"]:
        del layer["block_output"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    table = read_scan(path)
    assert table.site == "primary" and "no block_output" in table.notes[0]


def _delete(key):
    return lambda d: d.pop(key)


SRDD_CASES = [
    ("missing layer", lambda d: d["layers"].pop(5),
     "layers: expected layers 0..27 (model.num_layers = 28); missing layers [5]"),
    ("missing layer, no count", lambda d: (d["model"].pop("num_layers"), d["layers"].pop(5)),
     "layers: expected layers 0..26 (27 entries); missing layers [5]; unexpected layer ids [27]"),
    ("gap", lambda d: d["layers"][5].update(layer=40), "missing layers [5]; unexpected layer ids [40]"),
    ("duplicate", lambda d: d["layers"][3].update(layer=4),
     "layers[4].layer: duplicated layer id 4 (also at layers[3])"),
    ("num_layers", lambda d: d["model"].update(num_layers=30),
     "layers: expected layers 0..29 (model.num_layers = 30); missing layers [28, 29]"),
    ("num_layers type", lambda d: d["model"].update(num_layers="28"), "model.num_layers: expected a positive integer"),
    ("schema", lambda d: d.update(schema="srdd.scan/v2"), "schema: 'srdd.scan/v2' is not supported"),
    ("noise file", lambda d: d.update(schema="srdd.noise/v1"), "that is a multipliers file, not a scan"),
    ("no schema", _delete("schema"), "schema: missing"),
    ("no layers", _delete("layers"), "layers: missing or empty"),
    ("layers not list", lambda d: d.update(layers={}), "layers: missing or empty"),
    ("layer not object", lambda d: d["layers"].__setitem__(2, [1, 2]), "layers[2]: expected an object, got list"),
    ("id type", lambda d: d["layers"][2].update(layer="2"), "layers[2].layer: layer id must be an integer, got '2'"),
    ("id bool", lambda d: d["layers"][0].update(layer=False), "layers[0].layer: layer id must be an integer"),
    ("no block_output", lambda d: d["layers"][6].pop("block_output"), "layers[6].block_output: missing"),
    ("metric missing", lambda d: d["layers"][3]["block_output"].pop("relative_error"),
     "layers[3].block_output.relative_error: missing"),
    ("metric string", lambda d: d["layers"][3]["block_output"].update(sqnr_db="17.2"),
     "layers[3].block_output.sqnr_db: expected a number, got '17.2'"),
    ("metric null", lambda d: d["layers"][3]["block_output"].update(deadzone_ratio=None),
     "layers[3].block_output.deadzone_ratio: expected a number, got None"),
    ("metric bool", lambda d: d["layers"][3]["block_output"].update(relative_error=True),
     "layers[3].block_output.relative_error: expected a number"),
    ("percent", lambda d: d["layers"][3]["block_output"].update(deadzone_ratio=19.7),
     "layers[3].block_output.deadzone_ratio: 19.7 is above 1"),
    ("negative", lambda d: d["layers"][3]["block_output"].update(relative_error=-0.1),
     "layers[3].block_output.relative_error: -0.1 is negative"),
    ("model not object", lambda d: d.update(model="qwen"), "model: expected an object, got str"),
]


@pytest.mark.parametrize("mutate,message", [c[1:] for c in SRDD_CASES], ids=[c[0] for c in SRDD_CASES])
def test_malformed_srdd_scans_name_the_field(tmp_path, mutate, message):
    doc = srdd_doc()
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SrddError) as err:
        read_scan(path)
    assert message in str(err.value)


VERL_CASES = [
    ("no per_layer", lambda d: d["report"].pop("per_layer"), "report.per_layer: missing or empty"),
    ("no report", _delete("report"), "report: missing"),
    ("no config", _delete("config"), "config: missing"),
    ("missing layer", lambda d: d["report"]["per_layer"].pop(0),
     "report.per_layer: expected layers 0..27 (config.num_layers = 28); missing layers [0]"),
    ("duplicate", lambda d: d["report"]["per_layer"][9].update(layer_id=8),
     "report.per_layer[9].layer_id: duplicated layer id 8 (also at report.per_layer[8])"),
    ("num_layers", lambda d: d["config"].update(num_layers=24),
     "report.per_layer: expected layers 0..23 (config.num_layers = 24); unexpected layer ids [24, 25, 26, 27]"),
    ("metric missing", lambda d: d["report"]["per_layer"][7].pop("deadzone_ratio"),
     "report.per_layer[7].deadzone_ratio: missing"),
    ("metric string", lambda d: d["report"]["per_layer"][7].update(sqnr_db="n/a"),
     "report.per_layer[7].sqnr_db: expected a number, got 'n/a'"),
]


@pytest.mark.parametrize("mutate,message", [c[1:] for c in VERL_CASES], ids=[c[0] for c in VERL_CASES])
def test_malformed_verl_scans_name_the_field(tmp_path, mutate, message):
    doc = published_doc()
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SrddError) as err:
        read_scan(path)
    assert message in str(err.value)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("layout", ["srdd", "verl"])
def test_nan_and_infinity_tokens_are_named(tmp_path, token, layout):
    # Python's json.dump writes NaN/Infinity tokens; the field holding one is named.
    doc = srdd_doc() if layout == "srdd" else published_doc()
    entry = doc["layers"][12]["block_output"] if layout == "srdd" else doc["report"]["per_layer"][12]
    entry["sqnr_db"] = float(token.replace("Infinity", "inf"))
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(doc))
    assert token in path.read_text()
    field = "layers[12].block_output.sqnr_db" if layout == "srdd" else "report.per_layer[12].sqnr_db"
    with pytest.raises(SrddError) as err:
        read_scan(path)
    assert f"{field}: value is" in str(err.value)


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object at the top level, got list"),
    ('{"hello": 1}', "schema: missing"),
])
def test_not_a_scan(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(SrddError, match=message):
        read_scan(path)


def test_missing_file(tmp_path):
    with pytest.raises(SrddError, match="does not exist"):
        read_scan(tmp_path / "nope.json")
