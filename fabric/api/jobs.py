"""Exports as background jobs: started, watched and fetched over the API.

At most ``api.exports.max_running`` exports run at once; the others wait in order. A job
belongs to the key that started it: another key is told no such job exists, since its file
is masked for the starter's role. Spines are either named inside ``api.exports.spines``
or uploaded by the caller (``upload:<id>``, usable by the uploading key only, kept under
``api.exports.dir/uploads``). Files are written under ``api.exports.dir``, named by random
ids, never by anything a caller sent, readable by the server's user only.

What callers send is bounded before it is decoded (:mod:`fabric.features.spine`): a spine is
checked as it is uploaded and again as an export over it starts. Each key holds at most
``api.exports.max_bytes_per_key`` of uploads and export files. An export is given what its
key has left as it starts and stops, its file deleted, as soon as the file passes that (two
exports of one key running at once may each write up to it: the one to finish second then
fails when its files are counted). Every file is deleted
``api.exports.keep_hours`` after it was last written: swept as the server starts, as jobs
start and finish, and every few minutes. The sweep deletes only files named as fabric names
them, so a directory shared with anything else loses nothing else.

``api.exports.dir`` and ``api.exports.spines`` may be ``s3://bucket/prefix``
(:mod:`fabric.objects`): export files are published there whole and streamed from there,
the sweep deletes there, and a spine named there is fetched for its job into a directory of
this process and deleted when the job ends; uploads then stay in that directory. A storage
that does not answer fails a job with a message that names neither bucket nor endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from fabric.errors import (
    BudgetExceededError,
    EntityNotFoundError,
    ExpiredError,
    FabricError,
    InvalidRequestError,
    JobNotReadyError,
    ObjectStorageError,
    QuotaExceededError,
)
from fabric.features.formats import FORMATS, export_format
from fabric.features.spine import SpineLimits, check_spine
from fabric.files import private_dir
from fabric.objects import Location, S3Url, fetch, list_objects, object_size, remove, size_of
from fabric.project import Project
from fabric.services.export import export_view

__all__ = [
    "SPINE_FORMATS",
    "ExportJob",
    "ExportJobs",
    "Upload",
]

log = logging.getLogger("fabric.api")

#: Formats of an uploaded spine, by the upload's Content-Type.
SPINE_FORMATS = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet"}

#: Files the sweep may delete: what jobs write (and their temporary files), and uploads.
_JOB_FILE = re.compile(
    rf"\.?[0-9a-f]{{24}}\.({'|'.join(FORMATS)})(\.manifest\.json)?(\.[^/]+\.tmp)?"
)
_UPLOAD_FILE = re.compile(rf"[0-9a-f]{{24}}\.({'|'.join(SPINE_FORMATS.values())})")
#: Longest pause between two sweeps.
_SWEEP_SECONDS = 300.0


@dataclass(frozen=True)
class Upload:
    """A spine a caller uploaded: its name for exports (``upload:<id>``) and its file."""

    name: str
    owner: str
    path: Path


#: The pass that counts toward a job's progress, and what it is called in the status.
_STAGES = {
    "export: reading spine": "reading spine",
    "export: computing features": "computing features",
    "export: writing": "writing",
}


@dataclass
class ExportJob:
    """One export and how far it got."""

    id: str
    owner: str
    view: str
    role: str
    format: str
    spine: str | None
    out: Location
    spine_path: Path | None = None
    #: whether ``spine_path`` is a copy fetched for this job (deleted when it ends)
    fetched: bool = False
    state: str = "queued"
    stage: str | None = None
    rows_done: int = 0
    rows_total: int | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    rows: int | None = None
    #: bytes of the file and its manifest, counted toward the owner's quota
    bytes: int = 0
    #: when it finished, by the jobs' clock: records are forgotten a while after
    finished: float | None = None
    _stage_started: float = 0.0

    @property
    def files(self) -> tuple[Location, Location]:
        """The export's file and its manifest."""
        return self.out, self.out.with_name(self.out.name + ".manifest.json")

    def status(self) -> dict[str, Any]:
        """What `GET /v1/exports/{job}` answers: state, stage, rows done, rows/s and ETA."""
        elapsed = time.monotonic() - self._stage_started if self._stage_started else 0.0
        rate = self.rows_done / elapsed if elapsed > 0 and self.rows_done else None
        eta = None
        if rate and self.rows_total is not None and self.state == "running":
            eta = max(0.0, (self.rows_total - self.rows_done) / rate)
        return {
            "job": self.id,
            "view": self.view,
            "role": self.role,
            "format": self.format,
            "state": self.state,
            "stage": self.stage,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "rows_per_s": None if rate is None else round(rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "rows": self.rows,
            "error": self.error,
        }


class ExportJobs:
    """The jobs of one server process.

    ``clock`` gives the time in seconds since 1970, as files' modification times are: the
    sweep compares the two.
    """

    def __init__(self, project: Project, *, clock: Callable[[], float] = time.time) -> None:
        # Directories and limits are the ones the server started with; each job exports
        # from the project it was started on (a reload does not move running jobs).
        settings = project.config.api.exports
        self.out_dir = project.config.locate(settings.dir)
        self.spine_dir = project.config.locate(settings.spines)
        # With files or spines on S3, what must be local (uploads as they arrive, spines
        # fetched to be read) is kept in a directory of this process, deleted on close.
        self._local: Path | None = None
        if isinstance(self.out_dir, S3Url) or isinstance(self.spine_dir, S3Url):
            self._local = Path(tempfile.mkdtemp(prefix="fabric-exports-"))
        self._uploads_dir = (
            self.out_dir / "uploads"
            if isinstance(self.out_dir, Path)
            else Path(self._local or ".") / "uploads"
        )
        self.workers = settings.workers
        self._pool = ThreadPoolExecutor(settings.max_running, thread_name_prefix="fabric-export")
        self.max_spine_bytes = settings.max_spine_bytes
        self.limits = SpineLimits(
            settings.max_spine_rows,
            settings.max_spine_decoded_bytes,
            settings.max_spine_value_bytes,
        )
        self.quota = settings.max_bytes_per_key
        self.keep_hours = settings.keep_hours
        self._clock = clock
        self._jobs: dict[str, ExportJob] = {}
        self._uploads: dict[str, Upload] = {}
        #: bytes written so far, by upload name
        self._upload_bytes: dict[str, int] = {}
        #: uploads deleted by the sweep: name -> (owner, when), to say so for a while
        self._expired: dict[str, tuple[str, float]] = {}
        #: bytes of uploads and export files each key holds
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self.sweep()
        self._stopped = threading.Event()
        interval = min(_SWEEP_SECONDS, max(1.0, self.keep_hours * 3600 / 4))
        self._sweeper = threading.Thread(
            target=self._sweep_every, args=(interval,), name="fabric-export-sweep", daemon=True
        )
        self._sweeper.start()

    # -- uploads ---------------------------------------------------------------------------

    def new_upload(self, owner: str, fmt: str) -> Upload:
        """A new, empty spine file of ``owner`` (``csv`` or ``parquet``) to write into.

        Raises:
            InvalidRequestError: another format.
        """
        if fmt not in SPINE_FORMATS.values():
            raise InvalidRequestError(f"an uploaded spine is {' or '.join(SPINE_FORMATS.values())}")
        directory = self._uploads_dir
        private_dir(directory)
        upload_id = secrets.token_hex(12)
        path = directory / f"{upload_id}.{fmt}"
        # Spines can hold personal keys: readable by the server's user only.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        upload = Upload(f"upload:{upload_id}", owner, path)
        with self._lock:
            self._uploads[upload.name] = upload
            self._upload_bytes[upload.name] = 0
        return upload

    def grow_upload(self, upload: Upload, size: int) -> None:
        """Count ``size`` more bytes of ``upload`` toward its key's quota, before they are
        written.

        Raises:
            QuotaExceededError: the key would hold more than ``api.exports.max_bytes_per_key``.
        """
        with self._lock:
            self._reserve(upload.owner, size)
            self._upload_bytes[upload.name] = self._upload_bytes.get(upload.name, 0) + size

    def check_upload(self, upload: Upload) -> None:
        """Check an uploaded spine's columns and what it decodes to (it is refused at once,
        not when an export reads it).

        Raises:
            SpineError: a column problem, or not a readable spine.
            SpineTooLargeError: past a limit of ``api.exports``.
        """
        check_spine(upload.path, self.limits, name=upload.name)

    def drop_upload(self, upload: Upload) -> None:
        """Forget an upload and delete its file (a failed or refused upload)."""
        with self._lock:
            self._uploads.pop(upload.name, None)
            self._release(upload.owner, self._upload_bytes.pop(upload.name, 0))
        upload.path.unlink(missing_ok=True)

    # -- jobs ------------------------------------------------------------------------------

    def start(
        self,
        project: Project,
        owner: str,
        role: str,
        view: str,
        spine: str | None,
        fmt: str = "parquet",
    ) -> ExportJob:
        """Queue an export of ``view`` over ``spine`` (a path inside the spines directory,
        or an upload of ``owner``; None: every entity as of now), masked for ``role``.

        The spine is checked before the job is queued: its columns against the view, and
        what it decodes to.

        Raises:
            EntityNotFoundError: unknown view; ExpiredError: an upload deleted after
                ``keep_hours``.
            InvalidRequestError: unknown format, or a spine outside the spines directory or
                missing.
            SpineError, SpineTooLargeError: the spine cannot be exported (column named), or
                is past a limit.
        """
        features = [f.name for f in project.view(view).features]
        job_id = secrets.token_hex(12)
        out = self.out_dir / f"{job_id}.{fmt}"
        export_format(out.name, fmt)
        self.sweep()
        spine_path = None if spine is None else self._spine(spine, owner)
        # A spine fetched from S3 is this job's own copy, deleted when it ends.
        fetched = (
            spine is not None
            and not spine.startswith("upload:")
            and isinstance(self.spine_dir, S3Url)
        )
        if spine_path is not None:
            try:
                check_spine(spine_path, self.limits, name=spine, reserved=features)
            except BaseException:
                if fetched:
                    shutil.rmtree(spine_path.parent, ignore_errors=True)
                raise
        job = ExportJob(job_id, owner, view, role, fmt, spine, out, spine_path, fetched)
        with self._lock:
            self._jobs[job_id] = job
        self._pool.submit(self._run, project, job, spine_path)
        return job

    def _spine(self, name: str, owner: str) -> Path:
        """A spine named by a caller: one it uploaded, or a file inside the spines
        directory (on S3: fetched into this process's directory, deleted when the job
        ends)."""
        if name.startswith("upload:"):
            with self._lock:
                upload = self._uploads.get(name)
                expired = self._expired.get(name)
            if upload is None and expired is not None and expired[0] == owner:
                raise ExpiredError(
                    f"the uploaded spine {name} expired: it was deleted "
                    f"{self.keep_hours:g} hours after it was uploaded (api.exports.keep_hours); "
                    "upload it again"
                )
            if upload is None or upload.owner != owner:
                raise InvalidRequestError("no uploaded spine of this key has this name")
            return upload.path
        if not name or "\x00" in name or len(name) > 512:
            raise InvalidRequestError("spine must name a file in the spines directory")
        if isinstance(self.spine_dir, S3Url):
            return self._fetch_spine(self.spine_dir, name)
        base = self.spine_dir.resolve()
        path = (base / name).resolve()
        if base not in path.parents or not path.is_file():
            raise InvalidRequestError(
                "spine must name an existing file in the spines directory (api.exports.spines)"
            )
        return path

    def _fetch_spine(self, prefix: S3Url, name: str) -> Path:
        """The spine ``name`` under ``prefix``, fetched to a file of this process."""
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise InvalidRequestError(
                "spine must name an existing file in the spines directory (api.exports.spines)"
            )
        url = prefix / name
        if object_size(url) is None:
            raise InvalidRequestError(
                "spine must name an existing file in the spines directory (api.exports.spines)"
            )
        assert self._local is not None  # made whenever a directory is on S3
        return fetch(url, self._local)

    def get(self, owner: str, job_id: str) -> ExportJob:
        """The job, if ``owner`` started it.

        Raises:
            EntityNotFoundError: no such job of this key.
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise EntityNotFoundError("no export job with this id")
        self._expire_if_gone(job)  # swept by another server process sharing the directory
        return job

    def file(self, owner: str, job_id: str) -> ExportJob:
        """The job, once its file is complete.

        Raises:
            EntityNotFoundError: no such job of this key.
            ExpiredError: its file was deleted after ``api.exports.keep_hours``.
            JobNotReadyError: the job has not succeeded (yet).
        """
        job = self.get(owner, job_id)
        if job.state == "expired":
            raise ExpiredError(
                f"export job {job.id} expired: its file was deleted after "
                f"api.exports.keep_hours ({self.keep_hours:g} h); start the export again"
            )
        if job.state != "succeeded":
            raise JobNotReadyError(f"the export is {job.state}; its file is not ready")
        return job

    def _run(self, project: Project, job: ExportJob, spine: Path | None) -> None:
        job.state = "running"
        job.started_at = datetime.now(UTC).isoformat()

        def progress(stage: str, advance: int, total: int | None) -> None:
            name = _STAGES.get(stage, stage)
            if job.stage != name:
                job.stage, job.rows_done = name, 0
                job._stage_started = time.monotonic()
            job.rows_done += advance
            job.rows_total = total

        with self._lock:
            held = self._held.get(job.owner, 0)
        try:
            if isinstance(self.out_dir, Path):
                private_dir(self.out_dir)
            if held >= self.quota:
                raise QuotaExceededError(self._over_quota(held, "nothing is left under"))
            report = export_view(
                project,
                job.view,
                job.out,
                spine=spine,
                fmt=job.format,
                role=job.role,
                workers=self.workers,
                progress=progress,
                limits=self.limits,
                budget=self.quota - held,
            )
            self._keep(job)
        except BudgetExceededError as exc:
            stopped = (
                "the export was stopped, and its file deleted, when it passed the "
                f"{exc.budget:,} bytes left under"
            )
            job.state, job.error = "failed", self._over_quota(held, stopped)
        except ObjectStorageError as exc:
            # The storage's address and keys are the server's business: the log has them.
            log.warning("export job %s: %s", job.id, str(exc).splitlines()[0])
            job.state = "failed"
            job.error = "the export's storage refused it or did not answer; try again later"
        except FabricError as exc:
            # Spine errors name the file: the caller's name for it, not the server's path.
            message = str(exc).splitlines()[0]
            if spine is not None and job.spine is not None:
                message = message.replace(str(spine), job.spine)
            job.state, job.error = "failed", message
        except Exception as exc:  # a fault of ours: its type only, never its text
            job.state, job.error = "failed", f"internal error ({type(exc).__name__})"
        else:
            job.state, job.rows = "succeeded", report.rows
        finally:
            if job.state != "succeeded":
                for where in job.files:
                    with contextlib.suppress(ObjectStorageError):
                        remove(where)
            if job.fetched and spine is not None:
                shutil.rmtree(spine.parent, ignore_errors=True)
            # What the export decoded goes back to the system, not to Arrow's pool.
            pa.default_memory_pool().release_unused()
        job.finished_at = datetime.now(UTC).isoformat()
        job.finished = self._clock()
        self.sweep()

    def _keep(self, job: ExportJob) -> None:
        """Count a finished export's files toward its key's quota.

        Raises:
            QuotaExceededError: they would take the key past it (the caller deletes them).
        """
        size = sum(size_of(where) or 0 for where in job.files)
        with self._lock:
            self._reserve(job.owner, size)
            job.bytes = size

    # -- bytes held and files kept ---------------------------------------------------------

    def _reserve(self, owner: str, size: int) -> None:
        """Add ``size`` bytes to what ``owner`` holds, within its quota (lock held)."""
        held = self._held.get(owner, 0)
        if held + size > self.quota:
            raise QuotaExceededError(self._over_quota(held, f"{size:,} more would pass"))
        self._held[owner] = held + size

    def _over_quota(self, held: int, what: str) -> str:
        """Say that a key holding ``held`` bytes is at its quota (``what``: how, ending
        where the setting is named)."""
        return (
            f"this key holds {held:,} bytes of uploaded spines and export files; {what} "
            f"api.exports.max_bytes_per_key ({self.quota:,} bytes). They are deleted "
            f"{self.keep_hours:g} hours after they are written (api.exports.keep_hours)"
        )

    def _release(self, owner: str, size: int) -> None:
        """Take ``size`` bytes off what ``owner`` holds (lock held)."""
        left = self._held.get(owner, 0) - size
        if left > 0:
            self._held[owner] = left
        else:
            self._held.pop(owner, None)

    def _expire_if_gone(self, job: ExportJob) -> None:
        """Mark a succeeded job whose file was deleted as expired, and release its bytes."""
        if job.state != "succeeded":
            return
        try:
            if size_of(job.out) is not None:
                return
        except ObjectStorageError:
            return  # the storage does not answer: nothing is known to be gone
        with self._lock:
            if job.state == "succeeded":
                job.state = "expired"
                self._release(job.owner, job.bytes)
                job.bytes = 0

    def sweep(self) -> int:
        """Delete the files (of fabric's naming) last written more than
        ``api.exports.keep_hours`` ago, and forget what they were; return how many.

        Uploads that a queued or running export reads are kept until it ends.
        """
        now = self._clock()
        cutoff = now - self.keep_hours * 3600
        with self._lock:
            reading = {
                j.spine_path for j in self._jobs.values() if j.state in ("queued", "running")
            }
        removed = 0
        if isinstance(self.out_dir, S3Url):
            removed += self._sweep_objects(self.out_dir, cutoff)
        for directory, pattern in (
            (self.out_dir, _JOB_FILE),
            (self._uploads_dir, _UPLOAD_FILE),
        ):
            if not isinstance(directory, Path):
                continue
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not pattern.fullmatch(entry.name) or Path(entry.path) in reading:
                    continue
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue  # swept by another server process first, or not ours to delete
        self._forget(now)
        return removed

    def _sweep_objects(self, prefix: S3Url, cutoff: float) -> int:
        """The sweep of export files on S3: those of fabric's naming written before
        ``cutoff``."""
        removed = 0
        try:
            for url, _, mtime in list_objects(prefix):
                if _JOB_FILE.fullmatch(url.name) and mtime < cutoff:
                    remove(url)
                    removed += 1
        except ObjectStorageError as exc:
            log.warning("sweeping export files: %s", str(exc).splitlines()[0])
        return removed

    def _forget(self, now: float) -> None:
        """Mark jobs and uploads whose files are gone; forget records older than twice
        ``keep_hours`` (an expired job is reported as such for ``keep_hours`` more)."""
        horizon = now - 2 * self.keep_hours * 3600
        with self._lock:
            jobs = list(self._jobs.values())
            uploads = list(self._uploads.values())
        for job in jobs:
            self._expire_if_gone(job)
        with self._lock:
            for upload in uploads:
                if not upload.path.exists() and upload.name in self._uploads:
                    del self._uploads[upload.name]
                    self._release(upload.owner, self._upload_bytes.pop(upload.name, 0))
                    self._expired[upload.name] = (upload.owner, now)
            for job_id, job in list(self._jobs.items()):
                if job.finished is not None and job.finished < horizon:
                    del self._jobs[job_id]
            for name, (_, when) in list(self._expired.items()):
                if when < now - self.keep_hours * 3600:
                    del self._expired[name]

    def _sweep_every(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            with contextlib.suppress(Exception):  # a sweep that failed is tried again
                self.sweep()

    def close(self) -> None:
        """Stop taking jobs (running ones finish) and delete the uploaded spines and the
        files of this server's jobs: nobody can ask for them once it has stopped."""
        self._stopped.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            uploads, self._uploads = list(self._uploads.values()), {}
            finished = [j for j in self._jobs.values() if j.state == "succeeded"]
        for where in [u.path for u in uploads] + [p for j in finished for p in j.files]:
            with contextlib.suppress(OSError, ObjectStorageError):
                remove(where)
        if self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)
