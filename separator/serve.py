"""`separator serve`: a local web page to separate songs with the released models.

    separator serve [--repo release_models] [--port 8000] [--host 127.0.0.1]
        [--max-upload-mb 200] [--expire-minutes 60] [-d cpu] [-j N] [--shifts 1]

The page (separator/web/) lists the models and bags of the repository (sources, sample rate
and the test metrics their packages carry), takes one or more songs, queues them and shows
the progress of each with an ETA, then plays every stem, shows its spectrogram and
downloads the stems one by one or the chosen ones as a zip.

It runs the `separator` command's own code: models are loaded by `pretrained.get_model`
(safe loading), a song is read by `track_io` (any format the command reads) and separated
by `separate.separate_track` (the streaming code; stems written atomically), with the
command's defaults. Its errors are the command's, one line each, in the page.

One worker thread separates the queued songs one after another; the requests are served
meanwhile. Uploads and stems live in a temporary folder: a job's files are removed once its
zip is downloaded, when the page removes it, or `--expire-minutes` after it finished; all of
them when the server stops. Served on 127.0.0.1 unless --host says otherwise.

The API the page uses (errors: JSON `{"error": "separator: error: ..."}`):
    GET  /api/config                         limits, repository
    GET  /api/models                         names; GET /api/models/NAME: its details
    POST /api/jobs?model=NAME&name=FILE      body: the song's bytes -> a job
    GET  /api/jobs/ID                        status, fraction done, eta (s), stems
    GET  /api/jobs/ID/stems/STEM.wav         a stem (?download=1: as an attachment)
    GET  /api/jobs/ID/stems/STEM.png         its spectrogram
    GET  /api/jobs/ID/zip?stems=A,B          the chosen stems as a zip; then removes the job
    DELETE /api/jobs/ID                      cancel or remove a job
"""
import argparse
import collections
import contextlib
import dataclasses
import queue
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
import typing as tp
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from . import separate
from .apply import count_calls
from .atomic import atomic_file
from .data.audio import AudioError
from .pretrained import (DEFAULT_REPO, BagOfModels, ModelLoadingError, bag_members, get_model,
                         list_models)
from .states import safe_load
from .threads import set_threads
from .track_io import open_track

WEB = Path(__file__).resolve().parent / 'web'
MB = 1 << 20
BASELINES = ('mixture', 'silence')   # the trivial estimates the test metrics also score


class RequestError(ValueError):
    """A request the server refuses: the one-line message for the page, an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def error_line(error: tp.Union[BaseException, str]) -> str:
    """The command's `separator: error: ...` line, on one line."""
    return 'separator: error: ' + ' '.join(str(error).split())


# ---------------------------------------------------------------- models
def metrics_table(metrics: tp.Mapping[str, tp.Any], sources: tp.Sequence[str]
                  ) -> tp.List[tp.Dict[str, tp.Any]]:
    """The test metrics of a package as rows {metric, all, sources: {source: value}}: one per
    metric (`nsdr`, and `nsdr_drums`... per source), without the baselines' scores."""
    rows: tp.Dict[str, tp.Dict[str, tp.Any]] = {}
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or any(base in key for base in BASELINES):
            continue
        metric, source = key, None
        for name in sources:
            if key.endswith(f'_{name}'):
                metric, source = key[:-len(name) - 1], name
        row = rows.setdefault(metric, {'metric': metric, 'all': None, 'sources': {}})
        if source is None:
            row['all'] = float(value)
        else:
            row['sources'][source] = float(value)
    return list(rows.values())


def _package_summary(path: Path, sources: tp.Sequence[str]) -> tp.Dict[str, tp.Any]:
    """Signature, architecture, epochs and test metrics of the package `path`."""
    package = safe_load(path)
    return {'name': path.stem, 'sig': package.get('sig'), 'architecture': package.get('model'),
            'epochs': package.get('epochs'),
            'metrics': metrics_table(package.get('metrics') or {}, sources)}


class ModelStore:
    """The models of a repository, loaded by `pretrained.get_model` onto `device` and kept
    for reuse (the last `keep` ones used), and their details for the page."""

    def __init__(self, repo: Path, device: str = 'cpu', keep: int = 2):
        self.repo = Path(repo)
        self.device = device
        self.keep = keep
        self.models: tp.OrderedDict[tp.Tuple[str, float], torch.nn.Module] = \
            collections.OrderedDict()
        self.details: tp.Dict[tp.Tuple[str, float], tp.Dict[str, tp.Any]] = {}
        self.lock = threading.Lock()

    def names(self) -> tp.List[str]:
        return list_models(self.repo)

    def _key(self, name: str) -> tp.Tuple[str, float]:
        """The model and the time it was written: a file written again is loaded again."""
        times = [path.stat().st_mtime for path in (self.repo / f'{name}.th',
                                                   self.repo / f'{name}.yaml') if path.is_file()]
        return name, max(times, default=0.)

    def get(self, name: str) -> torch.nn.Module:
        """The model or bag `name`; a ModelLoadingError says why it cannot be loaded."""
        with self.lock:
            key = self._key(name)
            if key not in self.models:
                self.models[key] = get_model(name, self.repo).to(self.device)
                while len(self.models) > self.keep:
                    self.models.popitem(last=False)
            self.models.move_to_end(key)
            return self.models[key]

    def describe(self, name: str) -> tp.Dict[str, tp.Any]:
        """What the page shows of a model: sources, sample rate, channels, segment, and
        signature and test metrics of each exported package in it."""
        model = self.get(name)
        key = self._key(name)
        if key not in self.details:
            members = [sub for sub, _ in bag_members(model)]
            packages = ([self.repo / f'{name}.th'] if not isinstance(model, BagOfModels)
                        else self._bag_packages(name))
            self.details[key] = {
                'name': name, 'kind': 'bag' if isinstance(model, BagOfModels) else 'model',
                'sources': list(model.sources), 'samplerate': model.samplerate,
                'channels': model.audio_channels, 'segment': float(model.segment),
                'models': [_package_summary(path, model.sources) for path in packages],
                'count': len(members)}
        return self.details[key]

    def _bag_packages(self, name: str) -> tp.List[Path]:
        # The bag was loaded already: its file is valid.
        config = yaml.safe_load((self.repo / f'{name}.yaml').read_text())
        return [self.repo / f'{sig}.th' for sig in config['models']]


# ---------------------------------------------------------------- jobs
class JobCancelled(Exception):
    """Raised in the worker when the page removes a job while it separates."""


@dataclasses.dataclass
class Job:
    """One uploaded song and its separation."""
    id: str
    track: str                 # the file name the user gave
    model: str
    folder: Path               # input/ and stems/ live here
    input: Path
    status: str = 'uploading'  # uploading, queued, separating, done, error, removed
    length: int = 0            # frames at the model's sample rate
    total: int = 1             # forward calls planned (`count_calls`)
    done: int = 0
    created: float = dataclasses.field(default_factory=time.time)
    started: tp.Optional[float] = None
    finished: tp.Optional[float] = None
    error: tp.Optional[str] = None
    removed: tp.Optional[str] = None   # why: downloaded, expired, cancelled
    stems: tp.List[str] = dataclasses.field(default_factory=list)
    cancelled: bool = False

    def update(self, count: int = 1) -> None:
        """A forward call is done (called as a progress bar by `separate._Progress`)."""
        if self.cancelled:
            raise JobCancelled()
        self.done += count

    @property
    def base(self) -> str:
        """The name of the song in the files it downloads (ordinary characters only)."""
        return self.input.stem or 'track'

    @property
    def stem_folder(self) -> Path:
        return self.folder / 'stems'

    def stem_path(self, stem: str) -> Path:
        if stem not in self.stems:
            raise RequestError(f"{self.track} has no stem {stem!r}; it has "
                               f"{', '.join(self.stems)}.", 404)
        return self.stem_folder / f'{stem}.wav'

    def eta(self) -> tp.Optional[float]:
        """Seconds left, from the pace of the forward calls so far."""
        if self.status != 'separating' or not self.done or self.started is None:
            return None
        elapsed = time.time() - self.started
        return max(0., elapsed / self.done * (self.total - self.done))

    def as_json(self, position: int = 0) -> tp.Dict[str, tp.Any]:
        """What the page polls; `position`: the songs queued before this one."""
        done = self.status == 'done'
        seconds = self.finished - self.started if self.finished and self.started else None
        return {'id': self.id, 'track': self.track, 'model': self.model,
                'status': self.status, 'position': position, 'eta': self.eta(),
                'fraction': 1. if done else min(1., self.done / max(1, self.total)),
                'seconds': seconds, 'error': self.error, 'removed': self.removed,
                'stems': list(self.stems) if done else []}


class _Tracked(separate._Progress):
    """The command's progress wrapper, advancing a job, with the model's sources: what
    `separate_track` reads of a model."""

    def __init__(self, model: torch.nn.Module, job: Job):
        super().__init__(model, job)
        self.sources = list(model.sources)


def tracked_model(model: torch.nn.Module, job: Job) -> torch.nn.Module:
    """`model` with each forward call counted in `job` (for a bag: the call of each of its
    models); the loaded model itself is left untouched."""
    if not isinstance(model, BagOfModels):
        return _Tracked(model, job)
    return BagOfModels([_Tracked(sub, job) for sub in model.models], model.weights, None,
                       model.settings).eval()


def planned_calls(model: torch.nn.Module, length: int, args: argparse.Namespace) -> int:
    """The forward calls `separate_track` makes on a `length`-frame song (its bar's total)."""
    return sum(count_calls(sub, length, args.segment, settings.get('overlap', args.overlap),
                           settings.get('shifts', args.shifts), not args.no_split,
                           args.batch_size, args.chunking)
               for sub, settings in bag_members(model))


def track_name(name: str) -> str:
    """The file name the user gave, without the folders a browser may send."""
    return Path(name.replace('\\', '/')).name or 'track'


def safe_file_name(name: str) -> str:
    """The name an upload is saved under: its base name, with only ordinary characters (its
    extension kept: ffmpeg reads some formats better with it)."""
    base = re.sub(r'[^A-Za-z0-9._ ()+-]', '_', track_name(name)).strip()
    base = base.lstrip('.-')
    return base or 'track'


# ---------------------------------------------------------------- spectrograms
FREQ_TICKS = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]


def spectrogram_png(wav_path: Path, png_path: Path, width: int = 720, height: int = 170,
                    rows: int = 240) -> None:
    """Draw the log-frequency spectrogram (dB, 80 dB range) of a stem into `png_path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    data, rate = sf.read(str(wav_path), dtype='float32', always_2d=True)
    mono = torch.from_numpy(data.mean(axis=1))
    n_fft = 2048
    if len(mono) < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - len(mono)))
    hop = max(256, len(mono) // 1500)
    spec = torch.stft(mono, n_fft, hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs()
    decibels = 20 * torch.log10(spec + 1e-8)
    decibels = decibels.clamp(min=float(decibels.max()) - 80).numpy()
    # Rows at log-spaced frequencies from 30 Hz to Nyquist: a musical picture.
    nyquist = rate / 2
    freqs = np.geomspace(30, nyquist, rows)
    bins = np.clip(np.round(freqs / nyquist * (n_fft // 2)).astype(int), 0, n_fft // 2)
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.07, 0.22, 0.92, 0.74))
    duration = data.shape[0] / rate
    axes.imshow(decibels[bins], origin='lower', aspect='auto', cmap='magma',
                extent=(0, duration, 0, rows))
    ticks = [f for f in FREQ_TICKS if 30 <= f <= nyquist]
    axes.set_yticks([np.interp(np.log(f), np.log(freqs), np.arange(rows)) for f in ticks])
    axes.set_yticklabels([f'{f // 1000}k' if f >= 1000 else str(f) for f in ticks],
                         fontsize=7)
    axes.tick_params(axis='x', labelsize=7)
    axes.set_xlabel('seconds', fontsize=7, labelpad=1)
    with atomic_file(png_path, 'wb') as fout:
        figure.savefig(fout, format='png')


# ---------------------------------------------------------------- the service
class Service:
    """The jobs, their queue, the worker that separates them and the janitor that removes
    expired ones. Thread-safe: the web app calls it from its request threads."""

    def __init__(self, repo: Path, options: argparse.Namespace,
                 max_upload_mb: float = 200, expire_seconds: float = 3600,
                 workdir: tp.Optional[Path] = None):
        self.store = ModelStore(repo, options.device)
        self.options = options
        self.max_upload_bytes = int(max_upload_mb * MB)
        self.max_upload_mb = max_upload_mb
        self.expire_seconds = expire_seconds
        self.workdir = Path(tempfile.mkdtemp(prefix='separator-serve-', dir=workdir))
        self.jobs: tp.Dict[str, Job] = {}
        self.lock = threading.RLock()
        self.queue: 'queue.Queue[tp.Optional[Job]]' = queue.Queue()
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name='separator-worker',
                                       daemon=True)
        self.janitor = threading.Thread(target=self._sweep, name='separator-janitor',
                                        daemon=True)
        self.worker.start()
        self.janitor.start()

    # ------------------------------------------------ jobs
    def new_job(self, model: str, name: str) -> Job:
        """A job folder for an upload of `name` to separate with `model`."""
        job_id = secrets.token_hex(8)
        folder = self.workdir / job_id
        (folder / 'input').mkdir(parents=True)
        job = Job(job_id, track_name(name), model, folder,
                  folder / 'input' / safe_file_name(name))
        with self.lock:
            self.jobs[job_id] = job
        return job

    def too_large(self, name: str, size: float) -> RequestError:
        return RequestError(error_line(
            f"{name} is {size / MB:.1f} MB, more than this server's limit of "
            f"{self.max_upload_mb:g} MB (separator serve --max-upload-mb)"), 413)

    def check_and_queue(self, job: Job) -> None:
        """Load the job's model and open its song as the command does, then queue it: a
        model that cannot be loaded or a file that is not audio is refused here, with the
        command's error, before it waits in the queue."""
        try:
            model = self.store.get(job.model)
        except ModelLoadingError as error:
            known = self.store.names()
            raise RequestError(error_line(error), 404 if job.model not in known else 400)
        try:
            with contextlib.ExitStack() as stack:
                _, job.length = open_track(job.input, model.samplerate, model.audio_channels,
                                           stack)
        except AudioError as error:
            raise RequestError(self.user_error(job, error)) from None
        with self.lock:
            job.status = 'queued'
        self.queue.put(job)

    def user_error(self, job: Job, error: tp.Union[BaseException, str]) -> str:
        """The command's error line, naming the file as the user gave it, not as saved."""
        return error_line(str(error).replace(str(job.input.absolute()), job.track)
                          .replace(str(job.input), job.track))

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(f"No job {job_id!r} on this server (it was removed, or the "
                               f"server restarted): upload the song again.", 404)
        return job

    def job_json(self, job: Job) -> tp.Dict[str, tp.Any]:
        with self.lock:
            waiting = [other for other in self.jobs.values() if other.status == 'queued']
            position = sum(1 for other in waiting if other.created < job.created)
            return job.as_json(position)

    def finished_job(self, job_id: str) -> Job:
        """A job whose stems are there to be read."""
        job = self.get(job_id)
        if job.status != 'done':
            reason = {'removed': f"its files were removed ({job.removed})",
                      'error': 'it failed'}.get(job.status, 'it is not separated yet')
            raise RequestError(f"{job.track}: no stems to read, {reason}.", 409)
        return job

    def remove(self, job: Job, reason: str) -> None:
        """Remove the files of `job`; a job being separated stops at its next chunk."""
        with self.lock:
            if job.status == 'removed':
                return
            job.cancelled = True
            if job.status == 'separating':
                job.removed = reason    # the worker removes the files when it stops
                return
            job.status, job.removed = 'removed', reason
        shutil.rmtree(job.folder, ignore_errors=True)

    # ------------------------------------------------ results
    def spectrogram(self, job: Job, stem: str) -> Path:
        png = job.stem_folder / f'{stem}.png'
        if not png.exists():
            spectrogram_png(job.stem_path(stem), png)
        return png

    def zip_stems(self, job: Job, stems: tp.Sequence[str]) -> Path:
        """The chosen stems of `job` as TRACK/STEM.wav in a zip file, written atomically."""
        paths = [job.stem_path(stem) for stem in stems]
        if not paths:
            raise RequestError(f"{job.track}: choose at least one stem to download.")
        target = job.folder / f'{job.base}.zip'
        with atomic_file(target, 'wb') as fout:
            with zipfile.ZipFile(fout, 'w', zipfile.ZIP_STORED) as archive:
                for stem, path in zip(stems, paths):
                    archive.write(path, f'{job.base}/{stem}.wav')
        return target

    # ------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            self._separate(job)

    def _separate(self, job: Job) -> None:
        with self.lock:
            if job.status != 'queued' or job.cancelled:
                return
            job.status = 'separating'
        try:
            model = self.store.get(job.model)
            runner = tracked_model(model, job)
            job.total = planned_calls(model, job.length, self.options)
            job.started = time.time()
            written = separate.separate_track(runner, job.input, job.stem_folder,
                                              self.options)
            job.stems = [path.stem for path in written]
            outcome = 'done'
        except JobCancelled:
            outcome = 'removed'
        except (ModelLoadingError, AudioError, OSError) as error:
            outcome, job.error = 'error', self.user_error(job, error)
        except torch.OutOfMemoryError as error:
            outcome, job.error = 'error', self.user_error(
                job, f"out of memory on {job.input} ({error}); try a smaller --segment, "
                f"--shifts 0, or -d cpu")
        except Exception as error:    # a bug: its traceback on the server, a line in the page
            traceback.print_exc()
            outcome, job.error = 'error', self.user_error(
                job, f"separating {job.input} failed: {type(error).__name__}: {error}")
        with self.lock:
            job.finished = time.time()
            if job.cancelled:       # removed by the page or the server while it ran
                outcome, job.removed = 'removed', job.removed or 'cancelled'
            job.status = outcome
        if outcome == 'removed':
            shutil.rmtree(job.folder, ignore_errors=True)
        else:
            job.input.unlink(missing_ok=True)   # the upload is no longer needed

    # ------------------------------------------------ janitor
    def _sweep(self) -> None:
        period = min(60., max(0.05, self.expire_seconds / 4))
        while not self.stopping.wait(period):
            self.expire()

    def expire(self, now: tp.Optional[float] = None) -> None:
        """Remove the files of the jobs finished more than `expire_seconds` ago."""
        now = time.time() if now is None else now
        with self.lock:
            old = [job for job in self.jobs.values()
                   if job.status in ('done', 'error') and job.finished is not None
                   and now - job.finished > self.expire_seconds]
        for job in old:
            self.remove(job, 'expired')

    def close(self) -> None:
        """Stop the threads (after the song being separated, if any) and remove every
        file."""
        self.stopping.set()
        with self.lock:
            for job in self.jobs.values():
                job.cancelled = True
        self.queue.put(None)
        self.worker.join(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------- the web app
def create_app(service: Service) -> tp.Any:
    """The FastAPI app of `service`: the page and its API (module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool

    @contextlib.asynccontextmanager
    async def lifespan(_app: tp.Any) -> tp.AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title='separator', lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def refused(_request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({'error': str(error)}, status_code=error.status)

    @app.get('/', include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / 'index.html')

    app.mount('/static', StaticFiles(directory=WEB), name='static')

    @app.get('/api/config')
    def config() -> dict:
        return {'repo': str(service.store.repo), 'max_upload_bytes': service.max_upload_bytes,
                'max_upload_mb': service.max_upload_mb,
                'expire_minutes': service.expire_seconds / 60}

    @app.get('/api/models')
    def models() -> dict:
        return {'models': service.store.names()}

    @app.get('/api/models/{name}')
    def model_details(name: str) -> dict:
        try:
            return service.store.describe(name)
        except ModelLoadingError as error:
            raise RequestError(error_line(error),
                               404 if name not in service.store.names() else 400) from None

    @app.post('/api/jobs')
    async def upload(request: Request, model: str, name: str) -> JSONResponse:
        declared = request.headers.get('content-length')
        if declared and declared.isdigit() and int(declared) > service.max_upload_bytes:
            raise service.too_large(track_name(name), int(declared))
        job = service.new_job(model, name)
        try:
            await _receive(request, job)
            await run_in_threadpool(service.check_and_queue, job)
        except BaseException:
            service.remove(job, 'refused')
            with service.lock:
                service.jobs.pop(job.id, None)
            raise
        return JSONResponse(service.job_json(job), status_code=201)

    async def _receive(request: Request, job: Job) -> None:
        size = 0
        with open(job.input, 'wb') as fout:
            async for chunk in request.stream():
                size += len(chunk)
                if size > service.max_upload_bytes:
                    raise service.too_large(job.track, size)
                fout.write(chunk)
        if size == 0:
            raise RequestError(error_line(f"{job.track} is empty: choose an audio file."))

    @app.get('/api/jobs/{job_id}')
    def job_status(job_id: str) -> dict:
        return service.job_json(service.get(job_id))

    @app.delete('/api/jobs/{job_id}')
    def remove_job(job_id: str) -> dict:
        job = service.get(job_id)
        service.remove(job, 'cancelled')
        return service.job_json(job)

    @app.get('/api/jobs/{job_id}/stems/{stem}.wav')
    def stem_audio(job_id: str, stem: str, download: bool = False) -> FileResponse:
        job = service.finished_job(job_id)
        name = f'{job.base}_{stem}.wav'
        return FileResponse(job.stem_path(stem), media_type='audio/wav', filename=name,
                            content_disposition_type='attachment' if download else 'inline')

    @app.get('/api/jobs/{job_id}/stems/{stem}.png')
    def stem_spectrogram(job_id: str, stem: str) -> FileResponse:
        job = service.finished_job(job_id)
        return FileResponse(service.spectrogram(job, stem), media_type='image/png')

    @app.get('/api/jobs/{job_id}/zip')
    def stems_zip(job_id: str, stems: str = '') -> FileResponse:
        job = service.finished_job(job_id)
        chosen = [stem for stem in stems.split(',') if stem] if stems else list(job.stems)
        path = service.zip_stems(job, chosen)
        return FileResponse(path, media_type='application/zip', filename=path.name,
                            background=BackgroundTask(service.remove, job, 'downloaded'))

    return app


# ---------------------------------------------------------------- main
def get_parser() -> argparse.ArgumentParser:
    command = separate.get_parser().parse_args(['track'])    # the command's defaults
    parser = argparse.ArgumentParser(
        prog='separator serve',
        description="A local web page to separate songs with the released models.")
    parser.add_argument('--repo', type=Path, default=DEFAULT_REPO,
                        help="folder of the released models (default: %(default)s)")
    parser.add_argument('--host', default='127.0.0.1',
                        help="address to serve on (default: %(default)s, this machine only; "
                        "0.0.0.0 lets anyone on the network upload songs)")
    parser.add_argument('--port', type=int, default=8000, help="(default: %(default)s)")
    parser.add_argument('--max-upload-mb', type=float, default=200,
                        help="largest song accepted, in MB (default: %(default)s)")
    parser.add_argument('--expire-minutes', type=float, default=60,
                        help="remove a song's files this long after it is separated, if its "
                        "zip was not downloaded (default: %(default)s)")
    parser.add_argument('-d', '--device', default=command.device,
                        help="cpu or cuda (default: %(default)s)")
    parser.add_argument('-j', '--jobs', type=int, default=None,
                        help="torch CPU threads (default: as the `separator` command)")
    parser.add_argument('--shifts', type=int, default=command.shifts,
                        help="random shifts, as the command's (default: %(default)s)")
    parser.add_argument('--overlap', type=float, default=command.overlap,
                        help="overlap between chunks (default: %(default)s)")
    return parser


def separation_options(args: argparse.Namespace) -> argparse.Namespace:
    """The `separator` command's options with the server's settings: one WAV per stem."""
    options = separate.get_parser().parse_args(['track'])
    options.filename = '{stem}.{ext}'
    options.device, options.jobs = args.device, args.jobs
    options.shifts, options.overlap = args.shifts, args.overlap
    return options


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        parser.error("--port must be in 1-65535")
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    if args.expire_minutes <= 0:
        parser.error("--expire-minutes must be positive")
    if args.shifts < 0:
        parser.error("--shifts must be >= 0")
    if not 0 <= args.overlap < 1:
        parser.error("--overlap must be in [0, 1)")
    if args.jobs is not None and args.jobs < 1:
        parser.error("-j must be >= 1")
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error("-d cuda: no CUDA device is available; use -d cpu")
    if not args.repo.is_dir():
        parser.error(f"--repo {args.repo}: no such folder; export models into it with "
                     f"`python -m tools.export SIG -o {args.repo}`")


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    import uvicorn
    parser = get_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    set_threads(args.jobs)
    service = Service(args.repo, separation_options(args), args.max_upload_mb,
                      args.expire_minutes * 60)
    names = service.store.names()
    print(f"separator serve: {len(names)} model(s) in {args.repo}; open "
          f"http://{'localhost' if args.host == '127.0.0.1' else args.host}:{args.port}/ "
          f"(Ctrl-C to stop)", file=sys.stderr)
    if args.host not in ('127.0.0.1', 'localhost', '::1'):
        print(f"warning: serving on {args.host}: anyone who can reach it may upload songs",
              file=sys.stderr)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level='warning')
    return 0


if __name__ == '__main__':
    sys.exit(main())
