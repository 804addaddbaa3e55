"""An upload reaches nothing but itself: manifests, playlists, session descriptions and the like are
refused before a decoder opens them, and neither decoder opens any other resource, even when such
a file is dressed up as an allowed container.

Every case runs under three watchers that fail the test if anything is reached:
- a TCP listener on 127.0.0.1 that must receive no connection (the URLs in the payloads point at it);
- a marker that must not be opened: a FIFO, so any open, even one that reads nothing, is seen;
- the system's UDP table, which must never show the port an SDP file names (no socket bound).

A positive control (PyAV left to probe, as the service once did) shows the watchers do see a reach.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.errors import status_of
from soundsentry import audio
from soundsentry.audio import DEMUXERS, DecodeLimits, decode_audio
from soundsentry.errors import UndecodableAudioError, UnsupportedFormatError
from tests.conftest import run_ffmpeg
from tests.hostile_corpus import Watchers, disguised_payloads, other_payloads, reference_payloads, watching

LIMITS = DecodeLimits(max_duration_s=60.0, decode_timeout_s=10.0)


@pytest.fixture(scope="module")
def watchers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchers]:
    with watching(tmp_path_factory.mktemp("reach")) as found:
        yield found


@pytest.fixture
def unreached(watchers: Watchers, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watchers]:
    """The watchers, checked after the test (after a pause for late attempts); cwd is the marker's folder,
    so a relative reference ("file marker.wav") would find it."""
    monkeypatch.chdir(watchers.marker.parent)
    watchers.clear()
    yield watchers
    time.sleep(0.05)
    assert watchers.reached() == []


# ----------------------------------------------------------------------------- the control


def test_watchers_see_a_decoder_that_follows_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoders left to probe do reach out: torchcodec (the service's in-process decoder until this
    check existed) fetches the URL a DASH manifest names, and PyAV probing an ffconcat list opens the
    marker. So the watchers are not blind. (Watchers of its own: a decoder that opens the marker twice
    could otherwise be seen a moment late, in the next test.)"""
    import io

    import av
    from torchcodec.decoders import AudioDecoder

    with watching(tmp_path) as watchers:
        monkeypatch.chdir(watchers.marker.parent)
        payloads = reference_payloads(watchers)
        with contextlib.suppress(RuntimeError, ValueError):
            AudioDecoder(payloads["dash-http"])
        with (contextlib.suppress(av.FFmpegError, ValueError),
              av.open(io.BytesIO(payloads["ffconcat-relative"])) as source):
            for _ in source.decode(audio=0):
                pass
        deadline = time.monotonic() + 5
        while not (watchers.connections and watchers.marker_opened.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watchers.connections and watchers.marker_opened.is_set(), watchers.reached()


# ----------------------------------------------------------------------------- the cases


def _refused(data: bytes, decoder: str) -> UndecodableAudioError:
    with pytest.raises(UndecodableAudioError) as info:
        decode_audio(data, filename="upload.wav", limits=LIMITS, decoders=(decoder,))
    assert status_of(info.value) == 415
    return info.value


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_references_are_refused_before_any_decoder(unreached: Watchers, decoder: str) -> None:
    for name, data in reference_payloads(unreached).items():
        error = _refused(data, decoder)
        assert isinstance(error, UnsupportedFormatError) and error.error_code == "unsupported_format", name
        assert "refers to media elsewhere" in error.message or "text" in error.message, (name, error.message)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_references_dressed_as_audio_open_nothing(unreached: Watchers, decoder: str) -> None:
    for name, data in disguised_payloads(unreached).items():
        error = _refused(data, decoder)
        assert error.error_code in ("undecodable_audio", "unsupported_format"), (name, error.error_code)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_every_forced_demuxer_opens_nothing_a_reference_names(unreached: Watchers, decoder: str) -> None:
    """Were sniffing ever fooled into any allowed container, the demuxer forced for it reads only the
    bytes given: each reference payload, forced through each container, fails without reaching out."""
    clock = audio._DecodeClock(LIMITS, None)
    decode = audio._decode_with_pyav if decoder == "pyav" else audio._decode_with_ffmpeg
    for name, data in reference_payloads(unreached).items():
        for container in DEMUXERS:
            with pytest.raises((audio._DecodeAttemptError, UndecodableAudioError)):
                decode(data, container, LIMITS, clock)
            assert unreached.reached() == [], (name, container)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_music_files_and_images_are_refused(unreached: Watchers, decoder: str) -> None:
    for name, data in other_payloads().items():
        error = _refused(data, decoder)
        assert isinstance(error, UnsupportedFormatError), name
        expected = "image" if name in ("png", "jpeg", "gif") else ("MIDI" if name == "midi" else "tracker")
        assert expected in error.message, (name, error.message)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_video_without_audio_is_refused(unreached: Watchers, decoder: str, tmp_path: Path) -> None:
    for suffix, codec in ((".mp4", "mpeg4"), (".webm", "libvpx")):
        path = tmp_path / f"video{suffix}"
        run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=1", "-c:v", codec, str(path))
        error = _refused(path.read_bytes(), decoder)
        assert error.error_code in ("no_audio_stream", "undecodable_audio"), (suffix, error.message)
        if decoder == "pyav":
            assert error.error_code == "no_audio_stream" and "no audio stream" in error.message


def test_codec_outside_the_allow_list_is_refused(unreached: Watchers, tmp_path: Path) -> None:
    # WAV can carry many codecs; G.723.1 is not one the service decodes
    path = tmp_path / "g723.wav"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000:duration=1", "-c:a", "g723_1",
               "-b:a", "6.3k", str(path))
    with pytest.raises(UnsupportedFormatError) as info:
        decode_audio(path.read_bytes(), limits=LIMITS, decoders=("pyav",))
    assert info.value.error_code == "unsupported_codec" and "g723_1" in info.value.message
    with pytest.raises(UndecodableAudioError):  # the program refuses the decoder by its whitelist
        decode_audio(path.read_bytes(), limits=LIMITS, decoders=("ffmpeg",))
