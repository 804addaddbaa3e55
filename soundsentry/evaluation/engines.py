"""Where the batch evaluation runs: in this process (``sequential``) or on a Dask cluster (``dask``).

Both run :func:`soundsentry.evaluation.batch.predict_item` on each file, so their predictions are the
same; only the order in which files finish differs, and the results are put back in the test set's order.

Every finished file is appended, as it arrives, to ``predictions.partial.jsonl`` in the output folder
(:class:`PartialResults`): its first line holds the run's :class:`RunSettings` and the loaded models,
then one line per file (its predictions, full-precision floats). A later run with the same settings and
models skips the files found there and keeps their predictions; one with other settings is refused
(:class:`ResumeError`) unless it is told to start again.

The Dask engine starts a local cluster (one process per worker, one thread each) or connects to a
running scheduler. Each worker process loads the :class:`~soundsentry.detector.Detector` once, on its
first file (:func:`worker_detector`), so every worker needs this package, the models at the same
``--data-dir`` path and read access to the test files at the paths the manifest gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundsentry.datasets import AudioItem
from soundsentry.evaluation.batch import BrowserChunks, Prediction, predict_item

log = logging.getLogger(__name__)

ENGINES = ("sequential", "dask")
PARTIAL_NAME = "predictions.partial.jsonl"
PARTIAL_FORMAT = 1
# the files of a model directory that decide predictions (not its notes, model card or recipes)
MODEL_SUFFIXES = frozenset({".json", ".pt", ".pth", ".pkl", ".joblib", ".onnx", ".bin", ".ckpt", ".safetensors",
                            ".npy", ".npz", ".yaml"})
CONNECT_S, WAIT_S = 20, 60  # a running cluster: to reach its scheduler, then for its first worker


class EngineError(RuntimeError):
    """The cluster cannot be reached, has no worker, or its workers load other models."""


class ResumeError(ValueError):
    """The output folder holds results of a run with other settings (or an unreadable partial file)."""


def _path(value: Path | None) -> str | None:
    return None if value is None else str(Path(value).resolve())


@dataclass(frozen=True)
class RunSettings:
    """What decides a file's predictions: a resumed run must share all of it with the run it resumes."""

    test_dir: str
    data_dir: str
    tkan_dir: str | None = None
    xvector_dir: str | None = None
    denoise: bool = False
    use_diarization: bool = False
    browser_chunks: dict[str, Any] | None = None  # BrowserChunks' fields, or None for whole files

    @classmethod
    def of(cls, *, test_dir: Path, data_dir: Path, tkan_dir: Path | None = None, xvector_dir: Path | None = None,
           denoise: bool = False, use_diarization: bool = False, chunks: BrowserChunks | None = None) -> RunSettings:
        return cls(test_dir=_path(test_dir), data_dir=_path(data_dir), tkan_dir=_path(tkan_dir),
                   xvector_dir=_path(xvector_dir), denoise=denoise, use_diarization=use_diarization,
                   browser_chunks=None if chunks is None else dataclasses.asdict(chunks))

    @property
    def chunks(self) -> BrowserChunks | None:
        return None if self.browser_chunks is None else BrowserChunks(**self.browser_chunks)

    def detector_key(self) -> tuple:
        return (self.data_dir, self.tkan_dir, self.xvector_dir, self.denoise)

    def model_files(self) -> str:
        """A digest of the model files in the model directories: a retrained model under the same name
        (``make train`` rewrites data/) is another model, whatever its description says."""
        digest = hashlib.sha256()
        for folder in dict.fromkeys(d for d in (self.data_dir, self.tkan_dir, self.xvector_dir) if d is not None):
            root = Path(folder)
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
            for path in files:
                digest.update(f"{path.relative_to(root)}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\0".encode())
        return digest.hexdigest()[:16]

    def load_detector(self):
        from soundsentry.detector import Detector, DetectorConfig

        optional = {name: Path(value) for name, value in (("tkan_dir", self.tkan_dir),
                                                          ("xvector_dir", self.xvector_dir)) if value is not None}
        return Detector.load(DetectorConfig(data_dir=Path(self.data_dir), denoise=self.denoise, **optional))


def item_key(item: AudioItem) -> str:
    """A file's key in the partial results: its absolute path (the same file from another working directory)."""
    return str(Path(item.path).absolute())


def _encode(prediction: Prediction) -> dict[str, Any]:
    return {f.name: getattr(prediction, f.name) for f in dataclasses.fields(Prediction) if f.name != "item"}


class PartialResults:
    """``predictions.partial.jsonl``: the settings line, then ``{"path", "run", "predictions"}`` per file.

    Opening it reads what an earlier run left (a last line cut short by a crash is dropped) and checks
    its settings and models against this run's; ``restart`` forgets it. :meth:`add` appends a file's
    predictions and flushes, so an interrupted run loses at most the files it was scoring.
    """

    def __init__(self, path: Path, settings: RunSettings, models: dict[str, str], *, restart: bool = False) -> None:
        self.path = path
        self.run = uuid.uuid4().hex[:12]
        header = {"format": PARTIAL_FORMAT, "settings": dataclasses.asdict(settings), "models": models}
        self.done: dict[str, list[dict[str, Any]]] = {}
        lines: list[str] = []
        if path.exists() and not restart:
            lines = self._read_existing(header)
        path.parent.mkdir(parents=True, exist_ok=True)
        # rewritten whole (and atomically) before appending: drops a cut-short last line and repeated files
        scratch = path.with_name(path.name + ".tmp")
        scratch.write_text("".join(line + "\n" for line in [json.dumps(header), *lines]))
        scratch.replace(path)
        self._handle = path.open("a")

    def _read_existing(self, header: dict[str, Any]) -> list[str]:
        text = self.path.read_text()
        rows = text.splitlines()
        try:
            old = json.loads(rows[0])
        except (IndexError, json.JSONDecodeError):
            raise ResumeError(f"{self.path} is not a partial result this program wrote: pass --restart to "
                              "score everything again, or another --output-dir") from None
        differences = [f"{key}: {old.get('settings', {}).get(key)!r} there, {value!r} here"
                       for key, value in header["settings"].items() if old.get("settings", {}).get(key) != value]
        differences += [f"model {key}: {old.get('models', {}).get(key)!r} there, {value!r} here"
                        for key, value in header["models"].items() if old.get("models", {}).get(key) != value]
        if old.get("format") != PARTIAL_FORMAT:
            differences.insert(0, f"format {old.get('format')!r} there, {PARTIAL_FORMAT} here")
        if differences:
            raise ResumeError(f"{self.path} holds the results of a run with other settings ("
                              + "; ".join(differences) + "): pass --restart to score everything again, "
                              "or another --output-dir")
        kept: dict[str, str] = {}
        for number, row in enumerate(rows[1:], start=2):
            try:
                record = json.loads(row)
                self.done[record["path"]] = record["predictions"]
            except (json.JSONDecodeError, KeyError, TypeError):
                if number == len(rows) and not text.endswith("\n"):
                    log.warning("%s: dropping its last line, cut short (the run was interrupted)", self.path)
                    continue
                raise ResumeError(f"{self.path} line {number} is unreadable: pass --restart to score everything "
                                  "again, or another --output-dir") from None
            kept[record["path"]] = row
        return list(kept.values())

    def predictions(self, item: AudioItem) -> list[Prediction] | None:
        """The stored predictions of ``item``, or None when no run scored it."""
        stored = self.done.get(item_key(item))
        return None if stored is None else [Prediction(item, **fields) for fields in stored]

    def add(self, item: AudioItem, predictions: list[Prediction]) -> None:
        encoded = [_encode(p) for p in predictions]
        self.done[item_key(item)] = encoded
        self._handle.write(json.dumps({"path": item_key(item), "run": self.run, "predictions": encoded}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


# --- the Dask side -------------------------------------------------------------------------------------

_DETECTORS: dict[tuple, Any] = {}
_DETECTOR_LOCK = threading.Lock()


def identity(detector, settings: RunSettings) -> dict[str, str]:
    """What a partial result records of the models: their descriptions and the digest of their files."""
    return detector.models | {"model_files": settings.model_files()}


def worker_detector(settings: RunSettings):
    """The worker process's detector for ``settings`` and its :func:`identity`: loaded on its first call,
    then kept (one at a time)."""
    key = settings.detector_key()
    with _DETECTOR_LOCK:
        if key not in _DETECTORS:
            import torch

            torch.set_num_threads(1)
            _undo_malloc_trim_threshold()
            _DETECTORS.clear()
            detector = settings.load_detector()
            _DETECTORS[key] = detector, identity(detector, settings)
        return _DETECTORS[key]


def _undo_malloc_trim_threshold() -> None:
    """A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (``dask worker``'s default), which
    fixes glibc's mmap threshold at 128 KiB: every large array is then mapped and zeroed anew and the
    detector runs 1.5 times slower. Give glibc fixed thresholds at its dynamic maximum instead (32 MiB)."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)


def detector_info(settings: RunSettings) -> dict[str, Any]:
    """On a worker: the thresholds and models of its detector (what metrics.json records), and their identity."""
    detector, models = worker_detector(settings)
    return {"thresholds": detector.thresholds, "models": detector.models, "identity": models}


def predict_on_worker(settings: RunSettings, item: AudioItem) -> tuple[dict[str, str], list[Prediction]]:
    """On a worker: :func:`predict_item` with the worker's detector, and the identity of its models."""
    detector, models = worker_detector(settings)
    return models, predict_item(detector, item, use_diarization=settings.use_diarization,
                                         chunks=settings.chunks)


@contextmanager
def dask_client(*, workers: int = 2, scheduler: str | None = None, scratch: Path | None = None) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, or of a local one of ``workers`` processes of one thread,
    whose scratch files go under ``scratch`` (removed when it closes)."""
    import dask
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # not every worker's and connection's start
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_S)
        except OSError as error:
            raise EngineError(f"cannot reach the scheduler at {scheduler}: {error}") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=WAIT_S)
            except TimeoutError:
                raise EngineError(f"the scheduler at {scheduler} has no worker after {WAIT_S} s: start one with "
                                   f"`dask worker {scheduler} --nthreads 1`") from None
            yield client
        return
    created = scratch is not None and not scratch.exists()
    # the nanny's default MALLOC_TRIM_THRESHOLD_ fixes glibc's mmap threshold: every large array is then
    # mapped and zeroed anew, and the detector runs 1.5 times slower (10 s of 150 devset files take 15 s)
    options: dict[str, Any] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    if scratch is not None:
        options["temporary-directory"] = str(scratch)
    environ = dict(os.environ)  # the nanny writes its pre-spawn variables into this process's environment
    try:
        with dask.config.set(options), LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            local_directory=None if scratch is None else str(scratch),
        ) as cluster, Client(cluster) as client:
            _restore(environ)
            yield client
    finally:
        _restore(environ)
        if created:
            shutil.rmtree(scratch, ignore_errors=True)


def _restore(environ: dict[str, str]) -> None:
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)


# --- running an evaluation -----------------------------------------------------------------------------

@dataclass
class Outcome:
    predictions: list[Prediction]  # in the order of the items
    thresholds: dict[str, float]
    models: dict[str, str]
    run: dict[str, Any]  # engine, workers, files scored now and resumed, seconds, files/s


class _Progress:
    """The bar counts files; with browser chunks, the chunks scored so far are its postfix."""

    def __init__(self, total: int, done: int, description: str, chunked: bool, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, desc=description, unit="file", disable=not enabled)
        self.chunked = chunked
        self.chunks = 0

    def update(self, predictions: list[Prediction]) -> None:
        self.bar.update(1)
        if self.chunked:
            self.chunks += len(predictions)
            self.bar.set_postfix(chunks=self.chunks, refresh=False)

    def close(self) -> None:
        self.bar.close()


def evaluate_items(
    items: list[AudioItem], settings: RunSettings, output_dir: Path, *, engine: str = "sequential",
    workers: int = 2, scheduler: str | None = None, threads: int = 1, restart: bool = False,
    progress: bool = True, say: Callable[[str], None] = lambda line: None,
) -> Outcome:
    """Score ``items`` with ``engine``, resuming from ``output_dir``'s partial results; see the module."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {ENGINES}")
    started = time.perf_counter()
    partial_path = output_dir / PARTIAL_NAME
    if engine == "sequential":
        import torch

        torch.set_num_threads(threads)
        detector = settings.load_detector()
        thresholds, models = detector.thresholds, detector.models
        with _opened(partial_path, settings, identity(detector, settings), restart) as partial:
            pending = _pending(items, partial, say)
            bar = _Progress(len(items), len(items) - len(pending), "evaluating", settings.chunks is not None, progress)
            scoring = time.perf_counter()
            try:
                for item in pending:
                    predictions = predict_item(detector, item, use_diarization=settings.use_diarization,
                                               chunks=settings.chunks)
                    partial.add(item, predictions)
                    bar.update(predictions)
            finally:
                bar.close()
            finished = time.perf_counter()
            collected = [partial.predictions(item) for item in items]
        where = {"engine": "sequential", "threads": threads}
    else:
        scratch = output_dir / ".dask-scratch"
        with dask_client(workers=workers, scheduler=scheduler, scratch=scratch) as client:
            # every worker loads its detector before the clock starts; they must all load the same models
            infos = client.gather([client.submit(detector_info, settings, workers=[address], pure=False)
                                   for address in client.nthreads()])
            thresholds, models, identified = infos[0]["thresholds"], infos[0]["models"], infos[0]["identity"]
            if any(info["identity"] != identified for info in infos):
                found = {address: info["identity"] for address, info in zip(client.nthreads(), infos, strict=True)}
                raise EngineError(f"the workers load different models: {found}; every worker needs the same "
                                  "model files at the same --data-dir")
            cores = sum(client.nthreads().values())
            where = {"engine": "dask", "scheduler": scheduler or "local", "workers": len(client.nthreads()),
                     "threads": cores}
            with _opened(partial_path, settings, identified, restart) as partial:
                pending = _pending(items, partial, say)
                description = f"evaluating (dask, {where['workers']} workers)"
                bar = _Progress(len(items), len(items) - len(pending), description, settings.chunks is not None,
                                progress)
                scoring = time.perf_counter()
                try:
                    _score_on_cluster(client, settings, pending, partial, bar, identified, window=max(16, 4 * cores))
                finally:
                    bar.close()
                finished = time.perf_counter()
                collected = [partial.predictions(item) for item in items]
    scored_now = len(pending)
    seconds = finished - scoring
    run = where | {
        "files": len(items), "files_scored_now": scored_now, "files_resumed": len(items) - scored_now,
        "startup_s": round(scoring - started, 3), "scoring_s": round(seconds, 3),
        "files_per_s": round(scored_now / seconds, 3) if scored_now and seconds > 0 else None,
    }
    return Outcome([p for stored in collected for p in stored], thresholds, models, run)


@contextmanager
def _opened(path: Path, settings: RunSettings, models: dict[str, str], restart: bool) -> Iterator[PartialResults]:
    partial = PartialResults(path, settings, models, restart=restart)
    try:
        yield partial
    finally:
        partial.close()


def _pending(items: list[AudioItem], partial: PartialResults, say: Callable[[str], None]) -> list[AudioItem]:
    seen: set[str] = set()
    pending = []
    for item in items:
        key = item_key(item)
        if key not in partial.done and key not in seen:
            pending.append(item)
            seen.add(key)
    if len(pending) < len(items):
        say(f"resuming from {partial.path}: {len(items) - len(pending)} of {len(items)} files already scored, "
            f"scoring {len(pending)}")
    return pending


def _score_on_cluster(client, settings: RunSettings, pending: list[AudioItem], partial: PartialResults,
                      bar: _Progress, models: dict[str, str], *, window: int) -> None:
    """Keep ``window`` files in flight; record each as it finishes."""
    from distributed import as_completed

    queue = iter(pending)
    futures: dict[Any, AudioItem] = {}

    def submit() -> Any:
        item = next(queue, None)
        if item is None:
            return None
        future = client.submit(predict_on_worker, settings, item, pure=False)
        futures[future] = item
        return future

    flowing = as_completed([future for future in (submit() for _ in range(window)) if future is not None])
    for future in flowing:
        item = futures.pop(future)
        worker_models, predictions = future.result()
        if worker_models != models:
            raise EngineError(f"a worker scored {item.path} with other models than the first worker: "
                               f"{worker_models} against {models}; every worker needs the same --data-dir")
        partial.add(item, predictions)
        bar.update(predictions)
        following = submit()
        if following is not None:
            flowing.add(following)
