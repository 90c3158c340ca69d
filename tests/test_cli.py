"""The npw2v2 command: errors and help, run in-process."""
import subprocess
import sys
from pathlib import Path

import pytest

from npw2v2.app.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_CTC = str(ROOT / "golden" / "data" / "tiny_ctc")


def test_explain_shows_each_input_matches_its_lone_run(capsys):
    assert main(["explain", "--model", TINY_CTC, "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "item 0: 49 frames" in out and "item 1: 24 frames + 25 padding frames" in out
    assert "logits                [2, 49, 32]" in out
    difference = float(out.rsplit("largest difference ", 1)[1].split()[0])
    assert difference < 1e-5


def test_missing_model_is_one_line_without_traceback(capsys):
    assert main(["explain", "--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npw2v2: error: /no/such/model: no such file or folder")
    assert "Traceback" not in err


def test_too_short_audio_is_refused(capsys):
    assert main(["explain", "--model", TINY_CTC, "--seconds", "0.02"]) == 2
    assert "at least 400 samples" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-command"])
    assert exit_.value.code == 2


def test_cuda_without_cupy_is_a_clear_error(capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    assert main(["explain", "--model", TINY_CTC, "--device", "cuda"]) == 2
    assert 'device "cuda" needs CuPy: pip install "npw2v2[cupy]"' in capsys.readouterr().err


def test_ray_engine_without_ray_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives: ImportError
    assert main(["transcribe", "--examples", "--engine", "ray", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == 'npw2v2: error: the ray engine needs Ray: pip install "npw2v2[ray]"\n'
    assert not (tmp_path / "out").exists()


def test_ray_options_need_the_ray_engine(capsys):
    assert main(["transcribe", "--examples", "--workers", "2"]) == 2
    assert capsys.readouterr().err == "npw2v2: error: --address and --workers go with --engine ray\n"


def test_the_local_engine_never_imports_ray():
    code = ("import sys; from npw2v2.app.cli import main; main(['transcribe', '--examples']); "
            "sys.exit('ray' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "EIGHT" in run.stdout


def test_ray_client_address_is_refused_with_the_reason(capsys, tmp_path):
    status = main(["transcribe", "--examples", "--engine", "ray", "--address", "ray://head:10001",
                   "-o", str(tmp_path / "out")])
    assert status == 2
    assert "Ray Data does not run through Ray Client (ray://head:10001)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
