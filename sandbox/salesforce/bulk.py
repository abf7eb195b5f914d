"""Bulk API 2.0 ingest jobs over the emulator's :class:`~sandbox.salesforce.org.Org`.

A job is created ``Open`` (object, operation ``insert``/``update``/``upsert``/``delete``, CSV),
takes one CSV upload, and is closed with ``UploadComplete``. It is then processed row by row
through the same Org rules as the REST API (a row that breaks a rule fails alone, as in Salesforce)
and ends ``JobComplete`` with ``numberRecordsProcessed`` / ``numberRecordsFailed`` and the
``successfulResults`` (``sf__Id``, ``sf__Created``, the row) and ``failedResults`` (``sf__Id``,
``sf__Error``, the row) CSVs. ``Aborted`` is allowed before processing.

CSV values are typed by the field: ``true``/``false`` for checkboxes, numbers for numbers; an empty
cell leaves a field unchanged and ``#N/A`` clears it, as Bulk API 2.0 reads them.

Processing happens when the job is closed (``auto_process``), or when the emulator is told to
(:meth:`BulkJobs.process_pending`), so a client's polling can be tested step by step.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from .org import Org, sf_datetime
from .schema import SfError

OPERATIONS = frozenset({"insert", "update", "upsert", "delete"})
DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
MAX_UPLOAD_BYTES = 150 * 1024 * 1024


@dataclass
class IngestJob:
    id: str
    object: str
    operation: str
    created: float
    delimiter: str = "COMMA"
    line_ending: str = "LF"
    external_id_field: str | None = None
    state: str = "Open"
    data: bytes | None = None
    processed: int = 0
    failed: int = 0
    successes: list[list[str]] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    error_message: str | None = None


class BulkJobs:
    def __init__(self, org: Org, auto_process: bool = True):
        self.org = org
        self.auto_process = auto_process
        self.jobs: dict[str, IngestJob] = {}

    def _require(self, job_id: str) -> IngestJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        return job

    def create(self, body: Any) -> IngestJob:
        if not isinstance(body, dict):
            raise SfError("JSON_PARSER_ERROR", "The request body must be a JSON object.")
        operation = body.get("operation")
        if operation not in OPERATIONS:
            raise SfError("INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        if body.get("contentType", "CSV") != "CSV":
            raise SfError("INVALIDJOB", "InvalidJob : Only CSV content is supported")
        delimiter = body.get("columnDelimiter", "COMMA")
        if delimiter not in DELIMITERS or body.get("lineEnding", "LF") not in {"LF", "CRLF"}:
            raise SfError("INVALIDJOB", "InvalidJob : Invalid columnDelimiter or lineEnding")
        try:
            sobject = self.org.sobject(str(body.get("object")))
        except SfError:
            raise SfError("INVALIDJOB", f"InvalidJob : Invalid object: {body.get('object')}") from None
        external = body.get("externalIdFieldName")
        if operation == "upsert" and not external:
            raise SfError("INVALIDJOB", "InvalidJob : External ID was blank for upsert")
        job_id = self.org.new_key("750")
        job = IngestJob(
            job_id,
            sobject.name,
            str(operation),
            self.org.now(),
            delimiter,
            body.get("lineEnding", "LF"),
            external,
        )
        self.jobs[job_id] = job
        return job

    def upload(self, job_id: str, data: bytes) -> None:
        job = self._require(job_id)
        if job.state != "Open" or job.data is not None:
            raise SfError("INVALIDJOBSTATE", "Job is not in Open state or already has data", status=409)
        if len(data) > MAX_UPLOAD_BYTES:
            raise SfError("INVALIDBATCH", "The upload is larger than 150 MB")
        job.data = data

    def set_state(self, job_id: str, state: Any) -> dict[str, Any]:
        """The job's info as the state change left it (``UploadComplete`` answers before processing,
        as Salesforce's does; the next read sees the outcome)."""
        job = self._require(job_id)
        if state == "UploadComplete" and job.state == "Open":
            job.state = "UploadComplete"
            shown = self.info(job)
            if self.auto_process:
                self._process(job)
            return shown
        if state == "Aborted" and job.state in {"Open", "UploadComplete"}:
            job.state = "Aborted"
            return self.info(job)
        raise SfError("INVALIDJOBSTATE", f"Cannot change job state from {job.state} to {state}", status=409)

    def delete(self, job_id: str) -> None:
        job = self._require(job_id)
        if job.state in {"UploadComplete", "InProgress"}:
            raise SfError("INVALIDJOBSTATE", "Cannot delete a job that is being processed", status=409)
        del self.jobs[job_id]

    def process_pending(self) -> int:
        """Process every closed job now; how many were processed."""
        pending = [job for job in self.jobs.values() if job.state == "UploadComplete"]
        for job in pending:
            self._process(job)
        return len(pending)

    def _process(self, job: IngestJob) -> None:
        text = (job.data or b"").decode("utf-8-sig", errors="replace")
        rows = list(csv.reader(io.StringIO(text), delimiter=DELIMITERS[job.delimiter]))
        if not rows:
            job.state, job.error_message = "Failed", "InvalidBatch : Empty CSV file"
            return
        job.header, body = rows[0], [r for r in rows[1:] if r]
        for row in body:
            job.processed += 1
            try:
                record_id, created = self._apply(job, row)
            except SfError as err:
                job.failed += 1
                job.failures.append(
                    [_id_of(job.header, row), f"{err.code}:{err.message}:{','.join(err.fields)}--", *row]
                )
            else:
                job.successes.append([record_id, "true" if created else "false", *row])
        job.state = "JobComplete"

    def _apply(self, job: IngestJob, row: list[str]) -> tuple[str, bool]:
        if len(row) != len(job.header):
            raise SfError("INVALID_FIELD", "The row has a different number of columns than the header")
        t = self.org.sobject(job.object)
        values: dict[str, Any] = {}
        for name, cell in zip(job.header, row, strict=True):
            if cell == "":
                continue
            f = t.field(name)
            if f is None:
                raise SfError("INVALID_FIELD", f"No such column '{name}' on entity '{t.name}'", [name])
            values[f.name] = None if cell == "#N/A" else _cell(f.kind, cell)
        if job.operation == "insert":
            return self.org.create(t.name, values), True
        if job.operation == "upsert":
            named = t.field(job.external_id_field or "")
            key = named.name if named else job.external_id_field or ""
            matches = self.org.find_external(t.name, key, str(values.get(key) or ""))
            if len(matches) > 1:
                raise SfError("DUPLICATE_EXTERNAL_ID", f"{key}: more than one record found for external id field")
            if matches:
                values.pop(key, None)
                self.org.update(t.name, matches[0], values)
                return matches[0], False
            return self.org.create(t.name, values), True
        record_id = str(values.pop("Id", "") or "")
        if not record_id:
            raise SfError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        if job.operation == "delete":
            self.org.delete(t.name, record_id)
        else:
            self.org.update(t.name, record_id, values)
        return self.org.require(t.name, record_id)["Id"] if job.operation != "delete" else record_id, False

    def info(self, job: IngestJob) -> dict[str, Any]:
        stamp = sf_datetime(job.created)
        out: dict[str, Any] = {
            "id": job.id,
            "operation": job.operation,
            "object": job.object,
            "createdById": self.org.integration_user_id,
            "createdDate": stamp,
            "systemModstamp": stamp,
            "state": job.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": 61.0,
            "jobType": "V2Ingest",
            "lineEnding": job.line_ending,
            "columnDelimiter": job.delimiter,
            "numberRecordsProcessed": job.processed,
            "numberRecordsFailed": job.failed,
            "retries": 0,
            "totalProcessingTime": 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
        }
        if job.external_id_field:
            out["externalIdFieldName"] = job.external_id_field
        if job.state == "Open":
            out["contentUrl"] = f"services/data/v61.0/jobs/ingest/{job.id}/batches"
        if job.error_message:
            out["errorMessage"] = job.error_message
        return out

    def results(self, job_id: str, kind: str) -> str:
        job = self._require(job_id)
        if job.state not in {"JobComplete", "Failed", "Aborted"}:
            raise SfError("INVALIDJOBSTATE", "Results are not available until the job is complete", status=409)
        lead, rows = {
            "successfulResults": (["sf__Id", "sf__Created"], job.successes),
            "failedResults": (["sf__Id", "sf__Error"], job.failures),
            "unprocessedrecords": ([], job.unprocessed),
        }[kind]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*lead, *job.header])
        writer.writerows(rows)
        return out.getvalue()


def _id_of(header: list[str], row: list[str]) -> str:
    for name, cell in zip(header, row, strict=False):
        if name.casefold() == "id":
            return cell
    return ""


def _cell(kind: str, cell: str) -> Any:
    if kind == "boolean":
        if cell.lower() in {"true", "1"}:
            return True
        if cell.lower() in {"false", "0"}:
            return False
        return cell  # refused by the Org as the wrong type
    if kind in {"int", "double"}:
        try:
            return int(cell) if kind == "int" else float(cell)
        except ValueError:
            return cell
    return cell
