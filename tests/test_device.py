"""The device path: the golden suite through a strict stand-in for CuPy, and CuPy itself where present.

tests/stand_in_device.py refuses every NumPy (host) function handed a device array, as
CuPy does when NumPy and CuPy arrays are mixed; passing here means no NumPy-only call sits
on the path from the parameters to the outputs.
"""
import numpy as np
import pytest

import npw2v2
import stand_in_device
from golden import (DATA2VEC_AUDIO, HEADS, HUBERT, TINY, UNISPEECH, XVECTOR, batch_vs_alone_errors, case_errors,
                    cases, languages, tolerance)
from npw2v2.core.backend import get_xp
from stand_in_device import DeviceArray, HostCallError

ALL = TINY + ["base"] + HEADS + HUBERT + DATA2VEC_AUDIO + UNISPEECH + XVECTOR  # every family and head, tiny
GOLDEN_CASES = [(name, case) for name in ALL for case in cases(name)]
PADDED = [(name, language) for name in ALL for language in languages(name)]


PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])


@PATHS
@pytest.mark.parametrize("name,case", GOLDEN_CASES, ids=[f"{n}-{c}" for n, c in GOLDEN_CASES])
def test_golden_stages_on_the_stand_in_device(name, case, reference):
    errors = case_errors(name, case, device=stand_in_device, reference=reference)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"{worst}: error {errors[worst]:.2e}"


@PATHS
@pytest.mark.parametrize("name,language", PADDED)
def test_padded_batch_equals_alone_on_the_stand_in_device(name, language, reference):
    errors = batch_vs_alone_errors(name, device=stand_in_device, language=language, reference=reference)
    assert max(errors.values()) <= tolerance(name)


def test_the_stand_in_refuses_host_calls():
    x = DeviceArray(np.ones(3, np.float32))
    assert get_xp(x) is stand_in_device.device
    for host_call in (lambda: np.sqrt(x), lambda: np.asarray(x), lambda: x + np.ones(3), lambda: np.sum(x)):
        with pytest.raises(HostCallError):
            host_call()
    np.testing.assert_array_equal((stand_in_device.device.sqrt(x * 4)).get(), np.full(3, 2.0))


def test_transcribe_on_the_stand_in_device_gives_host_results():
    from golden import GOLDEN

    cpu = npw2v2.load(GOLDEN / "checkpoints" / "hf_safetensors_sharded")
    on_device = npw2v2.load(GOLDEN / "checkpoints" / "hf_safetensors_sharded")
    on_device.params = stand_in_device.to_device(on_device.params)
    x = (0.5 * np.sin(np.arange(24000) / 7.0)).astype(np.float32)
    (a,), (b,) = cpu.transcribe([x]), on_device.transcribe([x])
    assert a.text == b.text and isinstance(b.frame_tokens, np.ndarray)
    (fa,), (fb,) = cpu.embed([x]), on_device.embed([x])
    assert isinstance(fb, np.ndarray)
    np.testing.assert_allclose(fa, fb, atol=1e-6)


def _cupy_device():
    """The same interface as stand_in_device, for real CuPy on a real GPU."""
    import types

    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'npw2v2[cupy]' on a GPU machine)")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - any CUDA failure means no usable GPU
        pytest.skip(f"CuPy is installed but no GPU is usable: {e}")

    def to_device(tree):
        if isinstance(tree, dict):
            return {k: to_device(v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [to_device(v) for v in tree]
        return cupy.asarray(tree)

    return types.SimpleNamespace(to_device=to_device, device=cupy)


@PATHS
@pytest.mark.parametrize("name,case", GOLDEN_CASES, ids=[f"{n}-{c}" for n, c in GOLDEN_CASES])
def test_golden_stages_on_a_real_gpu(name, case, reference):
    errors = case_errors(name, case, device=_cupy_device(), reference=reference)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"{worst}: error {errors[worst]:.2e}"
