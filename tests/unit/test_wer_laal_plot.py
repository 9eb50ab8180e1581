"""tools/report/wer_laal_plot.py: the table and figure come from the eval folders' summaries, bad input is refused."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool():
    spec = importlib.util.spec_from_file_location("wer_laal_plot", ROOT / "tools" / "report" / "wer_laal_plot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def summary(folder: Path, wer: float, laal: float | None = None) -> str:
    folder.mkdir(parents=True)
    s = {"wer": wer, "utterances": 7, "wer_ci": [wer - 0.01, wer + 0.02]}
    if laal is not None:
        s["LAAL"] = laal
    (folder / "summary.json").write_text(json.dumps(s))
    return str(folder)


def test_rows_and_figure_from_the_summaries(tmp_path, capsys):
    k1, k3 = summary(tmp_path / "k1", 0.5, 400.0), summary(tmp_path / "k3", 0.25, 900.0)
    off = summary(tmp_path / "off", 0.125)
    out = tmp_path / "fig.png"
    assert tool().main(["--output", str(out), "--set", "kal", f"k=1={k1}", f"k=3={k3}",
                        "--offline", "kal", f"Whisper={off}"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| kal")]
    assert rows == ["| kal | ours, k=1 | 50.0 | [49.0, 52.0] | 400 | 7 |",
                    "| kal | ours, k=3 | 25.0 | [24.0, 27.0] | 900 | 7 |",
                    "| kal | Whisper, offline | 12.5 | [11.5, 14.5] | – | 7 |"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_refused_in_one_line(tmp_path):
    k1 = summary(tmp_path / "k1", 0.5, 400.0)
    with pytest.raises(SystemExit, match="summary.json not found"):
        tool().main(["--output", str(tmp_path / "f.png"), "--set", "kal", f"k=1={tmp_path / 'missing'}"])
    with pytest.raises(SystemExit, match="LABEL=FOLDER"):
        tool().main(["--output", str(tmp_path / "f.png"), "--set", "kal", k1])
    with pytest.raises(SystemExit):  # argparse: the figure must be a .png (never an eval folder given as input)
        tool().main(["--output", k1, "--set", "kal", f"k=1={k1}"])
    assert not (tmp_path / "f.png").exists()
