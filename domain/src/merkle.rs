//! The Merkle receipt of a close's payouts: anyone can check that a payout (payee, wallet,
//! amount, month) is one of the close's, against the published root, with a few lines of any
//! language (README, "Payout receipts"). The root is 32 bytes, ready to be anchored on chain.
//!
//! - leaf = SHA-256(0x00 ‖ "payee|network:address|amount|month") (amount with its 6 decimals);
//! - node = SHA-256(0x01 ‖ left ‖ right) (the prefixes keep a leaf from passing for a node);
//! - leaves in the order given (the caller sorts: by payout id); an odd node at the end of a
//!   level is carried up unchanged; one leaf is its own root; no leaf: 32 zero bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One payout as the receipt covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptLeaf {
    pub payee: String,
    /// `network:address`.
    pub wallet: String,
    /// USDT with 6 decimals, e.g. `45.000000`.
    pub amount: String,
    /// `YYYY-MM`.
    pub month: String,
}

impl ReceiptLeaf {
    /// The bytes hashed into the leaf.
    pub fn text(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.payee, self.wallet, self.amount, self.month
        )
    }

    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.text().as_bytes());
        h.finalize().into()
    }
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A sibling on the way up: hash it on the `left` or on the right of the running hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProofStep {
    /// Hex.
    pub sibling: String,
    /// True when the sibling goes on the left.
    pub left: bool,
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The root of `leaves` (hex), and the proof of leaf `index` if asked.
pub fn root_and_proof(leaves: &[ReceiptLeaf], index: Option<usize>) -> (String, Vec<ProofStep>) {
    if leaves.is_empty() {
        return (hex(&[0u8; 32]), Vec::new());
    }
    let mut level: Vec<[u8; 32]> = leaves.iter().map(ReceiptLeaf::hash).collect();
    let mut at = index;
    let mut proof = Vec::new();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for (i, pair) in level.chunks(2).enumerate() {
            match pair {
                [l, r] => {
                    if let Some(a) = at {
                        if a == 2 * i {
                            proof.push(ProofStep {
                                sibling: hex(r),
                                left: false,
                            });
                        } else if a == 2 * i + 1 {
                            proof.push(ProofStep {
                                sibling: hex(l),
                                left: true,
                            });
                        }
                    }
                    next.push(node(l, r));
                }
                [single] => next.push(*single),
                _ => {}
            }
        }
        at = at.map(|a| a / 2);
        level = next;
    }
    (hex(&level[0]), proof)
}

/// Whether `leaf` with `proof` leads to `root` (hex).
pub fn verify(leaf: &ReceiptLeaf, proof: &[ProofStep], root: &str) -> bool {
    let mut running = leaf.hash();
    for step in proof {
        let Some(sibling) = unhex(&step.sibling) else {
            return false;
        };
        running = if step.left {
            node(&sibling, &running)
        } else {
            node(&running, &sibling)
        };
    }
    hex(&running) == root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: usize, amount: &str) -> ReceiptLeaf {
        ReceiptLeaf {
            payee: format!("user-{i}"),
            wallet: format!("ethereum:0x{i:040x}"),
            amount: amount.to_string(),
            month: "2026-11".to_string(),
        }
    }

    #[test]
    fn every_leaf_proves_against_the_root_and_a_changed_amount_does_not() {
        for n in 1..=9 {
            let leaves: Vec<_> = (0..n).map(|i| leaf(i, "45.000000")).collect();
            let (root, _) = root_and_proof(&leaves, None);
            for (i, l) in leaves.iter().enumerate() {
                let (same_root, proof) = root_and_proof(&leaves, Some(i));
                assert_eq!(same_root, root);
                assert!(verify(l, &proof, &root), "n={n} i={i}");
                let mut changed = l.clone();
                changed.amount = "45.000001".to_string();
                assert!(!verify(&changed, &proof, &root), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn one_leaf_is_its_own_root_and_none_is_zero() {
        let l = leaf(1, "1.000000");
        assert_eq!(
            root_and_proof(std::slice::from_ref(&l), None).0,
            hex(&l.hash())
        );
        assert_eq!(root_and_proof(&[], None).0, "0".repeat(64));
    }
}
