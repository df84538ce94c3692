//! CIDv0 of a file exactly as `ipfs add` computes it with Kubo's defaults: fixed 256 KiB chunks,
//! each chunk a dag-pb node holding a UnixFS `File` with the bytes (no raw leaves under CIDv0),
//! leaves combined into a balanced DAG of at most 174 links per node, each node hashed with
//! SHA-256 as a multihash, printed base58btc. Streaming: `update` takes any slices, `finish`
//! builds the tree from the per-chunk hashes (about 50 bytes per 256 KiB of input).
//!
//! Tree shape (go-unixfs' balanced layout): one chunk is its own root; otherwise the leaves are
//! grouped left to right into nodes of up to 174, those again, until one node remains, so a
//! trailing group of one is still wrapped in its own node.

use sha2::{Digest, Sha256};

pub const CHUNK_BYTES: usize = 256 * 1024;
pub const LINKS_PER_NODE_MAX: usize = 174;

/// A node's identity and the sizes its parent link records.
#[derive(Debug, Clone)]
struct NodeRef {
    /// Multihash: 0x12 (sha2-256), 0x20 (32 bytes), digest.
    multihash: Vec<u8>,
    /// Bytes of file content under this node.
    file_bytes: u64,
    /// Serialized size of the node and all nodes below it (the link's Tsize).
    tree_bytes: u64,
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn field_bytes(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// UnixFS `Data { Type: File, Data?, filesize, blocksizes* }`.
fn unixfs_file(data: &[u8], filesize: u64, blocksizes: &[u64]) -> Vec<u8> {
    let mut out = vec![0x08, 0x02];
    if !data.is_empty() {
        field_bytes(0x12, data, &mut out);
    }
    out.push(0x18);
    varint(filesize, &mut out);
    for size in blocksizes {
        out.push(0x20);
        varint(*size, &mut out);
    }
    out
}

/// dag-pb `PBNode`: links first (field 2), then data (field 1), as dag-pb canonical form has it.
fn pb_node(links: &[NodeRef], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for link in links {
        let mut encoded = Vec::new();
        field_bytes(0x0a, &link.multihash, &mut encoded);
        field_bytes(0x12, b"", &mut encoded); // Name: present and empty, as Kubo writes it
        encoded.push(0x18);
        varint(link.tree_bytes, &mut encoded);
        field_bytes(0x12, &encoded, &mut out);
    }
    field_bytes(0x0a, data, &mut out);
    out
}

fn node_ref(node: &[u8], file_bytes: u64, children_tree_bytes: u64) -> NodeRef {
    let mut multihash = vec![0x12, 0x20];
    multihash.extend_from_slice(&Sha256::digest(node));
    NodeRef {
        multihash,
        file_bytes,
        tree_bytes: node.len() as u64 + children_tree_bytes,
    }
}

fn leaf(chunk: &[u8]) -> NodeRef {
    let node = pb_node(&[], &unixfs_file(chunk, chunk.len() as u64, &[]));
    node_ref(&node, chunk.len() as u64, 0)
}

fn parent(children: &[NodeRef]) -> NodeRef {
    let file_bytes = children.iter().map(|c| c.file_bytes).sum();
    let sizes: Vec<u64> = children.iter().map(|c| c.file_bytes).collect();
    let node = pb_node(children, &unixfs_file(&[], file_bytes, &sizes));
    node_ref(
        &node,
        file_bytes,
        children.iter().map(|c| c.tree_bytes).sum(),
    )
}

/// Streaming CIDv0 computation.
#[derive(Debug, Default)]
pub struct CidV0Builder {
    buffer: Vec<u8>,
    leaves: Vec<NodeRef>,
}

impl CidV0Builder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (CHUNK_BYTES - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == CHUNK_BYTES {
                self.leaves.push(leaf(&self.buffer));
                self.buffer.clear();
            }
        }
    }

    /// The CID, e.g. `Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD` for `hello world`.
    pub fn finish(mut self) -> String {
        if !self.buffer.is_empty() || self.leaves.is_empty() {
            self.leaves.push(leaf(&self.buffer));
        }
        let mut level = self.leaves;
        while level.len() > 1 {
            level = level.chunks(LINKS_PER_NODE_MAX).map(parent).collect();
        }
        let root = level.pop().map(|r| r.multihash).unwrap_or_default();
        bs58::encode(root).into_string()
    }
}

/// The CIDv0 of bytes in memory.
pub fn cid_v0(bytes: &[u8]) -> String {
    let mut builder = CidV0Builder::new();
    builder.update(bytes);
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic content; the expected CIDs were computed by Debian's `ipfs_cid` (the CIDv0
    /// `ipfs add` gives with Kubo's defaults) over files of exactly these bytes.
    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    #[test]
    fn hello_world_has_the_cid_ipfs_add_gives() {
        assert_eq!(
            cid_v0(b"hello world"),
            "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
        );
    }

    #[test]
    fn the_empty_file_has_the_cid_ipfs_add_gives() {
        assert_eq!(
            cid_v0(b""),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
    }

    #[test]
    fn exactly_one_chunk_is_a_single_leaf() {
        assert_eq!(
            cid_v0(&content(CHUNK_BYTES)),
            "QmNjsPT1urL55WXngMVgvZrn2apSux229uFBoAgmKTtjAd"
        );
    }

    #[test]
    fn one_byte_past_a_chunk_makes_a_two_leaf_node() {
        assert_eq!(
            cid_v0(&content(CHUNK_BYTES + 1)),
            "QmP8yTqWQcb3qVoBcdE4pTUzxh9kazndg5ELrbXBmdj17M"
        );
    }

    #[test]
    fn more_than_174_chunks_need_a_second_level_of_the_dag() {
        let bytes = content(LINKS_PER_NODE_MAX * CHUNK_BYTES + 1000);
        assert_eq!(
            cid_v0(&bytes),
            "QmdRtf8NYhXRdUqWDhsuKoqna2ZudszYc9Z26mZFrQPccn"
        );
    }

    #[test]
    fn feeding_in_odd_slices_gives_the_same_cid() {
        let bytes = content(CHUNK_BYTES * 2 + 12345);
        let mut builder = CidV0Builder::new();
        for piece in bytes.chunks(7919) {
            builder.update(piece);
        }
        assert_eq!(builder.finish(), cid_v0(&bytes));
    }
}
