"""The recorded inputs: numpy only, shared by record.py and fairseq_fixtures.py."""
import numpy as np


def speech_like_batch(lengths: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A right-padded batch of speech-like signals (a few tones plus noise, zero mean, unit
    variance), and its mask, True = real samples."""
    rng = np.random.RandomState(seed)
    batch = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / 16000.0
        tones = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(4))
        signal = tones + 0.3 * rng.standard_normal(n)
        batch[i, :n] = (signal - signal.mean()) / signal.std()
    mask = np.arange(batch.shape[1])[None, :] < np.array(lengths)[:, None]
    return batch, mask
