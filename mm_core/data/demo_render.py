"""Render one synthetic sample's modalities from its latent factors (shape, colour, size, motion).

Every modality encodes the same factors in a way a test can check, so the
demo gives the fusion model a real cross-modal signal:
- image: the shape in its colour and size; a faded trail behind it shows the motion;
- caption: the factors in words, with a few phrasings;
- audio: a tone whose onset pitch encodes shape and colour (:func:`pitch_hz`),
  loudness the size, and the later frequency sweep the motion;
- sensor: IMU-like ``[T, 6]`` (acc xyz, gyro xyz) pushed along the motion, scaled by size.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 20),
}
SIZES = {"small": 0.22, "medium": 0.32, "large": 0.44}  # radius as a fraction of the image side
MOTIONS = ("static", "left", "right", "up", "down", "spin")

IMAGE_SIDE = 64
BACKGROUND = (30, 30, 30)
SAMPLE_RATE = 16_000
AUDIO_SECONDS = 1.0
ONSET_SECONDS = 0.25  # steady tone at pitch_hz before the motion sweep
SENSOR_RATE = 100
SENSOR_STEPS = 200

_DIRECTION = {
    "static": (0, 0),
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "spin": (0, 0),
}
_SWEEP_OCTAVES = {"static": 0.0, "left": -0.25, "right": 0.25, "up": 0.5, "down": -0.5, "spin": 0.0}
_LOUDNESS = {"small": 0.15, "medium": 0.3, "large": 0.6}
_PUSH = {"small": 0.5, "medium": 1.0, "large": 2.0}  # m/s^2 of motion acceleration
_MOTION_PHRASES = {
    "static": ("standing still", "that is still"),
    "left": ("moving left", "drifting to the left"),
    "right": ("moving right", "drifting to the right"),
    "up": ("moving up", "rising up"),
    "down": ("moving down", "falling down"),
    "spin": ("spinning", "spinning in place"),
}
_TEMPLATES = (
    "a {size} {colour} {shape} {motion}",
    "there is a {size} {colour} {shape} {motion}",
    "{size} {colour} {shape}, {motion}",
    "a {colour} {shape} of {size} size {motion}",
)


def pitch_hz(shape: str, colour: str) -> float:
    """Onset pitch: one semitone step per (shape, colour) pair, from 220 Hz upward."""
    step = SHAPES.index(shape) * len(COLOURS) + list(COLOURS).index(colour)
    return 220.0 * 2.0 ** (step / 12.0)


def _quarter_turns(point: tuple[float, float], k: int) -> tuple[float, float]:
    x, y = point
    for _ in range(k):
        x, y = y, -x
    return x, y


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "star":
        radii, n = [r if i % 2 == 0 else 0.45 * r for i in range(10)], 10
    elif shape == "cross":
        a, b = r, 0.35 * r
        arm = [(b, a), (b, b), (a, b)]  # corners of one arm; the other three are quarter turns of it
        pts = [(x, y) for k in range(4) for x, y in (_quarter_turns(p, k) for p in arm)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    else:
        n = {"circle": 32, "square": 4, "triangle": 3, "diamond": 4}[shape]
        radii = [r] * n
        angle += {"square": math.pi / 4, "triangle": -math.pi / 2}.get(shape, 0.0)
    angles = [angle + 2 * math.pi * i / n for i in range(n)]
    return [(cx + rad * math.cos(a), cy + rad * math.sin(a)) for rad, a in zip(radii, angles, strict=True)]


def render_image(shape: str, colour: str, size: str, motion: str, rng: np.random.Generator) -> Image.Image:
    """64x64 RGB: a trail of fainter copies behind the shape shows where it comes from."""
    side = IMAGE_SIDE
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    r = SIZES[size] * side
    cx, cy = side / 2 + rng.uniform(-4, 4), side / 2 + rng.uniform(-4, 4)
    rgb = np.array(COLOURS[colour], dtype=float)
    dx, dy = _DIRECTION[motion]
    for k, fade in ((3, 0.2), (2, 0.35), (1, 0.5)):  # oldest first, so the newest copy is on top
        tint = tuple(int(v) for v in fade * rgb + (1 - fade) * np.array(BACKGROUND))
        if motion == "spin":
            draw.polygon(_outline(shape, cx, cy, r, -0.3 * k), fill=tint)
        elif motion != "static":
            draw.polygon(_outline(shape, cx - dx * 0.3 * r * k, cy - dy * 0.3 * r * k, r, 0.0), fill=tint)
    draw.polygon(_outline(shape, cx, cy, r, 0.0), fill=COLOURS[colour])
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 5.0, (side, side, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_caption(shape: str, colour: str, size: str, motion: str, rng: np.random.Generator) -> str:
    """The factors in words, with a randomly chosen phrasing."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    phrases = _MOTION_PHRASES[motion]
    phrase = phrases[int(rng.integers(len(phrases)))]
    caption = template.format(shape=shape, colour=colour, size=size, motion=phrase)
    return re.sub(r"\ba (?=[aeiou])", "an ", caption)


def render_audio(shape: str, colour: str, size: str, motion: str, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 at 16 kHz: steady onset at :func:`pitch_hz`, then a sweep (or vibrato) for the motion."""
    n = int(SAMPLE_RATE * AUDIO_SECONDS)
    t = np.arange(n) / SAMPLE_RATE
    after = np.clip((t - ONSET_SECONDS) / (AUDIO_SECONDS - ONSET_SECONDS), 0.0, 1.0)
    octaves = _SWEEP_OCTAVES[motion] * after
    if motion == "spin":
        octaves = octaves + (t >= ONSET_SECONDS) * np.sin(2 * np.pi * 6.0 * (t - ONSET_SECONDS)) / 12.0
    freq = pitch_hz(shape, colour) * 2.0**octaves
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    wave = _LOUDNESS[size] * envelope * np.sin(phase) + rng.normal(0.0, 0.005, n)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def render_sensor(shape: str, colour: str, size: str, motion: str, rng: np.random.Generator) -> np.ndarray:
    """float32 ``[200, 6]`` at 100 Hz: gravity on z, a push along the motion, yaw rate when spinning."""
    del shape, colour  # the sensor only sees movement
    t = np.arange(SENSOR_STEPS) / SENSOR_STEPS
    series = np.zeros((SENSOR_STEPS, 6), dtype=np.float64)
    series[:, 2] = 9.81
    push = _PUSH[size] * np.sin(np.pi * t) ** 2
    dx, dy = _DIRECTION[motion]
    series[:, 0] += dx * push
    series[:, 2] += -dy * push  # image "up" is -y; the device feels it as +z
    if motion == "spin":
        series[:, 5] = 2.0 * _PUSH[size]
    series += rng.normal(0.0, 0.05, series.shape)
    return series.astype(np.float32)
