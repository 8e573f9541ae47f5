"""Exports as background jobs: started, watched and fetched over the API.

At most ``api.exports.max_running`` exports run at once; the others wait in order. A job
belongs to the key that started it: another key is told no such job exists, since its file
is masked for the starter's role. Spines are either named inside ``api.exports.spines``
or uploaded by the caller (``upload:<id>``, usable by the uploading key only, kept under
``api.exports.dir/uploads`` while the server runs). Files are written under
``api.exports.dir``, named by random ids, never by anything a caller sent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fabric.entities import InvalidRequestError
from fabric.errors import EntityNotFoundError, FabricError
from fabric.features.export import FORMATS, export_view
from fabric.project import Project

__all__ = ["SPINE_FORMATS", "ExportJob", "ExportJobs", "JobNotReadyError", "Upload"]

#: Formats of an uploaded spine, by the upload's Content-Type.
SPINE_FORMATS = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet"}


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


class JobNotReadyError(FabricError):
    """The job's file is asked for before the job succeeded."""

    code = "conflict"


@dataclass
class ExportJob:
    """One export and how far it got."""

    id: str
    owner: str
    view: str
    role: str
    format: str
    spine: str | None
    out: Path
    state: str = "queued"
    stage: str | None = None
    rows_done: int = 0
    rows_total: int | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    rows: int | None = None
    _stage_started: float = 0.0

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
    """The jobs of one server process."""

    def __init__(self, project: Project) -> None:
        # Directories and limits are the ones the server started with; each job exports
        # from the project it was started on (a reload does not move running jobs).
        settings = project.config.api.exports
        self.out_dir = project.config.resolve(settings.dir)
        self.spine_dir = project.config.resolve(settings.spines)
        self.workers = settings.workers
        self._pool = ThreadPoolExecutor(settings.max_running, thread_name_prefix="fabric-export")
        self.max_spine_bytes = settings.max_spine_bytes
        self._jobs: dict[str, ExportJob] = {}
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def new_upload(self, owner: str, fmt: str) -> Upload:
        """A new, empty spine file of ``owner`` (``csv`` or ``parquet``) to write into.

        Raises:
            InvalidRequestError: another format.
        """
        if fmt not in SPINE_FORMATS.values():
            raise InvalidRequestError(f"an uploaded spine is {' or '.join(SPINE_FORMATS.values())}")
        directory = self.out_dir / "uploads"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        upload_id = secrets.token_hex(12)
        path = directory / f"{upload_id}.{fmt}"
        # Spines can hold personal keys: readable by the server's user only.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        upload = Upload(f"upload:{upload_id}", owner, path)
        with self._lock:
            self._uploads[upload.name] = upload
        return upload

    def drop_upload(self, upload: Upload) -> None:
        """Forget an upload and delete its file (a failed or refused upload)."""
        with self._lock:
            self._uploads.pop(upload.name, None)
        upload.path.unlink(missing_ok=True)

    def start(
        self,
        project: Project,
        owner: str,
        role: str,
        view: str,
        spine: str | None,
        fmt: str = "parquet",
    ) -> ExportJob:
        """Queue an export of ``view`` over ``spine`` (a path inside the spines directory;
        None: every entity as of now), masked for ``role``.

        Raises:
            EntityNotFoundError: unknown view.
            InvalidRequestError: unknown format, or a spine outside the spines directory or
                missing.
        """
        if view not in project.views():
            raise EntityNotFoundError(f"unknown feature view (views: {', '.join(project.views())})")
        if fmt not in FORMATS:
            raise InvalidRequestError(f"format must be one of {', '.join(FORMATS)}")
        spine_path = None if spine is None else self._spine(spine, owner)
        job_id = secrets.token_hex(12)
        job = ExportJob(job_id, owner, view, role, fmt, spine, self.out_dir / f"{job_id}.{fmt}")
        with self._lock:
            self._jobs[job_id] = job
        self._pool.submit(self._run, project, job, spine_path)
        return job

    def _spine(self, name: str, owner: str) -> Path:
        """A spine named by a caller: one it uploaded, or a file inside the spines
        directory."""
        if name.startswith("upload:"):
            with self._lock:
                upload = self._uploads.get(name)
            if upload is None or upload.owner != owner:
                raise InvalidRequestError("no uploaded spine of this key has this name")
            return upload.path
        if not name or "\x00" in name or len(name) > 512:
            raise InvalidRequestError("spine must name a file in the spines directory")
        base = self.spine_dir.resolve()
        path = (base / name).resolve()
        if base not in path.parents or not path.is_file():
            raise InvalidRequestError(
                "spine must name an existing file in the spines directory (api.exports.spines)"
            )
        return path

    def get(self, owner: str, job_id: str) -> ExportJob:
        """The job, if ``owner`` started it.

        Raises:
            EntityNotFoundError: no such job of this key.
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise EntityNotFoundError("no export job with this id")
        return job

    def file(self, owner: str, job_id: str) -> ExportJob:
        """The job, once its file is complete.

        Raises:
            EntityNotFoundError: no such job of this key.
            JobNotReadyError: the job has not succeeded (yet).
        """
        job = self.get(owner, job_id)
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

        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            report = export_view(
                project,
                job.view,
                job.out,
                spine=spine,
                fmt=job.format,
                role=job.role,
                workers=self.workers,
                progress=progress,
            )
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
        job.finished_at = datetime.now(UTC).isoformat()

    def close(self) -> None:
        """Stop taking jobs (running ones finish) and delete the uploaded spines."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            uploads, self._uploads = list(self._uploads.values()), {}
        for upload in uploads:
            with contextlib.suppress(OSError):
                upload.path.unlink()
