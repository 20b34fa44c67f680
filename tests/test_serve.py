"""`separator serve`: the web page in headless Chromium, and its API's errors and results."""
import contextlib
import shutil
import socket
import threading
import time
import typing as tp
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import uvicorn
import yaml
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from separator import separate
from separator.data.synthetic import mix_stems, synthesize_track, write_wav
from separator.serve import (Service, create_app, get_parser, safe_file_name,
                             separation_options)
from tools import export

from .conftest import SOURCES

pytestmark = pytest.mark.usefixtures('one_thread')
SECONDS = 3.
SAMPLERATE = 44100
GARBAGE = b'garbage bytes, not audio at all ' * 64


@pytest.fixture(scope='module')
def repo(tiny_xp, tmp_path_factory) -> Path:
    """The tiny XP exported into a repository of its own."""
    cwd, sig = tiny_xp
    out = tmp_path_factory.mktemp('serve_repo')
    export.export_xp(sig, cwd / 'outputs' / 'xps', out)
    return out


@pytest.fixture(scope='module')
def song(tmp_path_factory) -> Path:
    """A 3 s synthetic song (float WAV, 44.1 kHz stereo)."""
    path = tmp_path_factory.mktemp('songs') / 'song.wav'
    stems = synthesize_track(np.random.default_rng(0), SECONDS, SAMPLERATE)
    write_wav(path, mix_stems(stems), SAMPLERATE)
    return path


def new_service(repo: Path, tmp_path: Path, **kwargs: tp.Any) -> Service:
    args = get_parser().parse_args(['--repo', str(repo), '-j', '1'])
    return Service(repo, separation_options(args), workdir=tmp_path, **kwargs)


@contextlib.contextmanager
def api_client(repo: Path, tmp_path: Path, **kwargs: tp.Any) -> tp.Iterator[TestClient]:
    """A client of the API of a new service; its files are removed at the end."""
    service = new_service(repo, tmp_path, **kwargs)
    try:
        yield TestClient(create_app(service))
    finally:
        service.close()
    assert not service.workdir.exists()


@pytest.fixture
def client(repo, tmp_path) -> tp.Iterator[TestClient]:
    with api_client(repo, tmp_path, max_upload_mb=2) as client:
        yield client


def wait_for_job(client: TestClient, job_id: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f'/api/jobs/{job_id}').json()
        if job['status'] in ('done', 'error', 'removed'):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")


def job_folders(client: TestClient) -> tp.List[Path]:
    return list(client.app.state.service.workdir.iterdir())


# ---------------------------------------------------------------- the API
def test_api_refuses_an_unknown_model(client, repo, song):
    sig = next(path.stem for path in repo.glob('*.th'))
    answer = client.post('/api/jobs', params={'model': 'nope', 'name': 'song.wav'},
                         content=song.read_bytes())
    assert answer.status_code == 404
    error = answer.json()['error']
    assert error.startswith("separator: error: No model 'nope' (") and f"Models in {repo}: " \
        f"{sig}." in error and '\n' not in error, error
    assert client.get('/api/models/nope').json() == {'error': error}
    assert job_folders(client) == []        # the upload is not kept


def test_api_refuses_a_file_over_the_limit(client):
    big = bytes(int(2.5 * 2 ** 20))
    expected = ("separator: error: big.wav is 2.5 MB, more than this server's limit of 2 MB "
                "(separator serve --max-upload-mb)")
    # Told by Content-Length (refused before reading), or found while reading a chunked body.
    for content in (big, iter([big[:2 ** 19]] * 5)):
        answer = client.post('/api/jobs', params={'model': 'any', 'name': 'big.wav'},
                             content=content)
        assert answer.status_code == 413
        assert answer.json()['error'] == expected
    assert job_folders(client) == []


def test_api_refuses_garbage_with_the_command_error(client, repo, tmp_path, monkeypatch,
                                                    capsys):
    sig = next(path.stem for path in repo.glob('*.th'))
    bad = tmp_path / 'bad.wav'
    bad.write_bytes(GARBAGE)
    monkeypatch.chdir(tmp_path)
    assert separate.main(['--repo', str(repo), '-n', sig, '-j', '1', 'bad.wav']) == 1
    err = capsys.readouterr().err
    # The error, until the command's summary line, on one line as the page shows it.
    command = ' '.join(err[err.index('separator: error:'):err.index('separator: 1 of')].split())
    answer = client.post('/api/jobs', params={'model': sig, 'name': 'bad.wav'},
                         content=GARBAGE)
    assert answer.status_code == 400
    # The command's line, naming the file as given (ffmpeg's part names it by its full path).
    assert answer.json()['error'] == command.replace(str(bad), 'bad.wav')
    assert 'Cannot read bad.wav: the file is corrupt or not audio' in command
    assert [path.name for path in job_folders(client)] == []


@pytest.fixture(scope='module')
def bag_repo(repo, tmp_path_factory) -> Path:
    """A repository with the tiny model and `pair`: a bag of it twice, each run its own way."""
    sig = next(path.stem for path in repo.glob('*.th'))
    out = tmp_path_factory.mktemp('bag_repo')
    shutil.copy(repo / f'{sig}.th', out)
    (out / 'pair.yaml').write_text(yaml.safe_dump({
        'models': [sig, sig], 'weights': [[1, 1, 1, 1], [1, 0, 2, 1]],
        'settings': [{}, {'overlap': 0.5, 'shifts': 0}]}))
    return out


@pytest.mark.parametrize('kind', ['model', 'bag'])
def test_api_separates_as_the_command(kind, repo, bag_repo, song, tmp_path, monkeypatch):
    """The stems of the page are those of `separator` (same streaming code, same defaults:
    one random shift drawn from seed 0; a bag's weights and settings), the progress counts
    every forward call, and the zip of the chosen stems removes the job's files once sent."""
    sig = next(path.stem for path in repo.glob('*.th'))
    name, repo = (sig, repo) if kind == 'model' else ('pair', bag_repo)
    with api_client(repo, tmp_path) as client:
        separate_and_download(client, name, kind, repo, song, tmp_path, monkeypatch)


def separate_and_download(client: TestClient, name: str, kind: str, repo: Path, song: Path,
                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    details = client.get(f'/api/models/{name}').json()
    assert details['sources'] == SOURCES and details['samplerate'] == SAMPLERATE
    assert details['kind'] == kind and len(details['models']) == (1 if kind == 'model' else 2)
    assert details['models'][0]['metrics'][0]['metric'] == 'nsdr'
    assert set(details['models'][0]['metrics'][0]['sources']) == set(SOURCES)
    answer = client.post('/api/jobs', params={'model': name, 'name': 'my song.wav'},
                         content=song.read_bytes())
    assert answer.status_code == 201, answer.text
    job = wait_for_job(client, answer.json()['id'])
    assert job['status'] == 'done' and job['stems'] == SOURCES, job
    tracked = client.app.state.service.get(job['id'])
    assert tracked.done == tracked.total > 1            # the bar ends at 100 %, no further

    monkeypatch.chdir(tmp_path)
    assert separate.main(['--repo', str(repo), '-n', name, '-j', '1', '-o', 'out',
                          str(song)]) == 0
    for stem in SOURCES:
        served = client.get(f"/api/jobs/{job['id']}/stems/{stem}.wav")
        assert served.headers['content-type'] == 'audio/wav'
        (tmp_path / 'served.wav').write_bytes(served.content)
        ours, rate = sf.read(tmp_path / 'served.wav', dtype='int16')
        theirs, _ = sf.read(tmp_path / 'out' / name / 'song' / f'{stem}.wav', dtype='int16')
        assert rate == SAMPLERATE and np.array_equal(ours, theirs), stem
    picture = client.get(f"/api/jobs/{job['id']}/stems/drums.png")
    assert picture.content.startswith(b'\x89PNG')

    answer = client.get(f"/api/jobs/{job['id']}/zip", params={'stems': 'bass,vocals'})
    assert answer.headers['content-disposition'].endswith("''my%20song.zip")
    (tmp_path / 'stems.zip').write_bytes(answer.content)
    with zipfile.ZipFile(tmp_path / 'stems.zip') as archive:
        assert archive.namelist() == ['my song/bass.wav', 'my song/vocals.wav']
    assert client.get(f"/api/jobs/{job['id']}").json()['removed'] == 'downloaded'
    assert job_folders(client) == []
    again = client.get(f"/api/jobs/{job['id']}/stems/bass.wav")
    assert again.status_code == 409
    assert again.json()['error'] == ("my song.wav: no stems to read, its files were removed "
                                     "(downloaded).")


def test_stems_expire(repo, song, tmp_path):
    with api_client(repo, tmp_path, expire_seconds=0.3) as client:
        sig = next(path.stem for path in repo.glob('*.th'))
        answer = client.post('/api/jobs', params={'model': sig, 'name': 'song.wav'},
                             content=song.read_bytes())
        job = wait_for_job(client, answer.json()['id'])
        assert job['status'] == 'done'
        deadline = time.time() + 10
        while job['status'] != 'removed' and time.time() < deadline:
            time.sleep(0.1)
            job = client.get(f"/api/jobs/{job['id']}").json()
        assert job['removed'] == 'expired'
        assert job_folders(client) == []


def test_serve_is_a_subcommand(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        separate.main(['serve', '--repo', str(tmp_path / 'none')])
    assert exit_info.value.code == 2
    assert f"--repo {tmp_path / 'none'}: no such folder" in capsys.readouterr().err


# ---------------------------------------------------------------- in a real browser
@pytest.fixture
def server(repo, tmp_path) -> tp.Iterator[tp.Tuple[str, Service]]:
    """The page served by uvicorn on a free port of 127.0.0.1, in a thread."""
    (tmp_path / 'work').mkdir()
    service = new_service(repo, tmp_path / 'work')
    config = uvicorn.Config(create_app(service), log_level='warning')
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f'http://127.0.0.1:{sock.getsockname()[1]}', service
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        service.close()


@pytest.fixture
def browser(tmp_path) -> tp.Iterator[webdriver.Chrome]:
    """Headless Chromium (Debian's chromium and chromium-driver), downloading into
    tmp_path/downloads."""
    options = webdriver.ChromeOptions()
    options.binary_location = '/usr/bin/chromium'
    for flag in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                 '--window-size=1100,1500', '--autoplay-policy=no-user-gesture-required'):
        options.add_argument(flag)
    (tmp_path / 'downloads').mkdir()
    options.add_experimental_option('prefs', {
        'download.default_directory': str(tmp_path / 'downloads'),
        'download.prompt_for_download': False})
    driver = webdriver.Chrome(options=options,
                              service=ChromeService('/usr/bin/chromedriver'))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, condition: tp.Callable[[], tp.Any],
         timeout: float = 30) -> tp.Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _: condition())


def downloaded(folder: Path, name: str) -> tp.Optional[Path]:
    """`folder/name` once Chromium has finished writing it."""
    path = folder / name
    partial = list(folder.glob('*.crdownload'))
    return path if path.exists() and not partial else None


def test_page_separates_plays_and_downloads(server, browser, repo, song, tmp_path):
    url, service = server
    sig = next(path.stem for path in repo.glob('*.th'))
    browser.get(url)
    info = wait(browser, lambda: browser.find_element(By.CSS_SELECTOR, '#model-info table'))
    text = browser.find_element(By.ID, 'model-info').text
    assert 'sources: drums, bass, other, vocals' in text and '44100 Hz' in text
    assert 'nsdr' in info.text

    browser.find_element(By.ID, 'files').send_keys(str(song))
    card = wait(browser, lambda: browser.find_element(
        By.CSS_SELECTOR, '.job[data-track="song.wav"][data-status="done"]'))
    assert card.find_element(By.CSS_SELECTOR, '.model-name').text == sig
    assert card.find_element(By.CSS_SELECTOR, '.status').text.startswith('separated in ')
    rows = wait(browser, lambda: card.find_elements(By.CSS_SELECTOR, '.stem'))
    assert [row.get_attribute('data-stem') for row in rows] == SOURCES
    for row in rows:             # every spectrogram is drawn
        picture = row.find_element(By.CSS_SELECTOR, 'img.spectrogram')
        wait(browser, lambda: browser.execute_script(
            'return arguments[0].complete && arguments[0].naturalWidth > 0', picture))

    audio = rows[3].find_element(By.TAG_NAME, 'audio')
    duration, paused = browser.execute_async_script("""
        const [audio, done] = arguments;
        audio.play().then(() => done([audio.duration, audio.paused]),
                          (error) => done([String(error), true]));""", audio)
    assert duration == pytest.approx(SECONDS, abs=0.01) and not paused

    bad = tmp_path / 'bad.wav'
    bad.write_bytes(GARBAGE)
    browser.find_element(By.ID, 'files').send_keys(str(bad))
    error = wait(browser, lambda: browser.find_element(
        By.CSS_SELECTOR, '.job[data-track="bad.wav"][data-status="error"] .error'))
    assert error.text.startswith("separator: error: Cannot read bad.wav: the file is corrupt "
                                 "or not audio (")
    assert 'Traceback' not in error.text and '\n' not in error.text
    assert card.get_attribute('data-status') == 'done'    # the song before is still there
    assert len(card.find_elements(By.CSS_SELECTOR, '.stem audio')) == 4

    downloads = tmp_path / 'downloads'
    rows[1].find_element(By.CSS_SELECTOR, 'a.download').click()
    bass = wait(browser, lambda: downloaded(downloads, 'song_bass.wav'))
    assert sf.info(str(bass)).frames == int(SECONDS * SAMPLERATE)

    card.find_element(By.CSS_SELECTOR, 'a.zip').click()
    archive = wait(browser, lambda: downloaded(downloads, 'song.zip'))
    with zipfile.ZipFile(archive) as stems:
        assert sorted(stems.namelist()) == sorted(f'song/{stem}.wav' for stem in SOURCES)
        for name in stems.namelist():
            with stems.open(name) as fin, contextlib.closing(sf.SoundFile(fin)) as wav:
                assert (wav.frames, wav.samplerate, wav.channels) == (
                    int(SECONDS * SAMPLERATE), SAMPLERATE, 2), name
    wait(browser, lambda: 'removed from the server' in card.find_element(
        By.CSS_SELECTOR, '.status').text)
    assert list(service.workdir.iterdir()) == []


def test_uploads_are_saved_under_plain_names():
    """A name sent by a client never leads out of the job's folder (nor its zip's)."""
    assert [safe_file_name(name) for name in ('../../etc/passwd', 'C:\\songs\\a b (live).mp3',
                                              '.hidden.wav', '-x.wav', '..', 'é.wav')] == \
        ['passwd', 'a b (live).mp3', 'hidden.wav', 'x.wav', 'track', '_.wav']
