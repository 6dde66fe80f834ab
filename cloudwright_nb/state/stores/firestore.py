"""`firestore://PROJECT[/DATABASE]`: records and runs as Firestore documents.

Layout, one document per record, under a per-application document whose id is a hash:

    cloudwright/{app}                                 sealed app name, key fingerprints
    cloudwright/{app}/cw_state/{id}                   a state value
    cloudwright/{app}/cw_runs/{run_id}                a run: scheduling fields, sealed details
    cloudwright/{app}/cw_runs/{run_id}/cw_context/{id}   a value in a run's context

Every record contains `blob` (bytes), `expires_at` (a timestamp, the TTL field) and `v` (the schema
version). Reads drop expired records themselves, because Firestore's TTL deletion can run a day
late.

The store speaks to Firestore through the GAPIC client that ships with google-cloud-firestore
rather than its high-level wrapper: a transaction then begins inline with its first read, so it
costs one BatchGetDocuments and one Commit instead of three calls.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import grpc
from google.api_core import exceptions as google_errors
from google.cloud.firestore_v1.services.firestore import FirestoreClient
from google.cloud.firestore_v1.services.firestore.transports import FirestoreGrpcTransport
from google.cloud.firestore_v1.types import ArrayValue as _ArrayValue
from google.cloud.firestore_v1.types import (
    BatchGetDocumentsRequest,
    CommitRequest,
    Cursor,
    Document,
    DocumentMask,
    ListDocumentsRequest,
    Precondition,
    RunAggregationQueryRequest,
    RunQueryRequest,
    StructuredAggregationQuery,
    StructuredQuery,
    TransactionOptions,
    Value,
    Write,
)

from ...errors import ConfigurationError, ConflictError, StoreError
from .base import AppRow, Record, RunRow, Store, T, Transaction, now

log = logging.getLogger("cloudwright_nb")

SCHEMA_VERSION = 1
ROOT = "cloudwright"
STATE, RUNS, CONTEXT = "cw_state", "cw_runs", "cw_context"
OTHER, RECORDS = "cloudwright_namespaces", "cw_records"
TTL_COLLECTION_GROUPS = (STATE, RUNS, CONTEXT, RECORDS)
# The emulator meets contention with lock waits and ABORTED, as production Firestore does.
# Enough attempts, with jittered backoff, that a handful of contending writers all get through.
MAX_ATTEMPTS = 25
# Firestore takes at most 500 writes and 10 MiB per commit; stay below both.
MAX_WRITES_PER_COMMIT = 500
MAX_BYTES_PER_COMMIT = 9 * 1024 * 1024
_PAGE = 300
_MAX_REMEMBERED_VERSIONS = 10_000

_RUN_FIELDS = (
    "status",
    "step_index",
    "next_check_at",
    "lease_holder",
    "lease_expires_at",
    "created_at",
    "updated_at",
    "expires_at",
    "blob",
)


def _timestamp(moment: float | None) -> Value:
    if moment is None:
        return Value(null_value=0)
    return Value(timestamp_value=datetime.fromtimestamp(moment, timezone.utc))


def _seconds(value: Value | None) -> float | None:
    if value is None or "timestamp_value" not in value:
        return None
    return value.timestamp_value.timestamp()


def _text(value: Value | None) -> str | None:
    if value is None or "string_value" not in value:
        return None
    return value.string_value


def _record_fields(record: Record) -> dict[str, Value]:
    return {
        "blob": Value(bytes_value=record.blob),
        "expires_at": _timestamp(record.expires_at),
        "v": Value(integer_value=SCHEMA_VERSION),
    }


def _record_of(document: Document) -> Record:
    fields = document.fields
    return Record(
        document.name.rsplit("/", 1)[1],
        fields["blob"].bytes_value,
        _seconds(fields.get("expires_at")),
    )


def _run_fields(row: RunRow) -> dict[str, Value]:
    return {
        "status": Value(string_value=row.status),
        "step_index": Value(integer_value=row.step_index),
        "next_check_at": _timestamp(row.next_check_at),
        "lease_holder": (
            Value(string_value=row.lease_holder) if row.lease_holder else Value(null_value=0)
        ),
        "lease_expires_at": _timestamp(row.lease_expires_at),
        "created_at": _timestamp(row.created_at),
        "updated_at": _timestamp(row.updated_at),
        "expires_at": _timestamp(row.expires_at),
        "blob": Value(bytes_value=row.blob),
        "v": Value(integer_value=SCHEMA_VERSION),
    }


def _run_of(app: str, document: Document) -> RunRow:
    fields = document.fields
    return RunRow(
        app=app,
        run_id=document.name.rsplit("/", 1)[1],
        status=fields["status"].string_value,
        step_index=int(fields["step_index"].integer_value),
        next_check_at=_seconds(fields.get("next_check_at")),
        lease_holder=_text(fields.get("lease_holder")),
        lease_expires_at=_seconds(fields.get("lease_expires_at")),
        created_at=_seconds(fields["created_at"]) or 0.0,
        updated_at=_seconds(fields["updated_at"]) or 0.0,
        expires_at=_seconds(fields.get("expires_at")),
        blob=fields["blob"].bytes_value,
    )


def _app_fields(row: AppRow) -> dict[str, Value]:
    fingerprints = [Value(string_value=text) for text in row.fingerprints]
    return {
        "name_blob": Value(bytes_value=row.name_blob),
        "fingerprints": Value(array_value=_ArrayValue(values=fingerprints)),
        "v": Value(integer_value=SCHEMA_VERSION),
    }


def _app_of(document: Document) -> AppRow:
    fields = document.fields
    return AppRow(
        document.name.rsplit("/", 1)[1],
        fields["name_blob"].bytes_value,
        tuple(value.string_value for value in fields["fingerprints"].array_value.values),
    )


def _unexpired(record: Record, moment: float) -> bool:
    return record.expires_at is None or record.expires_at > moment


_DELETE = object()


class _FirestoreTransaction(Transaction):
    """Reads through one Firestore transaction; writes are buffered and sent with the commit.

    Buffering lets the protocol's callers read after they wrote (Firestore itself requires
    every read to come first), and reads see the transaction's own writes.
    """

    def __init__(self, store: FirestoreStore, retry_id: bytes | None) -> None:
        self._store = store
        self._retry_id = retry_id
        self.id: bytes | None = None
        self.writes: dict[str, Any] = {}
        # The runs written, by document path, so their versions can be kept after the commit.
        self.runs: dict[str, RunRow] = {}

    def _consistency(self) -> dict[str, Any]:
        if self.id is not None:
            return {"transaction": self.id}
        options = TransactionOptions.ReadWrite(retry_transaction=self._retry_id or b"")
        return {"new_transaction": TransactionOptions(read_write=options)}

    def _get(self, paths: Sequence[str]) -> dict[str, Document]:
        wanted = [path for path in paths if path not in self.writes]
        found: dict[str, Document] = {}
        if wanted:
            found, transaction_id = self._store._batch_get(wanted, **self._consistency())
            self.id = self.id or transaction_id
        for path in paths:
            if path in self.writes:
                written = self.writes[path]
                if written is not _DELETE:
                    found[path] = Document(name=path, fields=written)
        return found

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        collection = self._store._collection(namespace)
        moment = now()
        documents = self._get([f"{collection}/{record_id}" for record_id in ids])
        records = (_record_of(document) for document in documents.values())
        return {record.id: record for record in records if _unexpired(record, moment)}

    def put(self, namespace: str, record: Record) -> None:
        self.writes[f"{self._store._collection(namespace)}/{record.id}"] = _record_fields(record)

    def delete(self, namespace: str, record_id: str) -> None:
        self.writes[f"{self._store._collection(namespace)}/{record_id}"] = _DELETE

    def set_expiry(self, namespace: str, expires_at: float | None) -> None:
        collection = self._store._collection(namespace)
        stored = self._store._query_all(collection, **self._consistency_for_query())
        for document in stored:
            if document.name not in self.writes:
                self.writes[document.name] = dict(document.fields)
        for path, fields in self.writes.items():
            if fields is not _DELETE and path.rsplit("/", 1)[0] == collection:
                fields["expires_at"] = _timestamp(expires_at)

    def _consistency_for_query(self) -> dict[str, Any]:
        if self.id is None:
            # Callers read the run before they end it, so this rarely costs the extra call.
            self.id = self._store._begin(self._retry_id)
        return {"transaction": self.id}

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        path = self._store._run_path(app, run_id)
        document = self._get([path]).get(path)
        return _run_of(app, document) if document is not None else None

    def put_run(self, row: RunRow) -> None:
        path = self._store._run_path(row.app, row.run_id)
        self.writes[path] = _run_fields(row)
        self.runs[path] = row

    def get_app(self, namespace: str) -> AppRow | None:
        path = self._store._app_path(namespace)
        document = self._get([path]).get(path)
        return _app_of(document) if document is not None else None

    def put_app(self, row: AppRow) -> None:
        self.writes[self._store._app_path(row.namespace)] = _app_fields(row)


class FirestoreStore(Store):
    def __init__(
        self,
        project: str,
        database: str = "(default)",
        url: str | None = None,
        interceptors: Sequence[
            grpc.UnaryUnaryClientInterceptor | grpc.UnaryStreamClientInterceptor
        ] = (),
    ) -> None:
        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT", "")
        if not project:
            raise ConfigurationError(
                "no Google Cloud project: use firestore://PROJECT or set GOOGLE_CLOUD_PROJECT"
            )
        self.project = project
        self.database = database
        self.url = url or f"firestore://{project}/{database}"
        self.emulator_host = os.environ.get("FIRESTORE_EMULATOR_HOST")
        self._database_path = f"projects/{project}/databases/{database}"
        self._root = f"{self._database_path}/documents"
        self._metadata = [("google-cloud-resource-prefix", self._database_path)]
        self._channel = self._open_channel()
        channel = (
            grpc.intercept_channel(self._channel, *interceptors) if interceptors else self._channel
        )
        self._api = FirestoreClient(transport=FirestoreGrpcTransport(channel=channel))
        # The update time of runs as last read or written here, for commit_run's precondition.
        self._run_versions: dict[str, tuple[RunRow, Any]] = {}

    def _open_channel(self) -> grpc.Channel:
        if self.emulator_host:
            self._metadata.append(("authorization", "Bearer owner"))
            return grpc.insecure_channel(self.emulator_host)

        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/datastore"]
            )
        except DefaultCredentialsError:
            raise ConfigurationError(
                f"no Google credentials for {self.url}: run `gcloud auth application-default "
                "login`, set GOOGLE_APPLICATION_CREDENTIALS, or set FIRESTORE_EMULATOR_HOST "
                "to use the emulator"
            ) from None
        return FirestoreGrpcTransport.create_channel(
            FirestoreClient.DEFAULT_ENDPOINT, credentials=credentials
        )

    # Paths.

    def _app_path(self, app: str) -> str:
        return f"{self._root}/{ROOT}/{app}"

    def _run_path(self, app: str, run_id: str) -> str:
        return f"{self._app_path(app)}/{RUNS}/{run_id}"

    def _collection(self, namespace: str) -> str:
        """Return the collection path of a namespace, such as `APP/state` or `APP/run/RUN_ID`."""
        parts = namespace.split("/")
        if len(parts) == 2 and parts[1] == "state":
            return f"{self._app_path(parts[0])}/{STATE}"
        if len(parts) == 3 and parts[1] == "run":
            return f"{self._run_path(parts[0], parts[2])}/{CONTEXT}"
        # Any other namespace gets a collection of its own; document ids cannot hold "/".
        return f"{self._root}/{OTHER}/{namespace.replace('/', ':')}/{RECORDS}"

    # Calls.

    def _call(self, action: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except google_errors.Aborted:
            raise
        except google_errors.GoogleAPICallError as error:
            detail = error.message or str(error) or type(error).__name__
            raise StoreError(f"cannot {action} store {self.url}: {detail}") from None

    def _batch_get(
        self, paths: Sequence[str], **consistency: Any
    ) -> tuple[dict[str, Document], bytes | None]:
        request = BatchGetDocumentsRequest(
            database=self._database_path, documents=list(paths), **consistency
        )

        def call() -> tuple[dict[str, Document], bytes | None]:
            found: dict[str, Document] = {}
            transaction_id = None
            for response in self._api.batch_get_documents(request=request, metadata=self._metadata):
                transaction_id = transaction_id or response.transaction or None
                if "found" in response:
                    found[response.found.name] = response.found
            return found, transaction_id

        return self._call("read", call)

    def _query(self, parent: str, query: StructuredQuery, **consistency: Any) -> list[Document]:
        request = RunQueryRequest(parent=parent, structured_query=query, **consistency)

        def call() -> list[Document]:
            responses = self._api.run_query(request=request, metadata=self._metadata)
            return [response.document for response in responses if "document" in response]

        return self._call("query", call)

    def _query_all(self, collection: str, **consistency: Any) -> list[Document]:
        parent, collection_id = collection.rsplit("/", 1)
        documents: list[Document] = []
        while True:
            query = StructuredQuery(
                from_=[StructuredQuery.CollectionSelector(collection_id=collection_id)],
                order_by=[_BY_NAME],
                limit=_PAGE,
            )
            if documents:
                query.start_at = Cursor(
                    values=[Value(reference_value=documents[-1].name)], before=False
                )
            page = self._query(parent, query, **consistency)
            documents += page
            if len(page) < _PAGE:
                return documents

    def _commit(self, writes: dict[str, Any], transaction_id: bytes | None = None) -> Any:
        """Commit `writes` and return the response, whose write results follow their order."""
        pending = [
            Write(delete=path)
            if fields is _DELETE
            else Write(update=Document(name=path, fields=fields))
            for path, fields in writes.items()
        ]
        request = CommitRequest(database=self._database_path, writes=pending)
        if transaction_id:
            request.transaction = transaction_id
        return self._call(
            "write to", lambda: self._api.commit(request=request, metadata=self._metadata)
        )

    # The protocol.

    def transact(self, work: Callable[[Transaction], T]) -> T:
        retry_id = None
        for attempt in range(MAX_ATTEMPTS):
            transaction = _FirestoreTransaction(self, retry_id)
            try:
                result = work(transaction)
                if transaction.writes or transaction.id:
                    response = self._commit(transaction.writes, transaction.id)
                    self._remember_written(transaction, response)
                return result
            except google_errors.Aborted as error:
                # Contention: another transaction touched the same documents. Run the work
                # again, keeping our place in line with retry_transaction.
                retry_id = transaction.id
                log.debug("firestore transaction aborted (attempt %d): %s", attempt + 1, error)
                time.sleep(random.uniform(0, min(0.05 * 2**attempt, 2.0)))
            except BaseException:
                self._rollback(transaction.id)
                raise
        raise ConflictError(
            f"a transaction on {self.url} still conflicted after {MAX_ATTEMPTS} attempts; "
            "try again, or spread the writes over more keys"
        )

    def _begin(self, retry_id: bytes | None) -> bytes:
        options = TransactionOptions(
            read_write=TransactionOptions.ReadWrite(retry_transaction=retry_id or b"")
        )
        response = self._call(
            "begin a transaction on",
            lambda: self._api.begin_transaction(
                request={"database": self._database_path, "options": options},
                metadata=self._metadata,
            ),
        )
        return response.transaction

    def _rollback(self, transaction_id: bytes | None) -> None:
        if transaction_id:
            try:
                self._api.rollback(
                    request={"database": self._database_path, "transaction": transaction_id},
                    metadata=self._metadata,
                )
            except google_errors.GoogleAPICallError as error:
                log.debug("firestore rollback failed: %s", error)

    def write(self, namespace: str, puts: Sequence[Record], deletes: Sequence[str] = ()) -> None:
        """Write without reading: one Commit when the batch fits Firestore's limits.

        A batch larger than 500 writes or 9 MiB is split into several commits, and is then
        atomic per commit only.
        """
        collection = self._collection(namespace)
        writes: dict[str, Any] = {}
        size = 0
        for record in puts:
            if (
                len(writes) >= MAX_WRITES_PER_COMMIT
                or size + len(record.blob) > MAX_BYTES_PER_COMMIT
            ):
                self._commit(writes)
                writes, size = {}, 0
            writes[f"{collection}/{record.id}"] = _record_fields(record)
            size += len(record.blob)
        for record_id in deletes:
            if len(writes) >= MAX_WRITES_PER_COMMIT:
                self._commit(writes)
                writes = {}
            writes[f"{collection}/{record_id}"] = _DELETE
        if writes:
            self._commit(writes)

    def read(self, namespace: str, ids: Sequence[str]) -> dict[str, Record]:
        if not ids:
            return {}
        collection = self._collection(namespace)
        found, _ = self._batch_get([f"{collection}/{record_id}" for record_id in ids])
        moment = now()
        records = (_record_of(document) for document in found.values())
        return {record.id: record for record in records if _unexpired(record, moment)}

    def scan(self, namespace: str, after: str | None = None, limit: int = 500) -> list[Record]:
        collection = self._collection(namespace)
        parent, collection_id = collection.rsplit("/", 1)
        moment = now()
        records: list[Record] = []
        cursor = f"{collection}/{after}" if after else None
        # Expired records still in Firestore are skipped, so keep reading until the page is full.
        while len(records) < limit:
            query = StructuredQuery(
                from_=[StructuredQuery.CollectionSelector(collection_id=collection_id)],
                order_by=[_BY_NAME],
                limit=limit,
            )
            if cursor:
                query.start_at = Cursor(values=[Value(reference_value=cursor)], before=False)
            page = self._query(parent, query)
            records += [record for record in map(_record_of, page) if _unexpired(record, moment)]
            if len(page) < limit:
                break
            cursor = page[-1].name
        return records[:limit]

    def count(self, namespace: str) -> int:
        collection = self._collection(namespace)
        parent, collection_id = collection.rsplit("/", 1)
        selector = StructuredQuery.CollectionSelector(collection_id=collection_id)
        every = StructuredQuery(from_=[selector])
        expired = StructuredQuery(
            from_=[selector],
            where=StructuredQuery.Filter(
                field_filter=StructuredQuery.FieldFilter(
                    field=StructuredQuery.FieldReference(field_path="expires_at"),
                    op=StructuredQuery.FieldFilter.Operator.LESS_THAN_OR_EQUAL,
                    value=_timestamp(now()),
                )
            ),
        )
        return self._aggregate_count(parent, every) - self._aggregate_count(parent, expired)

    def _aggregate_count(self, parent: str, query: StructuredQuery) -> int:
        aggregation = StructuredAggregationQuery(
            structured_query=query,
            aggregations=[
                StructuredAggregationQuery.Aggregation(
                    alias="n", count=StructuredAggregationQuery.Aggregation.Count()
                )
            ],
        )
        request = RunAggregationQueryRequest(
            parent=parent, structured_aggregation_query=aggregation
        )

        def call() -> int:
            for response in self._api.run_aggregation_query(
                request=request, metadata=self._metadata
            ):
                if "result" in response:
                    return int(response.result.aggregate_fields["n"].integer_value)
            return 0

        return self._call("count", call)

    def namespaces(self, prefix: str) -> list[str]:
        app = prefix.split("/", 1)[0]
        found = []
        if self.count(f"{app}/state"):
            found.append(f"{app}/state")
        for run_id in self._list_ids(f"{self._app_path(app)}", RUNS, show_missing=True):
            if self._query_all(f"{self._run_path(app, run_id)}/{CONTEXT}"):
                found.append(f"{app}/run/{run_id}")
        return sorted(name for name in found if name.startswith(prefix))

    def _list_ids(self, parent: str, collection_id: str, show_missing: bool = False) -> list[str]:
        request = ListDocumentsRequest(
            parent=parent,
            collection_id=collection_id,
            show_missing=show_missing,
            mask=DocumentMask(field_paths=[]),
            page_size=_PAGE,
        )
        pages = self._call(
            "list", lambda: list(self._api.list_documents(request=request, metadata=self._metadata))
        )
        return [document.name.rsplit("/", 1)[1] for document in pages]

    def get_run(self, app: str, run_id: str) -> RunRow | None:
        path = self._run_path(app, run_id)
        found, _ = self._batch_get([path])
        if path not in found:
            return None
        row = _run_of(app, found[path])
        self._remember_version(path, row, found[path].update_time)
        return row

    def _remember_written(self, transaction: _FirestoreTransaction, response: Any) -> None:
        """Keep the versions of the runs a transaction wrote, for `commit_run` to check."""
        for path, result in zip(transaction.writes, response.write_results, strict=True):
            if path in transaction.runs:
                self._remember_version(path, transaction.runs[path], result.update_time)

    def _remember_version(self, path: str, row: RunRow, update_time: Any) -> None:
        if len(self._run_versions) >= _MAX_REMEMBERED_VERSIONS:
            self._run_versions.pop(next(iter(self._run_versions)))
        self._run_versions[path] = (row, update_time)

    def commit_run(
        self,
        expected: RunRow,
        row: RunRow,
        namespace: str,
        puts: Sequence[Record] = (),
        deletes: Sequence[str] = (),
    ) -> bool:
        """Write with one Commit whose precondition is the run's update time when last read."""
        path = self._run_path(expected.app, expected.run_id)
        remembered = self._run_versions.get(path)
        if remembered is None or remembered[0] != expected:
            return super().commit_run(expected, row, namespace, puts, deletes)

        collection = self._collection(namespace)
        writes = [
            Write(
                update=Document(name=path, fields=_run_fields(row)),
                current_document=Precondition(update_time=remembered[1]),
            ),
            *(
                Write(
                    update=Document(name=f"{collection}/{record.id}", fields=_record_fields(record))
                )
                for record in puts
            ),
            *(Write(delete=f"{collection}/{record_id}") for record_id in deletes),
        ]
        request = CommitRequest(database=self._database_path, writes=writes)
        try:
            response = self._api.commit(request=request, metadata=self._metadata)
        except google_errors.FailedPrecondition:
            return False
        except google_errors.GoogleAPICallError as error:
            raise StoreError(f"cannot write to store {self.url}: {error.message}") from None
        self._remember_version(path, row, response.write_results[0].update_time)
        return True

    def list_runs(
        self, app: str, statuses: Iterable[str] | None = None, limit: int | None = None
    ) -> list[RunRow]:
        """Page through the runs newest first, filtering status and expiry here.

        Filtering on status in the query while ordering by creation time would need a
        composite index that every user would have to create. Ordering alone needs none.
        """
        wanted = set(statuses) if statuses is not None else None
        moment = now()
        rows: list[RunRow] = []
        cursor: list[Value] | None = None
        while limit is None or len(rows) < limit:
            query = StructuredQuery(
                from_=[StructuredQuery.CollectionSelector(collection_id=RUNS)],
                order_by=[_NEWEST_FIRST, _BY_NAME_DESCENDING],
                limit=_PAGE,
            )
            if cursor:
                query.start_at = Cursor(values=cursor, before=False)
            page = self._query(self._app_path(app), query)
            for document in page:
                row = _run_of(app, document)
                live = row.expires_at is None or row.expires_at > moment
                if live and (wanted is None or row.status in wanted):
                    rows.append(row)
            if len(page) < _PAGE:
                break
            last = page[-1]
            cursor = [last.fields["created_at"], Value(reference_value=last.name)]
        return rows[:limit] if limit is not None else rows

    def delete_runs(self, app: str, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            context = self._query_all(f"{self._run_path(app, run_id)}/{CONTEXT}")
            writes: dict[str, Any] = {}
            for document in context:
                writes[document.name] = _DELETE
                if len(writes) >= MAX_WRITES_PER_COMMIT - 1:
                    self._commit(writes)
                    writes = {}
            writes[self._run_path(app, run_id)] = _DELETE
            self._commit(writes)

    def get_app(self, namespace: str) -> AppRow | None:
        path = self._app_path(namespace)
        found, _ = self._batch_get([path])
        return _app_of(found[path]) if path in found else None

    def list_apps(self) -> list[AppRow]:
        query = StructuredQuery(
            from_=[StructuredQuery.CollectionSelector(collection_id=ROOT)], order_by=[_BY_NAME]
        )
        return [_app_of(document) for document in self._query(self._root, query)]

    def close(self) -> None:
        self._channel.close()


_BY_NAME = StructuredQuery.Order(
    field=StructuredQuery.FieldReference(field_path="__name__"),
    direction=StructuredQuery.Direction.ASCENDING,
)
_BY_NAME_DESCENDING = StructuredQuery.Order(
    field=StructuredQuery.FieldReference(field_path="__name__"),
    direction=StructuredQuery.Direction.DESCENDING,
)
_NEWEST_FIRST = StructuredQuery.Order(
    field=StructuredQuery.FieldReference(field_path="created_at"),
    direction=StructuredQuery.Direction.DESCENDING,
)
