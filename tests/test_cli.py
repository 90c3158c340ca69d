"""The npw2v2 command: output and errors, run in-process."""
from pathlib import Path

import pytest

from npw2v2.cli import main

TINY_CTC = str(Path(__file__).resolve().parents[1] / "golden" / "data" / "tiny_ctc")


def test_demo_shows_frames_and_shapes(capsys):
    assert main(["demo", "--model", TINY_CTC, "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "0     1.00    16000      49               0" in out
    assert "1     0.50     8000      24              25" in out
    assert "last_hidden_state  [2, 49, 32]" in out
    assert "logits             [2, 49, 32]" in out
    difference = float(out.rsplit("item alone: ", 1)[1])
    assert difference < 1e-5


def test_demo_refuses_a_missing_model_without_traceback(capsys):
    assert main(["demo", "--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npw2v2: error: /no/such/model: no such file or folder")
    assert "Traceback" not in err


def test_demo_refuses_too_short_audio(capsys):
    assert main(["demo", "--model", TINY_CTC, "--seconds", "0.02"]) == 2
    assert "at least 400 samples" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-command"])
    assert exit_.value.code == 2
