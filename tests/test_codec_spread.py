"""Codec invariance measurement: every condition is an upload the service takes, and the report is the
spread of the served detector's P(fake) over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soundsentry.audio import decode_audio, decode_file
from soundsentry.datasets import AudioItem
from soundsentry.detector import Detector
from soundsentry.evaluation import codec_spread


@pytest.mark.parametrize("condition", list(codec_spread.CONDITIONS))
def test_each_condition_is_an_upload_the_service_decodes(condition: str, speech_wav: Path) -> None:
    samples = decode_file(speech_wav).samples
    data, name = codec_spread.encode(samples, condition)
    back = decode_audio(data, filename=name).samples
    assert abs(back.size - samples.size) < 0.1 * 16000  # same speech, same length (codec padding aside)
    if condition != "pcm_16k":
        n = min(back.size, samples.size)
        assert not np.array_equal(back[:n], samples[:n])  # the codec changed the signal


def test_the_spread_of_the_served_detector(speech_wav: Path, two_speaker_wav: Path) -> None:
    items = [AudioItem(speech_wav, 0), AudioItem(two_speaker_wav, 1)]
    result = codec_spread.measure(Detector.load(), items)
    assert result["files"] == 2 and result["scored_in_every_condition"] == 2
    assert set(result["per_condition"]) == set(codec_spread.CONDITIONS)
    assert 0.0 <= result["median_spread"] <= 1.0
    for entry in result["per_condition"].values():
        assert 0.0 <= entry["mean_p_fake_real"] <= 1.0 and 0.0 <= entry["mean_p_fake_fake"] <= 1.0
        assert entry["eer"] in (0.0, 0.5, 1.0)  # one file per class
