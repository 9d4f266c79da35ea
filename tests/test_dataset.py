"""Hospital dataset loading, schema hashing, splits, standardization, demo data."""

from __future__ import annotations

import json
import re

import pytest
import torch

from fedchain.plan import standardization_from_moments
from fedchain.sample_data import make_demo_data
from fedchain.node.dataset import feature_moments, load_dataset, split_dataset, standardize
from fedchain.schema import DatasetError, load_schema, metadata_document, parse_schema, schema_hash

SCHEMA = {
    "features": [
        {"name": "age", "type": "int"},
        {"name": "bmi", "type": "float"},
        {"name": "smoker", "type": "bool"},
    ],
    "label": {"name": "outcome", "values": ["healthy", "sick"]},
    "id_columns": ["patient_id"],
}

GOOD_CSV = """patient_id,age,bmi,smoker,outcome
p1,40,22.5,true,healthy
p2,61,31.0,False,sick
p3,55,27.25,1,sick
"""


@pytest.fixture
def schema_path(tmp_path):
    p = tmp_path / "schema.json"
    p.write_text(json.dumps(SCHEMA))
    return p


def write(tmp_path, text, name="data.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_good_csv(tmp_path, schema_path):
    data = load_dataset(write(tmp_path, GOOD_CSV), schema_path)
    assert data.features.dtype == torch.float32 and data.features.shape == (3, 3)
    assert data.labels.tolist() == [0, 1, 1]
    assert data.features.tolist() == [[40.0, 22.5, 1.0], [61.0, 31.0, 0.0], [55.0, 27.25, 1.0]]
    assert data.n_rows == 3
    assert data.class_counts == {"healthy": 1, "sick": 2}
    assert data.feature_names == ("age", "bmi", "smoker")


def test_column_order_in_csv_does_not_matter(tmp_path, schema_path):
    text = "outcome,bmi,patient_id,smoker,age\nsick,30.5,p9,0,70\n"
    data = load_dataset(write(tmp_path, text), schema_path)
    assert data.features.tolist() == [[70.0, 30.5, 0.0]]


# Row numbers: header = row 1, first data row = row 2 (spreadsheet convention).
BAD_CSVS = [
    ("missing column", "patient_id,age,smoker,outcome\np1,40,true,healthy\n", 1, "bmi", "missing from the header"),
    ("bad float", GOOD_CSV.replace("31.0", "thirty"), 3, "bmi", "'thirty' is not a number"),
    ("unknown label", GOOD_CSV.replace("55,27.25,1,sick", "55,27.25,1,dead"), 4, "outcome", "unknown label 'dead'"),
    ("NaN", GOOD_CSV.replace("22.5", "NaN"), 2, "bmi", "NaN is not allowed"),
    ("nan lowercase", GOOD_CSV.replace("27.25", "nan"), 4, "bmi", "NaN is not allowed"),
    ("empty cell", GOOD_CSV.replace("22.5", ""), 2, "bmi", "missing value"),
    ("inf", GOOD_CSV.replace("22.5", "inf"), 2, "bmi", "infinite"),
    ("int not int", GOOD_CSV.replace("61", "61.5"), 3, "age", "not an integer"),
    ("bad bool", GOOD_CSV.replace("False", "maybe"), 3, "smoker", "not a boolean"),
    ("missing label", GOOD_CSV.replace("true,healthy", "true,"), 2, "outcome", "missing label"),
    ("extra column", GOOD_CSV.replace("outcome\n", "outcome,ssn\n", 1), 1, "ssn", "not in the schema"),
    ("duplicate header", "patient_id,age,age,bmi,smoker,outcome\n", 1, "age", "appears twice"),
]


@pytest.mark.parametrize("label,text,row,column,fragment", BAD_CSVS, ids=[b[0] for b in BAD_CSVS])
def test_errors_name_file_row_and_column(tmp_path, schema_path, label, text, row, column, fragment):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError) as exc:
        load_dataset(path, schema_path)
    err = exc.value
    assert err.file == str(path) and err.row == row and err.column == column
    msg = str(err)
    assert str(path) in msg and f"row {row}" in msg and f"column '{column}'" in msg
    assert fragment in msg


def test_short_row_and_blank_lines(tmp_path, schema_path):
    # the blank line is row 3 (counted, skipped); the short row is row 5
    text = GOOD_CSV.replace("p2,", "\np2,") + "p4,1,2\n"
    with pytest.raises(DatasetError) as exc:
        load_dataset(write(tmp_path, text), schema_path)
    assert exc.value.row == 6 and "3 cells" in str(exc.value)
    ok = load_dataset(write(tmp_path, GOOD_CSV.replace("p2,", "\np2,"), "ok.csv"), schema_path)
    assert ok.n_rows == 3


def test_quoted_multiline_cell_is_one_row(tmp_path, schema_path):
    text = 'patient_id,age,bmi,smoker,outcome\n"p1\nsecond line",40,22.5,true,healthy\np2,41,x,true,sick\n'
    with pytest.raises(DatasetError) as exc:
        load_dataset(write(tmp_path, text), schema_path)
    assert exc.value.row == 3 and exc.value.column == "bmi"


def test_empty_and_header_only(tmp_path, schema_path):
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(write(tmp_path, ""), schema_path)
    with pytest.raises(DatasetError, match="no data rows"):
        load_dataset(write(tmp_path, GOOD_CSV.splitlines()[0] + "\n"), schema_path)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "nope.csv", schema_path)


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (lambda s: s["features"][1].update(type="decimal"), "features[1].type"),
        (lambda s: s.update(extra=1), "schema field 'extra': unknown key"),
        (lambda s: s["label"].update(values=["x"]), "label.values"),
        (lambda s: s["id_columns"].append("age"), "declared more than once"),
        (lambda s: s.pop("label"), "schema field 'label': is required"),
    ],
)
def test_schema_errors(tmp_path, mutate, fragment):
    s = json.loads(json.dumps(SCHEMA))
    mutate(s)
    p = tmp_path / "bad.schema.json"
    p.write_text(json.dumps(s))
    with pytest.raises(DatasetError) as exc:
        load_schema(p)
    assert fragment in str(exc.value) and str(p) in str(exc.value)


def test_schema_hash_is_canonical(schema_path):
    h = schema_hash(SCHEMA)
    assert re.fullmatch(r"0x[0-9a-f]{64}", h)
    reordered = {"id_columns": ["patient_id"], "label": {"values": ["healthy", "sick"], "name": "outcome"},
                 "features": SCHEMA["features"], "version": 1}
    assert schema_hash(reordered) == h == schema_hash(schema_path) == schema_hash(parse_schema(SCHEMA))
    changed = json.loads(json.dumps(SCHEMA))
    changed["features"][0]["type"] = "float"
    assert schema_hash(changed) != h


def test_metadata_document(tmp_path):
    doc = metadata_document(SCHEMA, 3, "cardiology ward 2023")
    assert doc == metadata_document(parse_schema(SCHEMA), 3, "cardiology ward 2023")
    parsed = json.loads(doc)
    assert parsed["n_rows"] == 3 and parsed["schema_hash"] == schema_hash(SCHEMA)
    assert parsed["description"] == "cardiology ward 2023"
    assert set(parsed) == {"format", "schema", "schema_hash", "n_rows", "description"}
    assert doc == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()


def test_split_is_deterministic_and_partitions(tmp_path, schema_path):
    rows = "\n".join(f"p{i},{20 + i},{20.0 + i / 10},0,{'sick' if i % 3 else 'healthy'}" for i in range(50))
    data = load_dataset(write(tmp_path, "patient_id,age,bmi,smoker,outcome\n" + rows + "\n"), schema_path)
    tr1, va1 = split_dataset(data, 0.2, seed=5)
    tr2, va2 = split_dataset(data, 0.2, seed=5)
    assert torch.equal(tr1.features, tr2.features) and torch.equal(va1.labels, va2.labels)
    assert tr1.n_rows == 40 and va1.n_rows == 10
    ages = sorted(tr1.features[:, 0].tolist() + va1.features[:, 0].tolist())
    assert ages == sorted(data.features[:, 0].tolist())
    _, va3 = split_dataset(data, 0.2, seed=6)
    assert not torch.equal(va1.features, va3.features)
    tr0, va0 = split_dataset(data, 0.0, seed=5)
    assert tr0.n_rows == 50 and va0.n_rows == 0


def test_moments_give_pooled_standardization(tmp_path, schema_path):
    a = load_dataset(write(tmp_path, GOOD_CSV, "a.csv"), schema_path)
    b = load_dataset(write(tmp_path, GOOD_CSV.replace("40,", "80,"), "b.csv"), schema_path)
    mean, std = standardization_from_moments([feature_moments(a).as_tuple(), feature_moments(b).as_tuple()])
    pooled = torch.cat([a.features, b.features]).double()
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), pooled.mean(0))
    z = standardize(torch.cat([a.features, b.features]), mean, std).double()
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_demo_data_is_non_iid_and_loadable(tmp_path):
    demo = make_demo_data(tmp_path, n_hospitals=4, seed=3)
    assert len(demo.hospitals) == 4
    sizes = [h.n_rows for h in demo.hospitals]
    malignant = [h.class_balance["malignant"] for h in demo.hospitals]
    assert len(set(sizes)) == 4 and malignant == sorted(malignant) and malignant[-1] - malignant[0] > 0.5
    assert sum(sizes) + demo.test.n_rows == 569
    hashes = {schema_hash(h.schema_path) for h in demo.hospitals + [demo.test]}
    assert len(hashes) == 1
    ids = []
    for h in demo.hospitals + [demo.test]:
        data = load_dataset(h.csv_path, h.schema_path)
        assert data.n_rows == h.n_rows and data.features.shape[1] == 30
        m = feature_moments(data)
        assert m.n == h.moments[0]
        assert torch.allclose(torch.tensor(m.sums), torch.tensor(h.moments[1]), rtol=1e-9)
        with open(h.csv_path) as fh:
            ids += [line.split(",", 1)[0] for line in fh.readlines()[1:]]
    assert len(ids) == len(set(ids)) == 569  # hospitals and test split are disjoint
    # same seed, same files
    again = make_demo_data(tmp_path / "again", n_hospitals=4, seed=3)
    assert again.hospitals[2].csv_path.read_bytes() == demo.hospitals[2].csv_path.read_bytes()
