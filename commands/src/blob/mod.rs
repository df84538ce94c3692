//! Content-addressed model storage: the IPFS content identifier computed exactly as `ipfs add`
//! does with Kubo's defaults (`cid`), streaming, and the local-directory blob store (`local`),
//! which hashes while it writes and verifies on read. The S3 and IPFS backends, and the trait
//! over all three, come with the marketplace issue.

pub mod cid;
pub mod local;
