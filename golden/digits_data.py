"""The bundled model's data: digit strings spoken by Debian's espeak-ng, short clips and long recordings.

No torch here: golden/train_tiny.py trains on these, golden/long_digits.py writes the held-out long
recordings with them. Every random choice comes from a seeded generator, so a seed names a data set.
"""
from __future__ import annotations

import math
import random
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

DIGITS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
TRAIN_VARIANTS = [f"m{i}" for i in (1, 2, 3, 4, 5, 6, 8)] + [f"f{i}" for i in (1, 2, 3, 4)] + [
    "Alex", "Alicia", "Andrea", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david",
    "ed", "edward", "Gene", "Henrique", "Hugo", "iven", "Jacky", "john", "Lee", "linda", "Marco", "Mario", "max",
    "Michael", "Mike", "norbert", "paul", "pedro", "quincy", "rob", "sandro", "shelby", "travis", "victor",
    "zac", "klatt", "klatt2", "klatt3"]
TEST_VARIANTS = ["m7", "f5", "Andy", "Denis", "robert", "steph", "edward2", "gustave", "michel", "adam", "anika"]
RATE = 16000


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of the text at 16 kHz, float32 in [-1, 1]."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", f.name, text],
                       check=True, capture_output=True)
        x, rate = sf.read(f.name, dtype="float32")
    g = math.gcd(rate, RATE)
    return resample_poly(x, RATE // g, rate // g).astype(np.float32)


def digit_string(rng: random.Random) -> str:
    """1 to 7 random digits, as words."""
    return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 7)))


def utterances(count: int, variants: list[str], seed: int) -> list[dict]:
    """Random digit strings with random voices, speeds and pitches, as synthesis jobs."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        text = digit_string(rng)
        voice = f"{rng.choice(ACCENTS)}+{rng.choice(variants)}"
        jobs.append({"text": text, "voice": voice, "speed": rng.randint(120, 220), "pitch": rng.randint(20, 80)})
    return jobs


def synthesize(jobs: list[dict]) -> list[np.ndarray]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda j: speak(j["text"].lower(), j["voice"], j["speed"], j["pitch"]), jobs))


def degrade(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Random gain (peak 0.2-0.95) and light white noise (25-45 dB below the speech)."""
    x = x / max(1e-6, np.abs(x).max()) * rng.uniform(0.2, 0.95)
    noise = rng.standard_normal(x.size) * np.sqrt(np.mean(x**2)) * 10 ** (-rng.uniform(25, 45) / 20)
    return (x + noise).astype(np.float32)


def perturb_speed(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Play the clip between 10% slower and 10% faster (which shifts its pitch too)."""
    return resample_poly(x, 100, rng.randint(90, 111)).astype(np.float32)


# ---------------------------------------------------------------------------
# Digit strings with pauses: the long recordings


def paused_jobs(count: int, variants: list[str], seed: int, seconds: tuple[float, float]) -> list[dict]:
    """Recordings of several digit strings by one voice, with pauses between them.

    Each job lists its strings (synthesised one by one, as a speaker reading a list pauses
    between items) and the pause before each, 0.3 to 2 s; strings are added until the
    estimated length (about 0.45 s a word at speed 170) reaches a length drawn from ``seconds``.
    """
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        speed = rng.randint(130, 210)
        target, estimate, strings, pauses = rng.uniform(*seconds), 0.0, [], []
        while estimate < target:
            strings.append(digit_string(rng))
            pauses.append(round(rng.uniform(0.3, 2.0), 3))
            estimate += pauses[-1] + 0.45 * 170 / speed * len(strings[-1].split())
        jobs.append({"strings": strings, "pauses": pauses, "text": " ".join(strings),
                     "voice": f"{rng.choice(ACCENTS)}+{rng.choice(variants)}", "speed": speed,
                     "pitch": rng.randint(20, 80)})
    return jobs


def assemble(job: dict, clips: list[np.ndarray], tail: float = 0.5) -> np.ndarray:
    """The strings' clips joined by their pauses (silence), with ``tail`` seconds of silence at the end."""
    parts = []
    for clip, pause in zip(clips, job["pauses"]):
        parts += [np.zeros(int(pause * RATE), np.float32), clip]
    parts.append(np.zeros(int(tail * RATE), np.float32))
    return np.concatenate(parts)


def synthesize_paused(jobs: list[dict]) -> list[np.ndarray]:
    """Each paused job as one clean recording (degrade it afterwards: the noise runs through the pauses)."""
    flat = [{"text": s, "voice": j["voice"], "speed": j["speed"], "pitch": j["pitch"]}
            for j in jobs for s in j["strings"]]
    clips, out = synthesize(flat), []
    for job in jobs:
        out.append(assemble(job, clips[:len(job["strings"])]))
        clips = clips[len(job["strings"]):]
    return out
