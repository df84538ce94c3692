//! Content-addressed model storage. So far: the IPFS content identifier computed exactly as
//! `ipfs add` does with Kubo's defaults (`cid`), streaming, so a model of any size is
//! identified without being held in memory. Blob backends (local, S3, IPFS) come with the
//! marketplace issue.

pub mod cid;
