"""Hub ids: models found in a Hugging Face cache laid out here exactly as the hub client lays it out.

CACHE/models--ORG--NAME/blobs/HASH holds the contents, snapshots/COMMIT/FILE are relative
symlinks into blobs/, refs/BRANCH holds a commit. Nothing here touches the network.
"""
import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import npw2v2
from npw2v2.io import hub

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden" / "data"
BUNDLED = ROOT / "npw2v2" / "bundled" / "digits.safetensors"
CLIP = ROOT / "npw2v2" / "bundled" / "examples" / "eight.flac"
BUNDLED_LM = ROOT / "npw2v2" / "bundled" / "digits.arpa"
COMMIT_1, COMMIT_2 = "1" * 40, "2" * 40


def cache_model(cache: Path, repo_id: str, files: dict, commit: str, refs=("main",)) -> Path:
    """Lay out ``files`` ({name: bytes}) as the hub client does: blobs, a snapshot of symlinks, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)  # names may hold a folder: language_model/...
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def folder_files(folder: Path, *skip: str) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in skip}


def digits_files() -> dict:
    """The bundled model as a Hugging Face folder: its file, and the settings its metadata holds."""
    from safetensors import safe_open

    with safe_open(str(BUNDLED), "np") as f:
        meta = f.metadata()
    return {"config.json": meta["config"].encode(), "model.safetensors": BUNDLED.read_bytes(),
            "vocab.json": meta["vocab"].encode(), "preprocessor_config.json": meta["preprocessor"].encode(),
            "tokenizer_config.json": meta["tokenizer"].encode()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty hub cache that the environment points to, and no huggingface_hub to download with."""
    folder = tmp_path / "hub-cache"
    folder.mkdir()
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    return folder


def test_a_cached_model_loads_by_its_id(cache):
    cache_model(cache, "org/tiny-ctc", folder_files(GOLDEN / "tiny_ctc", "activations.safetensors"), COMMIT_1)
    by_id, by_folder = npw2v2.load("org/tiny-ctc"), npw2v2.load(GOLDEN / "tiny_ctc")
    x = np.random.RandomState(0).standard_normal((1, 4000)).astype(np.float32)
    np.testing.assert_array_equal(by_id(x).logits, by_folder(x).logits)


def test_revisions_by_branch_and_by_commit(cache):
    cache_model(cache, "org/m", folder_files(GOLDEN / "tiny_ctc", "activations.safetensors"), COMMIT_1)
    cache_model(cache, "org/m", folder_files(GOLDEN / "tiny_stable", "activations.safetensors"), COMMIT_2,
                refs=("v2",))
    assert npw2v2.load("org/m").config.do_stable_layer_norm is False  # main
    assert npw2v2.load("org/m", revision="v2").config.do_stable_layer_norm is True
    assert npw2v2.load("org/m", revision=COMMIT_2).config.do_stable_layer_norm is True
    with pytest.raises(hub.NotCached, match="org/m at revision nope: no such file or folder, nor a model"):
        npw2v2.load("org/m", revision="nope")


def test_a_model_not_in_the_cache_says_how_to_fetch_it(cache):
    with pytest.raises(hub.NotCached) as error:
        npw2v2.load("facebook/wav2vec2-base-960h")
    message = str(error.value)
    assert str(cache) in message and "hf download facebook/wav2vec2-base-960h" in message


def test_a_missing_file_name_is_no_hub_id(cache):
    with pytest.raises(npw2v2.CheckpointError, match=r"^model.safetensors: no such file or folder$"):
        npw2v2.load("model.safetensors")


@pytest.mark.parametrize("variable, value, folder", [
    ("HF_HUB_CACHE", "{tmp}/direct", "{tmp}/direct"),
    ("HUGGINGFACE_HUB_CACHE", "{tmp}/legacy", "{tmp}/legacy"),
    ("HF_HOME", "{tmp}/home", "{tmp}/home/hub"),
    ("XDG_CACHE_HOME", "{tmp}/xdg", "{tmp}/xdg/huggingface/hub"),
    ("HOME", "{tmp}/user", "{tmp}/user/.cache/huggingface/hub"),
])
def test_the_cache_is_where_the_environment_says(tmp_path, monkeypatch, variable, value, folder):
    for v in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    assert hub.cache_folder() == Path(folder.format(tmp=tmp_path))


def test_the_first_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "b"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "c"))
    assert hub.cache_folder() == tmp_path / "a"


def test_mms_adapter_files_in_the_snapshot_are_found(cache):
    cache_model(cache, "org/mms", folder_files(GOLDEN / "tiny_mms", "activations.safetensors"), COMMIT_1)
    model = npw2v2.load("org/mms")
    assert {"fra", "deu"} <= set(model.languages)
    model.set_language("fra")
    assert model.language == "fra"


def test_a_path_and_a_cached_model_of_one_name_take_the_path_and_say_so(cache, tmp_path, monkeypatch):
    cache_model(cache, "tiny", folder_files(GOLDEN / "tiny_ctc", "activations.safetensors"), COMMIT_1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    for name, data in folder_files(GOLDEN / "tiny_stable", "activations.safetensors").items():
        (tmp_path / "tiny" / name).write_bytes(data)
    with pytest.warns(hub.ModelNameWarning, match="took the file or folder"):
        assert npw2v2.load("tiny").config.do_stable_layer_norm is True


def test_a_cached_model_named_like_a_built_in_architecture_is_taken_and_said(cache, capsys):
    from npw2v2.app.cli import main

    cache_model(cache, "base", folder_files(GOLDEN / "tiny_ctc", "activations.safetensors"), COMMIT_1)
    assert main(["explain", "-m", "base", "--samples", "800"]) == 0
    captured = capsys.readouterr()
    assert "base is a built-in architecture and a model in the Hugging Face cache: took the cached model" in captured.err
    assert "D=32" in captured.out  # tiny_ctc's width, not the base architecture's 768


def test_a_revision_for_a_path_is_refused(tmp_path):
    with pytest.raises(npw2v2.CheckpointError, match="--revision is for hub ids"):
        npw2v2.load(GOLDEN / "tiny_ctc", revision="main")


# ---------------------------------------------------------------------------
# The commands, in a fresh process with the cache in the environment


def run(*args, cache: Path, module="npw2v2"):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), PYTHONPATH=str(ROOT))
    env.pop("HF_HOME", None)
    code = f"import sys; from {'npw2v2.app.cli' if module == 'npw2v2' else 'convert.cli'} import main; " \
           "sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_transcribe_by_hub_id_and_revision(cache):
    cache_model(cache, "org/digits", digits_files(), COMMIT_1, refs=("main", "v1"))
    for extra in ([], ["--revision", "v1"], ["--revision", COMMIT_1]):
        done = run("transcribe", CLIP, "-m", "org/digits", *extra, cache=cache)
        assert done.returncode == 0 and done.stdout == "EIGHT\n", done.stderr


def test_transcribe_by_an_id_not_in_the_cache_is_one_line(cache):
    done = run("transcribe", CLIP, "-m", "org/nothere", cache=cache)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("npw2v2: error: org/nothere: no such file or folder, nor a model in the Hugging "
                                  "Face cache") and len(done.stderr.splitlines()) == 1


def test_convert_by_hub_id(cache, tmp_path):
    cache_model(cache, "org/bin", folder_files(GOLDEN / "checkpoints" / "hf_bin"), COMMIT_1)
    out = tmp_path / "out.safetensors"
    done = run("org/bin", out, module="convert", cache=cache)
    assert done.returncode == 0, done.stderr
    converted, source = npw2v2.load(out), npw2v2.load(GOLDEN / "tiny_ctc")
    x = np.random.RandomState(1).standard_normal((1, 4000)).astype(np.float32)
    np.testing.assert_allclose(converted(x).logits, source(x).logits, atol=1e-5)
    assert run("org/nothere", out, module="convert", cache=cache).returncode == 1


# ---------------------------------------------------------------------------
# Downloading, with huggingface_hub installed (a stand-in here: no network)


def fake_hub(calls: list, cache: Path):
    """A stand-in for huggingface_hub whose snapshot_download lays the tiny model out in the cache."""
    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None):
        calls.append({"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir, "patterns": allow_patterns})
        return str(cache_model(Path(cache_dir), repo_id, folder_files(GOLDEN / "tiny_ctc", "activations.safetensors"),
                               COMMIT_1))

    return types.SimpleNamespace(snapshot_download=snapshot_download)


def test_a_model_not_in_the_cache_is_downloaded_with_huggingface_hub(cache, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(calls, cache))
    model = npw2v2.load("org/fetched")
    assert model.config.hidden_size == 32
    assert calls == [{"repo_id": "org/fetched", "revision": None, "cache_dir": str(cache),
                      "patterns": hub.DOWNLOAD_PATTERNS}]
    npw2v2.load("org/fetched")  # now from the cache
    assert len(calls) == 1


def test_offline_means_no_download(cache, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(calls, cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.NotCached, match="HF_HUB_OFFLINE is set"):
        npw2v2.load("org/fetched")
    assert calls == []


def test_a_failed_download_is_one_line(cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=refuse))
    with pytest.raises(hub.NotCached, match=r"downloading it failed: ConnectionError: no route to host$"):
        npw2v2.load("org/fetched")


def test_download_patterns_cover_what_the_loader_and_converter_read():
    import fnmatch

    needed = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
              "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin", "vocab.json",
              "preprocessor_config.json", "tokenizer_config.json"]
    for name in needed:
        assert any(fnmatch.fnmatch(name, p) for p in hub.DOWNLOAD_PATTERNS), name
    assert not any(fnmatch.fnmatch("adapter.fra.safetensors", p) for p in hub.DOWNLOAD_PATTERNS)
    assert json.dumps(hub.DOWNLOAD_PATTERNS)  # plain strings, as huggingface_hub takes them


def test_an_lm_by_hub_id_is_the_language_model_folder_of_its_snapshot(cache, capsys):
    """transcribe --lm ORG/NAME: a Wav2Vec2ProcessorWithLM repository in the cache, read as it is."""
    from npw2v2.app.cli import main

    lm = BUNDLED_LM
    cache_model(cache, "someone/digits-with-lm", {**digits_files(), "language_model/digits.arpa": lm.read_bytes(),
                                                   "language_model/attrs.json": b'{"alpha": 0.5, "beta": 1.5}',
                                                   "language_model/unigrams.txt": b"EIGHT\nNINE\n"}, COMMIT_1)
    assert main(["transcribe", str(CLIP), "-m", "someone/digits-with-lm", "--lm", "someone/digits-with-lm"]) == 0
    assert capsys.readouterr().out == "EIGHT\n"
    cache_model(cache, "someone/no-lm", digits_files(), COMMIT_2)
    for name in ("someone/no-lm", "someone/not-cached"):
        assert main(["transcribe", str(CLIP), "--lm", name]) == 2
        err = capsys.readouterr().err
        assert f"{name}: no such file or folder, nor a repository with a language_model/ folder" in err
        assert "hf download" in err and len(err.strip().splitlines()) == 1
