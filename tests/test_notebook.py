"""The walkthrough notebook (examples/flights/walkthrough.ipynb): committed without outputs,
and run from top to bottom by a real kernel of this environment, as a user would.

The run uses a copy of the example project on January to April only, with a smaller search
(the committed notebook trains on the whole year): the test is about the notebook and the
API it shows, not about the model, and takes about a minute of CPU.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from conftest import FLIGHTS_EXAMPLE, copy_example, copy_flights
from nbclient import NotebookClient

NOTEBOOK = FLIGHTS_EXAMPLE / "walkthrough.ipynb"
KERNEL = "mlprod-test"
SCORE_DAY = "2013-04-25"  # in the smaller project's test window
TQDM_NOTICE = re.compile(r"TqdmWarning: IProgress not found|from \.autonotebook import tqdm")
# What the notebook's last step scored, read from the kernel by a cell the test adds.
PROBE = """import json
model = f"{summary.model_name}/{summary.model_version}"
from_frame = project.predict(flights.to_pandas(), model=model)
try:
    project.predict(flights.drop_columns(["carrier"]), model=model)
except mlprod.MlprodError as error:
    missing = str(error)
print(json.dumps({
    "version": summary.model_version,
    "auc": summary.test_auc,
    "charts": list(project.evaluation_charts(summary.model_version)),
    "flights": flights.column("flight_id").to_pylist(),
    "scored": scores.column("flight_id").to_pylist(),
    "scores": scores.column("score").to_pylist(),
    "versions": scores.column("model_version").to_pylist(),
    "from_frame": from_frame.column("score").to_pylist(),
    "missing": missing,
}))"""


def read_notebook() -> Any:
    return nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]


def code_cells(notebook: Any) -> dict[str, Any]:
    return {cell.id: cell for cell in notebook.cells if cell.cell_type == "code"}


def test_notebook_is_committed_without_outputs() -> None:
    notebook = read_notebook()
    nbformat.validate(notebook)
    run = [
        cell.id
        for cell in code_cells(notebook).values()
        if cell.outputs or cell.execution_count is not None
    ]
    assert run == [], f"clear the outputs of cells {run} before committing {NOTEBOOK.name}"
    parameters = [c.id for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert parameters == ["parameters"]


@pytest.fixture(scope="module")
def spring_db(flights_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """January to April of the flights, with the other tables whole."""
    path = tmp_path_factory.mktemp("spring") / "nycflights13.duckdb"
    return copy_flights(flights_db, path, "month <= 4")


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that starts this interpreter (the project's .venv under `make test`),
    found first on the Jupyter path, with IPython's and Jupyter's files kept in tmp_path."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel_json = {"argv": argv, "display_name": "mlprod (test)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel_json))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return KERNEL


@pytest.fixture
def spring_project(tmp_path: Path, spring_db: Path) -> Path:
    """The example project on January to April: validated on March, tested on April."""
    folder = copy_example(tmp_path)
    (folder / "data").mkdir()
    (folder / "data" / "nycflights13.duckdb").symlink_to(spring_db)
    config = yaml.safe_load((folder / "mlprod.yaml").read_text())
    train = config["train"]
    train["split"].update(train_end="2013-03-01", valid_end="2013-04-01")
    train["tuning"]["trials"] = 2
    # One thread: on a busy machine LightGBM's two spinning threads take several times as long.
    train["models"][0]["params"].update(n_estimators=100, num_threads=1)
    (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def outputs(cell: Any, kind: str) -> list[Any]:
    return [
        o
        for o in cell.outputs
        if o.output_type in ("display_data", "execute_result") and kind in o.data
    ]


def stdout(cell: Any) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_notebook_runs_on_a_copy_of_the_example(kernel: str, spring_project: Path) -> None:
    notebook = read_notebook()
    cells = code_cells(notebook)
    cells["parameters"].source = f"PROJECT = {str(spring_project)!r}\nSCORE_DAY = {SCORE_DAY!r}"
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE, id="probe"))  # type: ignore[no-untyped-call]
    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=300,
        resources={"metadata": {"path": str(spring_project)}},
    )
    example_files = sorted(FLIGHTS_EXAMPLE.rglob("*"))
    client.execute()

    features = cells["features"]
    assert re.match(r"[\d,]+ rows, 39 columns$", stdout(features).strip())
    (table,) = outputs(features, "text/html")
    for column in ("flight_id", "prediction_time", "label", "carrier_origin_mean_delay_7d"):
        assert f"<th>{column}</th>" in table.data["text/html"]
    assert table.data["text/html"].split("<tbody>")[1].count("<tr>") == 5

    printed = stdout(cells["train"])
    assert "registered flights version 1\n" in printed
    found = re.search(r"test AUC (0\.\d+) \(95% interval", printed)
    assert found is not None, printed
    auc = float(found[1])
    assert 0.65 < auc < 0.95
    assert "<th>name</th>" in outputs(cells["train"], "text/html")[0].data["text/html"]

    assert "report.html" in stdout(cells["evaluation"])
    assert "<th>test</th>" in outputs(cells["evaluation"], "text/html")[0].data["text/html"]

    images = outputs(cells["charts"], "image/png")
    assert len(images) >= 6
    for image in images:
        assert base64.b64decode(image.data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    titles = [o.data["text/markdown"] for o in outputs(cells["charts"], "text/markdown")]
    assert titles[:2] == ["**ROC curves**", "**Precision-recall curves**"]

    (scored_table,) = outputs(cells["score"], "text/html")
    assert "<th>score</th>" in scored_table.data["text/html"]

    probe = json.loads(stdout(notebook.cells[-1]))
    assert probe["version"] == 1 and probe["auc"] == pytest.approx(auc, abs=5e-4)
    assert len(probe["charts"]) == len(images)
    assert len(probe["flights"]) == 8 and probe["scored"] == probe["flights"]
    assert all(0.0 <= score <= 1.0 for score in probe["scores"])
    assert len(set(probe["scores"])) > 1
    assert probe["versions"] == ["1"] * 8
    assert probe["from_frame"] == probe["scores"]  # a DataFrame is scored as its Arrow table
    assert probe["missing"] == (
        "input rows has no column 'carrier' (did you mean 'arr_time'?); the model needs the "
        "request fields flight_id, hour, minute, year, month, day, distance, carrier, origin, "
        "dest, tailnum, flight"
    )

    # Everything the run wrote is in the copy; the example folder is left alone.
    assert (spring_project / ".mlprod" / "models" / "flights").is_dir()
    assert sorted(FLIGHTS_EXAMPLE.rglob("*")) == example_files
    # Nothing on stderr but Optuna's import of tqdm.auto, which warns in a kernel without
    # ipywidgets (a third party's notice; the notebook's introduction mentions it).
    stderr = [
        line
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "stream" and o.name == "stderr"
        for line in o.text.splitlines()
    ]
    assert [line for line in stderr if not TQDM_NOTICE.search(line)] == []
