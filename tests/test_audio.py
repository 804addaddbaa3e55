"""Decode stage: every format, both decoders, odd inputs, limits and errors, on real audio."""

from __future__ import annotations

import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from api.errors import status_of
from soundsentry import audio
from soundsentry.audio import (
    SAMPLE_RATE,
    DecodeLimits,
    Waveform,
    decode_audio,
    decode_file,
    encode_audio,
    sniff_format,
)
from soundsentry.errors import (
    AudioTooLongError,
    DecoderUnavailableError,
    EmptyUploadError,
    UndecodableAudioError,
    UnsupportedFormatError,
    UploadTooLargeError,
)
from tests.conftest import ENCODINGS, read_wav, run_ffmpeg, write_wav
from tests.hostile_corpus import ADPCM_AND_PCM

SNIFFED = {"m4a_faststart": "m4a"}  # encoding name -> sniffed name, where they differ
DURATION_TOLERANCE_S = 0.1
# Raw ADTS AAC cannot say how many priming/padding samples to drop: up to two 1024-sample frames
# (128 ms at 16 kHz) come out on top of the source.
ADTS_TOLERANCE_S = 2 * 1024 / SAMPLE_RATE + 0.01


def _source_duration_s(speech_wav: Path) -> float:
    samples, sample_rate = read_wav(speech_wav)
    return samples.size / sample_rate


def _assert_decoded(samples: np.ndarray, expected_duration_s: float, tolerance_s: float = DURATION_TOLERANCE_S) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / SAMPLE_RATE - expected_duration_s) < tolerance_s
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
    assert np.sqrt(np.mean(samples**2)) > 0.01, "decoded audio is (near) silent"


def _program(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """What the ffmpeg program alone decodes (allow-list, forced demuxer and sanitising included)."""
    return decode_audio(data, limits=limits, decoders=("ffmpeg",)).samples


def _tolerance_s(fmt: str) -> float:
    return ADTS_TOLERANCE_S if fmt == "aac" else DURATION_TOLERANCE_S


def _float_wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A mono IEEE-float WAV, written by hand so NaN/Inf/out-of-range samples survive."""
    payload = samples.astype("<f4").tobytes()
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 3, 1, sample_rate, 4 * sample_rate, 4, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + len(fmt_chunk) + 8 + len(payload))
        + b"WAVE"
        + fmt_chunk
        + (b"data" + struct.pack("<I", len(payload)) + payload)
    )


# --- every format, both decoders ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ENCODINGS)
def test_sniff_format_reads_content(fmt: str, encode_as: Callable[..., Path]) -> None:
    assert sniff_format(encode_as(fmt).read_bytes()) == SNIFFED.get(fmt, fmt)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ((b"\xff\xfb\x90\x64" + bytes(413)) * 3, "mp3"),  # three 417-byte MPEG-1 layer III frames, no ID3 tag
        (b"\xff\xfb\x90\x64" + bytes(60), None),  # one frame header alone is chance, not a format
        (bytes(700) + (b"\xff\xfb\x90\x64" + bytes(413)) * 5, "mp3"),  # after junk: five frames
        (bytes(700) + (b"\xff\xfb\x90\x64" + bytes(413)) * 3, None),
        ((b"\xff\xf1\x50\x80\x0c\x9f\xfc" + bytes(93)) * 3, "aac"),  # three 100-byte ADTS frames, MPEG-4
        (b"\xff\xf1\x50\x80" + bytes(60), None),
        (b"ID3\x04\x00\x00\x00\x00\x00\x02" + bytes(2) + b"fLaC" + bytes(60), "flac"),  # tagged FLAC
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64", "mp3"),
        (b"\x00\x00\x00\x20ftypisom" + bytes(20), "mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "matroska"),
        (b"\xff\xff\xff\xff" + bytes(60), None),  # sync bits but reserved fields
        (b"hello, world", None),
        (b"", None),
    ],
)
def test_sniff_format_magic_bytes(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


@pytest.mark.parametrize("fmt", ENCODINGS)
def test_decode_audio_every_format(fmt: str, encode_as: Callable[..., Path], speech_wav: Path) -> None:
    path = encode_as(fmt)
    waveform = decode_audio(path.read_bytes(), filename=path.name)
    assert waveform.sample_rate == SAMPLE_RATE
    assert waveform.source_format == SNIFFED.get(fmt, fmt)
    _assert_decoded(waveform.samples, _source_duration_s(speech_wav), _tolerance_s(fmt))


@pytest.mark.parametrize("fmt", ENCODINGS)
def test_ffmpeg_program_decodes_every_format(fmt: str, encode_as: Callable[..., Path], speech_wav: Path) -> None:
    data = encode_as(fmt).read_bytes()
    _assert_decoded(_program(data), _source_duration_s(speech_wav), _tolerance_s(fmt))


def test_m4a_fixtures_place_the_index_as_named(encode_as: Callable[..., Path]) -> None:
    at_end, at_start = encode_as("m4a").read_bytes(), encode_as("m4a_faststart").read_bytes()
    assert at_end.find(b"moov") > at_end.find(b"mdat")
    assert at_start.find(b"moov") < at_start.find(b"mdat")


def test_long_m4a_with_index_at_end_decodes_with_both_decoders(
    encode_as: Callable[..., Path], speech_wav: Path, tmp_path: Path
) -> None:
    # ~60 s: too big for ffmpeg to read from a pipe when the moov atom comes last (it seeks in a memfd).
    speech, _ = read_wav(speech_wav)
    long_path = write_wav(tmp_path / "long.wav", np.tile(speech, 12))
    data = encode_as("m4a", source=long_path).read_bytes()
    expected_s = 12 * speech.size / SAMPLE_RATE
    _assert_decoded(decode_audio(data).samples, expected_s)
    _assert_decoded(_program(data), expected_s)


@pytest.mark.parametrize("fmt", ["webm", "ogg", "mp3"])
def test_stream_starting_at_a_late_timestamp_decodes(
    fmt: str, encode_as: Callable[..., Path], speech_wav: Path
) -> None:
    data = encode_as(fmt, extra_args=("-output_ts_offset", "100")).read_bytes()
    _assert_decoded(decode_audio(data).samples, _source_duration_s(speech_wav))


@pytest.mark.parametrize("fmt", ["wav", "mp3", "webm", "ogg", "m4a_faststart", "flac", "aac"])
def test_upload_cut_in_half_keeps_what_decodes(fmt: str, encode_as: Callable[..., Path], speech_wav: Path) -> None:
    # The damaged last packet is skipped: what decoded before it is kept.
    data = encode_as(fmt).read_bytes()
    samples = decode_audio(data[: len(data) // 2]).samples
    assert 0.3 < samples.size / SAMPLE_RATE / _source_duration_s(speech_wav) < 0.7
    assert np.isfinite(samples).all() and np.sqrt(np.mean(samples**2)) > 0.01


def test_extension_is_only_a_hint(encode_as: Callable[..., Path], speech_wav: Path) -> None:
    waveform = decode_audio(encode_as("mp3").read_bytes(), filename="x.wav")
    assert waveform.source_format == "mp3"
    _assert_decoded(waveform.samples, _source_duration_s(speech_wav))


def test_decode_file(encode_as: Callable[..., Path], speech_wav: Path) -> None:
    waveform = decode_file(encode_as("flac"))
    assert waveform.source_format == "flac"
    _assert_decoded(waveform.samples, _source_duration_s(speech_wav))


# --- channels, rates, bad sample values ---------------------------------------------------------------


def test_eight_channels_at_48k_are_averaged(speech_wav: Path) -> None:
    speech, _ = read_wav(speech_wav)
    time_48k_s = np.arange(3 * speech.size) / 48_000
    speech_48k = np.interp(time_48k_s, np.arange(speech.size) / SAMPLE_RATE, speech)
    gains = np.arange(1, 9) / 8  # channel k carries the speech at gain (k + 1) / 8; their mean is 0.5625
    data = encode_audio(gains[:, None] * speech_48k, "wav", sample_rate=48_000)
    decoded = decode_audio(data).samples
    _assert_decoded(decoded, speech.size / SAMPLE_RATE)
    overlap = min(decoded.size, speech.size)
    rms_ratio = np.sqrt(np.mean(decoded[:overlap] ** 2) / np.mean(speech[:overlap] ** 2))
    assert rms_ratio == pytest.approx(gains.mean(), rel=0.05)
    program = _program(data)
    assert np.sqrt(np.mean(program[:overlap] ** 2) / np.mean(speech[:overlap] ** 2)) == pytest.approx(
        gains.mean(), rel=0.05
    )


@pytest.mark.parametrize("fmt", ["webm", "m4a"])  # the program reads a pipe / seeks in a memfd
@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_long_stereo_recording_streams_with_channels_averaged(
    fmt: str, decoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 11 minutes: a 440 Hz tone at 0.4 on the left, silence on the right
    path = tmp_path / f"long.{fmt}"
    codec = ["-c:a", "libopus", "-b:a", "24k"] if fmt == "webm" else ["-c:a", "aac", "-b:a", "32k"]
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=660",
               "-af", "volume=0.4*2.83,pan=stereo|c0=c0|c1=0*c0", *codec, str(path))  # sine's amplitude is 1/8
    spool = tmp_path / "spool"  # the decoder's temporary files go here, where no other process writes
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    decoded = decode_audio(path.read_bytes(), filename=path.name, decoders=(decoder,)).samples
    assert decoded.size / SAMPLE_RATE == pytest.approx(660.0, abs=0.2)
    rms = float(np.sqrt(np.mean(decoded[SAMPLE_RATE : 600 * SAMPLE_RATE] ** 2)))
    assert rms == pytest.approx(0.4 * 2.83 / 8 / 2 / np.sqrt(2), rel=0.1)  # the mean of the two channels
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("codec", ADPCM_AND_PCM)
def test_decoders_agree_on_every_codec(codec: str, speech_wav: Path, tmp_path: Path) -> None:
    """Every PCM and ADPCM codec a WAV, AIFF or MOV may carry: the upload's decode is as long as the
    ffmpeg program's and the same signal. Where PyAV alone reads short (IMA-ADPCM: a quarter of the
    samples), the shortfall is seen and the program's decode is used."""
    suffix, args, rate = ADPCM_AND_PCM[codec]
    path = tmp_path / f"{codec}{suffix}"
    run_ffmpeg("-i", str(speech_wav), "-f", "lavfi", "-i", "sine=frequency=220:duration=8.4",
               "-filter_complex", "[0:a]apad=whole_dur=8.4[s];[s][1:a]amix=inputs=2:duration=first",
               "-t", "8.4", "-ar", str(rate), "-ac", "1", *args, str(path))
    data = path.read_bytes()
    program = decode_audio(data, decoders=("ffmpeg",)).samples
    served = decode_audio(data).samples
    assert abs(program.size / SAMPLE_RATE - 8.4) < 0.15, program.size / SAMPLE_RATE  # ADPCM pads its last block
    assert abs(served.size - program.size) <= 0.01 * program.size, (served.size, program.size)
    common = min(served.size, program.size)
    assert np.corrcoef(served[:common], program[:common])[0, 1] > 0.99
    in_process = decode_audio(data, decoders=("pyav",)).samples
    if in_process.size < 0.99 * program.size:  # PyAV alone is short: the check must catch it
        claimed = 8.4
        assert audio._looks_short(in_process.size / SAMPLE_RATE, claimed, audio.DecodeLimits()), codec


def test_192k_is_resampled_without_aliasing() -> None:
    # 1 kHz stays at 1 kHz; 30 kHz must be filtered out, not folded down to 2 kHz.
    time_s = np.arange(2 * 192_000) / 192_000
    tone = 0.5 * np.sin(2 * np.pi * 1_000 * time_s) + 0.3 * np.sin(2 * np.pi * 30_000 * time_s)
    decoded = decode_audio(encode_audio(tone, "wav", sample_rate=192_000)).samples
    assert abs(decoded.size / SAMPLE_RATE - 2.0) < DURATION_TOLERANCE_S
    spectrum = np.abs(np.fft.rfft(decoded))
    frequencies_hz = np.fft.rfftfreq(decoded.size, 1 / SAMPLE_RATE)
    assert frequencies_hz[spectrum.argmax()] == pytest.approx(1_000, abs=5)
    alias = spectrum[np.abs(frequencies_hz - 2_000) < 20].max()
    assert alias < 0.01 * spectrum.max()


@pytest.mark.parametrize("sample_rate", [SAMPLE_RATE, 44_100])
def test_float_wav_with_nan_inf_and_overrange_is_sanitised(speech_wav: Path, sample_rate: int) -> None:
    speech, _ = read_wav(speech_wav)
    samples = np.interp(np.arange(speech.size * sample_rate // SAMPLE_RATE) / sample_rate,
                        np.arange(speech.size) / SAMPLE_RATE, speech).astype(np.float32)  # fmt: skip
    samples[1000:1010] = np.nan
    samples[20_000] = np.inf
    samples[30_000] = -np.inf
    samples[40_000:40_100] = 3.0
    decoded = decode_audio(_float_wav_bytes(samples, sample_rate), filename="bad.wav").samples
    _assert_decoded(decoded, speech.size / SAMPLE_RATE)


# --- errors ---------------------------------------------------------------------------------------------


def test_empty_upload() -> None:
    with pytest.raises(EmptyUploadError, match="Upload a WAV"):
        decode_audio(b"", filename="empty.wav")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    with pytest.raises(EmptyUploadError):
        decode_file(tmp_path / "empty.wav")


@pytest.mark.parametrize("filename", ["x.wav", "x.mp3", "x.webm", "x.m4a"])
def test_random_bytes_are_refused_before_any_decoder(filename: str) -> None:
    data = np.random.default_rng(1).bytes(20_000)
    with pytest.raises(UnsupportedFormatError, match="Upload a WAV, MP3, WEBM/Opus, OGG, M4A/AAC or FLAC") as info:
        decode_audio(data, filename=filename)
    assert status_of(info.value) == 415 and info.value.error_code == "unsupported_format"


def test_text_file_named_wav_is_refused() -> None:
    text = b"This is not audio, just a text file with a .wav name.\n" * 50
    with pytest.raises(UnsupportedFormatError, match="it is text, not audio"):
        decode_audio(text, filename="notes.wav")


@pytest.mark.parametrize(("fmt", "keep_bytes"), [("wav", 40), ("mp3", 16), ("webm", 100), ("flac", 30), ("m4a", 30)])
def test_truncated_header_is_undecodable(fmt: str, keep_bytes: int, encode_as: Callable[..., Path]) -> None:
    with pytest.raises(UndecodableAudioError):
        decode_audio(encode_as(fmt).read_bytes()[:keep_bytes], filename=f"cut.{fmt}")


def test_m4a_cut_before_its_index_is_undecodable(encode_as: Callable[..., Path]) -> None:
    data = encode_as("m4a").read_bytes()
    with pytest.raises(UndecodableAudioError, match="m4a"):
        decode_audio(data[: data.find(b"moov") - 4])


def test_wav_header_without_samples_is_undecodable() -> None:
    with pytest.raises(UndecodableAudioError):
        decode_audio(encode_audio(np.zeros(0, dtype=np.float32), "wav"))


def test_oversize_is_refused_before_decoding() -> None:
    limits = DecodeLimits(max_upload_bytes=1_000)
    with pytest.raises(UploadTooLargeError) as info:
        decode_audio(np.random.default_rng(2).bytes(1_001), limits=limits)  # not audio: never decoded
    assert status_of(info.value) == 413


def test_oversize_file_is_refused_before_reading(encode_as: Callable[..., Path]) -> None:
    with pytest.raises(UploadTooLargeError):
        decode_file(encode_as("wav"), limits=DecodeLimits(max_upload_bytes=1_000))


@pytest.mark.parametrize("fmt", ["wav", "webm", "mp3", "m4a"])  # webm carries no duration: decoding stops
def test_too_long_audio_is_refused(fmt: str, encode_as: Callable[..., Path]) -> None:
    data = encode_as(fmt).read_bytes()
    limits = DecodeLimits(max_duration_s=2.0)
    with pytest.raises(AudioTooLongError, match="2 s limit") as info:
        decode_audio(data, limits=limits)
    assert status_of(info.value) == 413
    with pytest.raises(AudioTooLongError):
        _program(data, limits)


def test_decoding_stops_shortly_after_the_duration_limit(tmp_path: Path) -> None:
    # 2 min of silence in ~70 KB of WEBM.
    path = tmp_path / "two-minutes.webm"
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=mono",
        "-t",
        "120",
        "-c:a",
        "libopus",
        "-b:a",
        "6k",
        str(path),
    )
    data = path.read_bytes()
    limits = DecodeLimits(max_duration_s=5.0)
    most_samples = round((limits.max_duration_s + audio._DECODE_MARGIN_S + 0.1) * SAMPLE_RATE)
    # Both decoders stop shortly after the limit, whatever the header says (this one states 120 s).
    clock = audio._DecodeClock(limits, None)
    with pytest.raises(AudioTooLongError, match="claims to last 120"):
        audio._decode_with_pyav(data, "webm", limits, clock)
    assert audio._decode_with_ffmpeg(data, "webm", limits, clock).size <= most_samples
    with pytest.raises(AudioTooLongError):
        decode_audio(data, limits=limits)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_decode_timeout_stops_either_decoder(decoder: str, encode_as: Callable[..., Path]) -> None:
    data = encode_as("flac").read_bytes()
    with pytest.raises(UndecodableAudioError, match="longer than") as info:
        decode_audio(data, limits=DecodeLimits(decode_timeout_s=1e-6), decoders=(decoder,))
    assert info.value.error_code == "decode_timeout" and status_of(info.value) == 415


def test_no_decoder_at_all(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, encode_as: Callable[..., Path]) -> None:
    data = encode_as("wav").read_bytes()
    monkeypatch.setattr(audio, "_pyav", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DecoderUnavailableError) as info:
        decode_audio(data)
    assert status_of(info.value) == 503


def test_temp_dir_is_left_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, encode_as: Callable[..., Path]
) -> None:
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    good = encode_as("m4a").read_bytes()
    bad = good[: good.find(b"moov") - 4]
    decode_audio(good)
    _program(good)
    for failing in (
        lambda: decode_audio(bad, filename="bad.m4a"),
        lambda: decode_audio(b"not audio at all", filename="x.wav"),
        lambda: _program(bad),
        lambda: _program(good, DecodeLimits(decode_timeout_s=1e-6)),
    ):
        with pytest.raises(UndecodableAudioError):
            failing()
    encode_audio(np.zeros(SAMPLE_RATE, dtype=np.float32), "m4a")
    assert list(temp_dir.iterdir()) == []


# --- Waveform, encode_audio -----------------------------------------------------------------------------


def test_waveform_crop_and_pyannote_view() -> None:
    waveform = Waveform(np.linspace(-1, 1, 3 * SAMPLE_RATE, dtype=np.float32), source_format="wav")
    assert waveform.duration_s == 3.0
    cropped = waveform.crop(0.5, 10.0)  # end clamped to the duration
    assert cropped.duration_s == 2.5 and cropped.samples[0] == waveform.samples[SAMPLE_RATE // 2]
    assert waveform.crop(1.0, 1.0).duration_s == 0.0
    as_pyannote = waveform.as_pyannote()
    assert as_pyannote["sample_rate"] == SAMPLE_RATE
    assert as_pyannote["waveform"].shape == (1, 3 * SAMPLE_RATE) and as_pyannote["waveform"].dtype == torch.float32
    with pytest.raises(ValueError, match="start_s"):
        waveform.crop(2.0, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples": np.zeros((2, 10), dtype=np.float32)},
        {"samples": np.zeros(10, dtype=np.float64)},
        {"samples": np.zeros(10, dtype=np.float32), "sample_rate": 44_100},
    ],
)
def test_waveform_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Waveform(**kwargs)


@pytest.mark.parametrize("fmt", audio.ENCODE_FORMATS)
def test_encode_audio_round_trip(fmt: str, speech_wav: Path) -> None:
    speech, _ = read_wav(speech_wav)
    data = encode_audio(speech, fmt, bitrate="32k" if fmt in ("webm", "opus") else None)
    assert sniff_format(data) == fmt
    _assert_decoded(decode_audio(data).samples, speech.size / SAMPLE_RATE, _tolerance_s(fmt))


def test_encode_audio_faststart_moves_the_index(speech_wav: Path) -> None:
    data = encode_audio(read_wav(speech_wav)[0], "m4a", faststart=True)
    assert data.find(b"moov") < data.find(b"mdat")


def test_encode_audio_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown fmt"):
        encode_audio(np.zeros(10), "wma")
    with pytest.raises(ValueError, match="finite"):
        encode_audio(np.array([0.0, np.nan]), "wav")


# --- fixtures other test files rely on -------------------------------------------------------------------


def test_shared_fixtures(two_speaker_wav: Path, two_speaker_turns: list, silence_wav: Path, noise_wav: Path) -> None:
    dialogue = decode_file(two_speaker_wav)
    assert 12.0 < dialogue.duration_s < 18.0
    assert [speaker for *_, speaker in two_speaker_turns] == ["male", "female", "male", "female"]
    assert all(2.5 < end - start < 5.0 for start, end, _ in two_speaker_turns)
    assert two_speaker_turns[-1][1] == pytest.approx(dialogue.duration_s, abs=0.01)
    assert not decode_file(silence_wav).samples.any()
    noise = decode_file(noise_wav).samples
    assert noise.size == 5 * SAMPLE_RATE and 0.005 < noise.std() < 0.02


# --- timing (reported, not asserted) ---------------------------------------------------------------------


def test_report_decode_timing_of_a_4s_webm_chunk(
    speech_wav: Path, encode_as: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    speech, _ = read_wav(speech_wav)
    chunk = encode_as("webm", source=write_wav(tmp_path / "chunk.wav", speech[: 4 * SAMPLE_RATE])).read_bytes()

    def median_ms(decode: Callable[[], object], repeats: int = 20) -> float:
        decode()  # warm up
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            decode()
            timings.append(1000 * (time.perf_counter() - start))
        return statistics.median(timings)

    in_process_ms = median_ms(lambda: decode_audio(chunk))
    program_ms = median_ms(lambda: _program(chunk))
    with capsys.disabled():  # shown in a plain run too
        print(  # noqa: T201 - a report, not a check
            f"\n4 s webm/opus chunk: median decode in process (PyAV) {in_process_ms:.1f} ms, "
            f"with the ffmpeg program {program_ms:.1f} ms"
        )
