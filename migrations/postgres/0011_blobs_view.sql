-- Job inputs and outputs in the blob store (`BlobStored` events), by CID: written only by the
-- `compute` projection. One content has one CID and one SHA-256.
CREATE TABLE blobs_view
(
    cid        text    NOT NULL PRIMARY KEY,
    sha256     text    NOT NULL,
    size_bytes bigint  NOT NULL,
    backend    text    NOT NULL,
    stored_by  text    NOT NULL, -- a user id, or node:<id>
    purpose    text    NOT NULL, -- job_input | job_output
    job_id     text,             -- the job that wrote it (job_output)
    stored_at  text    NOT NULL
);
