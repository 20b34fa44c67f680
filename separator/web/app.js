// The page of `separator serve` (separator/serve.py holds the API it calls).
'use strict';

const MB = 1 << 20;
const POLL_MS = 500;
const FINISHED = ['done', 'error', 'removed'];
const state = {config: null, uploads: Promise.resolve()};

const $ = (selector, root = document) => root.querySelector(selector);

/** GET (or other) a JSON API; throw an Error with the server's one-line error. */
async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const status = `${response.status} ${response.statusText}`;
    throw new Error((body && body.error) || `separator: error: ${status} (${url})`);
  }
  return body;
}

function showError(message) {
  const line = $('#error');
  line.textContent = message || '';
  line.hidden = !message;
}

function duration(seconds) {
  seconds = Math.round(seconds);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes >= 10 || seconds % 60 === 0) return `${Math.round(seconds / 60)} min`;
  return `${minutes} min ${String(seconds % 60).padStart(2, '0')} s`;
}

// ------------------------------------------------------------------ models
async function loadModels() {
  const repo = state.config.repo;
  const {models} = await api('/api/models');
  const select = $('#model');
  select.replaceChildren(...models.map((name) => new Option(name, name)));
  if (!models.length) {
    showError(`separator: error: no models in ${repo}: export one with ` +
              `\`python -m tools.export SIG -o ${repo}\`, or pass --repo`);
    return;
  }
  await showModel();
}

async function showModel() {
  const info = $('#model-info');
  const name = $('#model').value;
  info.textContent = `Loading ${name}…`;
  try {
    const model = await api(`/api/models/${encodeURIComponent(name)}`);
    if ($('#model').value === name) info.replaceChildren(...describeModel(model));
  } catch (error) {
    info.replaceChildren(errorLine(error.message));
  }
}

function describeModel(model) {
  const channels = {1: 'mono', 2: 'stereo'}[model.channels] || `${model.channels} channels`;
  const summary = document.createElement('p');
  summary.className = 'summary';
  summary.textContent = [
    model.kind === 'bag' ? `bag of ${model.count} models` : 'model',
    `sources: ${model.sources.join(', ')}`,
    `${model.samplerate} Hz`, channels, `chunks of ${model.segment} s`,
  ].join(' · ');
  const parts = [summary];
  for (const member of model.models) {
    const title = document.createElement('p');
    title.className = 'member';
    const epochs = member.epochs == null ? '' : `, ${member.epochs} epoch(s)`;
    title.textContent = `${member.name} (${member.architecture || '?'}${epochs})`;
    parts.push(title);
    parts.push(member.metrics.length ? metricsTable(member.metrics, model.sources)
                                     : note('no test metrics in this package'));
  }
  return parts;
}

function note(text) {
  const span = document.createElement('p');
  span.className = 'hint';
  span.textContent = text;
  return span;
}

function metricsTable(rows, sources) {
  const table = document.createElement('table');
  table.className = 'metrics';
  const head = table.createTHead().insertRow();
  for (const text of ['test (dB)', 'all', ...sources]) {
    const cell = document.createElement('th');
    cell.textContent = text;
    head.appendChild(cell);
  }
  const body = table.createTBody();
  const number = (value) => (value == null ? '' : value.toFixed(2));
  for (const row of rows) {
    const line = body.insertRow();
    line.insertCell().textContent = row.metric;
    line.insertCell().textContent = number(row.all);
    for (const source of sources) line.insertCell().textContent = number(row.sources[source]);
  }
  return table;
}

function errorLine(message) {
  const line = document.createElement('p');
  line.className = 'error';
  line.textContent = message;
  return line;
}

// ------------------------------------------------------------------ songs
function addFiles(files) {
  const model = $('#model').value;
  if (!model) {
    showError('separator: error: no model to separate with: export one into the repository first');
    return;
  }
  showError('');
  for (const file of files) {
    const card = newCard(file.name, model);
    state.uploads = state.uploads.then(() => upload(file, model, card));
  }
}

function newCard(track, model) {
  const card = $('#job-template').content.firstElementChild.cloneNode(true);
  card.dataset.track = track;
  $('.track', card).textContent = track;
  $('.model-name', card).textContent = model;
  $('.status', card).textContent = 'waiting to upload';
  $('.remove', card).addEventListener('click', () => removeCard(card));
  $('.zip', card).addEventListener('click', (event) => {
    if (!event.currentTarget.href) return;
    card.dataset.zipped = '1';     // the server removes the files once it is sent
    setTimeout(() => watch(card), 300);
  });
  $('#jobs').prepend(card);
  return card;
}

function failCard(card, message) {
  card.classList.add('failed');
  card.dataset.status = 'error';
  $('.status', card).textContent = 'failed';
  $('.progress-row', card).hidden = true;
  const line = $('.error', card);
  line.textContent = message;
  line.hidden = false;
}

function tooLarge(file) {
  // The server's message (serve.Service.too_large), said before sending the file.
  return `separator: error: ${file.name} is ${(file.size / MB).toFixed(1)} MB, more than ` +
         `this server's limit of ${state.config.max_upload_mb} MB ` +
         '(separator serve --max-upload-mb)';
}

/** Send one song; resolves when the server has answered (queued or refused). */
function upload(file, model, card) {
  if (file.size > state.config.max_upload_bytes) {
    failCard(card, tooLarge(file));
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    const query = new URLSearchParams({model, name: file.name});
    request.open('POST', `/api/jobs?${query}`);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        const percent = Math.round(100 * event.loaded / event.total);
        $('.status', card).textContent = `uploading ${percent}%`;
      }
    };
    request.onload = () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch (error) {
        body = null;
      }
      if (request.status === 201 && body) {
        card.dataset.job = body.id;
        render(card, body);
        watch(card);
      } else {
        failCard(card, (body && body.error) ||
                 `separator: error: upload of ${file.name} failed (${request.status})`);
      }
      resolve();
    };
    request.onerror = () => {
      failCard(card, `separator: error: upload of ${file.name} failed: ` +
                     'the server could not be reached');
      resolve();
    };
    request.send(file);
  });
}

/** Poll a job until it is done, failed or removed. */
async function watch(card) {
  if (card.watching || !card.dataset.job) return;
  card.watching = true;
  try {
    for (;;) {
      let job;
      try {
        job = await api(`/api/jobs/${card.dataset.job}`);
      } catch (error) {
        failCard(card, error.message);
        return;
      }
      render(card, job);
      const waitingForRemoval = job.status === 'done' && card.dataset.zipped;
      if (FINISHED.includes(job.status) && !waitingForRemoval) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    card.watching = false;
  }
}

function render(card, job) {
  card.dataset.status = job.status;
  const status = $('.status', card);
  const progress = $('progress', card);
  const eta = $('.eta', card);
  progress.value = job.fraction;
  eta.textContent = '';
  if (job.status === 'queued') {
    status.textContent = job.position ? `queued (${job.position} song(s) before it)`
                                      : 'queued, next';
  } else if (job.status === 'separating') {
    const percent = Math.floor(100 * job.fraction);
    status.textContent = job.fraction >= 1 ? 'writing the stems…' : `separating… ${percent}%`;
    eta.textContent = job.eta == null ? 'estimating the time left…'
                                      : `about ${duration(job.eta)} left`;
  } else if (job.status === 'done') {
    status.textContent = `separated in ${job.seconds.toFixed(1)} s`;
    $('.progress-row', card).hidden = true;
    if (!card.dataset.stems) showStems(card, job);
  } else if (job.status === 'error') {
    failCard(card, job.error);
  } else if (job.status === 'removed') {
    card.classList.add('gone');
    $('.progress-row', card).hidden = true;
    $('.actions', card).hidden = true;
    const why = {downloaded: 'the zip was downloaded', expired: 'they expired',
                 cancelled: 'the song was removed'}[job.removed] || job.removed;
    status.textContent = `Its files were removed from the server (${why}).`;
  }
}

function showStems(card, job) {
  card.dataset.stems = job.stems.join(',');
  const base = `/api/jobs/${job.id}/stems`;
  const rows = job.stems.map((stem) => {
    const row = $('#stem-template').content.firstElementChild.cloneNode(true);
    row.dataset.stem = stem;
    $('.stem-name', row).textContent = stem;
    $('audio', row).src = `${base}/${encodeURIComponent(stem)}.wav`;
    const link = $('.download', row);
    link.href = `${base}/${encodeURIComponent(stem)}.wav?download=1`;
    link.title = `Download ${stem}.wav`;
    const picture = $('.spectrogram', row);
    picture.src = `${base}/${encodeURIComponent(stem)}.png`;
    picture.alt = `spectrogram of ${stem}`;
    $('.keep', row).addEventListener('change', () => updateZip(card));
    return row;
  });
  $('.stems', card).replaceChildren(...rows);
  $('.actions', card).hidden = false;
  updateZip(card);
}

function updateZip(card) {
  const chosen = [...card.querySelectorAll('.stem')]
    .filter((row) => $('.keep', row).checked).map((row) => row.dataset.stem);
  const link = $('.zip', card);
  link.classList.toggle('disabled', !chosen.length);
  const query = new URLSearchParams({stems: chosen.join(',')});
  if (chosen.length) {
    link.href = `/api/jobs/${card.dataset.job}/zip?${query}`;
  } else {
    link.removeAttribute('href');
  }
}

async function removeCard(card) {
  if (card.dataset.job && !['removed', 'error'].includes(card.dataset.status)) {
    try {
      await api(`/api/jobs/${card.dataset.job}`, {method: 'DELETE'});
    } catch (error) {
      // Gone already (expired, or the server restarted): nothing left to remove.
    }
  }
  card.remove();
}

// ------------------------------------------------------------------ start
function setUpDrop() {
  const zone = $('#drop');
  $('#files').addEventListener('change', (event) => {
    addFiles([...event.target.files]);
    event.target.value = '';
  });
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    addFiles([...event.dataTransfer.files]);
  });
}

async function init() {
  setUpDrop();
  $('#model').addEventListener('change', showModel);
  try {
    state.config = await api('/api/config');
    $('#repo').textContent = state.config.repo;
    const expiry = duration(60 * state.config.expire_minutes);
    $('#limits').textContent = `Up to ${state.config.max_upload_mb} MB per song. A song's ` +
      `files leave the server when its zip is downloaded, or ${expiry} after it is separated.`;
    await loadModels();
  } catch (error) {
    showError(error.message);
  }
}

init();
