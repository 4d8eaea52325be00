//! Merkle trees as RFC 6962 and RFC 9162 (Certificate Transparency) define them, so that
//! transparency-log tooling checks our proofs: leaves hashed as `SHA-256(0x00 || leaf)`,
//! nodes as `SHA-256(0x01 || left || right)`, a tree of `n` leaves split at the largest
//! power of two below `n`; inclusion proofs (a leaf is in a tree) and consistency proofs
//! (a later tree extends an earlier one), with the verification algorithms of RFC 9162
//! §2.1.3.2 and §2.1.4.2.
//!
//! ```
//! use audit_layer::integrity::merkle::{inclusion_proof, leaf_hash, root, verify_inclusion};
//!
//! let leaves: Vec<_> = ["a", "b", "c"].iter().map(|l| leaf_hash(l.as_bytes())).collect();
//! let tree = root(&leaves);
//! let proof = inclusion_proof(&leaves, 2).unwrap();
//! assert!(verify_inclusion(2, 3, &leaves[2], &proof, &tree));
//! assert!(!verify_inclusion(1, 3, &leaves[2], &proof, &tree));
//! ```

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of a leaf's data: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two smaller than `n` (for `n > 1`).
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The tree head of `leaves` (leaf hashes, in order): RFC 9162's `MTH`. The empty tree's
/// is `SHA-256("")`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of `leaves` (RFC 9162 `PATH`), or
/// `None` when there is no such leaf.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    (index < leaves.len()).then(|| path(index, leaves))
}

fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    let (mut proof, sibling) = if m < k {
        (path(m, &leaves[..k]), root(&leaves[k..]))
    } else {
        (path(m - k, &leaves[k..]), root(&leaves[..k]))
    };
    proof.push(sibling);
    proof
}

/// Whether `proof` shows that `leaf` is leaf `index` of the tree of `size` leaves whose
/// head is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// The consistency proof from the tree of the first `old_size` of `leaves` to the tree of
/// all of them (RFC 9162 `PROOF`), or `None` when `old_size` is beyond them.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    if old_size == 0 || old_size == leaves.len() {
        return Some(Vec::new());
    }
    Some(subproof(old_size, leaves, true))
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut proof = subproof(m, &leaves[..k], whole);
        proof.push(root(&leaves[k..]));
        proof
    } else {
        let mut proof = subproof(m - k, &leaves[k..], false);
        proof.push(root(&leaves[..k]));
        proof
    }
}

/// Whether `proof` shows that the tree of `new_size` leaves with head `new_root` extends
/// the tree of `old_size` leaves with head `old_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        // Every tree extends the empty one.
        return proof.is_empty();
    }
    let mut proof = proof.to_vec();
    if old_size.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *old_root && s_r == *new_root && s_n == 0
}

/// A tree being appended to, kept as the heads of its perfect subtrees (a "compact
/// range"): appending a leaf and taking the head cost `O(log n)` and memory stays
/// `O(log n)`, so a log can grow for years without holding its leaves.
///
/// ```
/// use audit_layer::integrity::merkle::{leaf_hash, root, CompactTree};
///
/// let leaves: Vec<_> = (0u8..7).map(|i| leaf_hash(&[i])).collect();
/// let mut tree = CompactTree::default();
/// for leaf in &leaves {
///     tree.push(*leaf);
/// }
/// assert_eq!(tree.size(), 7);
/// assert_eq!(tree.root(), root(&leaves));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    /// Heads of the perfect subtrees, largest (leftmost) first: one per set bit of `size`.
    peaks: Vec<Hash>,
}

impl CompactTree {
    /// The tree of `leaves`.
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut tree = CompactTree::default();
        for leaf in leaves {
            tree.push(*leaf);
        }
        tree
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing one bit of the old size is a perfect subtree the same size as
        // the one being carried: merge them, as in binary addition.
        let mut carries = self.size.trailing_ones();
        while carries > 0 {
            let Some(left) = self.peaks.pop() else { break };
            node = node_hash(&left, &node);
            carries -= 1;
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The tree head (RFC 9162 `MTH`), as [`root`] computes it from all the leaves.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => root(&[]),
            Some(last) => peaks.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// The proof that `leaves[start..end]` are leaves `start..end` of the tree of `leaves`:
/// the heads of the subtrees (as RFC 9162 splits the tree) that hold none of them, left to
/// right. One proof for a run of leaves, at most two hashes a level, where an inclusion
/// proof for each would repeat nearly all of them. `None` when the run is empty or goes
/// beyond the leaves.
///
/// ```
/// use audit_layer::integrity::merkle::{leaf_hash, range_proof, root, verify_range};
///
/// let leaves: Vec<_> = (0u8..10).map(|i| leaf_hash(&[i])).collect();
/// let proof = range_proof(&leaves, 3, 7).unwrap();
/// assert!(verify_range(3, 10, &leaves[3..7], &proof, &root(&leaves)));
/// assert!(!verify_range(4, 10, &leaves[3..7], &proof, &root(&leaves)));
/// ```
pub fn range_proof(leaves: &[Hash], start: usize, end: usize) -> Option<Vec<Hash>> {
    if start >= end || end > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    range_path(leaves, 0, start, end, &mut proof);
    Some(proof)
}

fn range_path(leaves: &[Hash], offset: usize, start: usize, end: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if offset + n <= start || offset >= end {
        out.push(root(leaves));
    } else if n > 1 {
        let k = split(n);
        range_path(&leaves[..k], offset, start, end, out);
        range_path(&leaves[k..], offset + k, start, end, out);
    }
}

/// Whether `proof` (from [`range_proof`]) shows that `run` are the leaves from `start`
/// on of the tree of `size` leaves whose head is `root`.
pub fn verify_range(start: u64, size: u64, run: &[Hash], proof: &[Hash], root: &Hash) -> bool {
    let end = start.saturating_add(run.len() as u64);
    if run.is_empty() || end > size {
        return false;
    }
    let (mut run, mut proof) = (run.iter(), proof.iter());
    let head = rebuild(0, size, start, end, &mut run, &mut proof);
    head.as_ref() == Some(root) && run.next().is_none() && proof.next().is_none()
}

fn rebuild<'a>(
    offset: u64,
    n: u64,
    start: u64,
    end: u64,
    run: &mut impl Iterator<Item = &'a Hash>,
    proof: &mut impl Iterator<Item = &'a Hash>,
) -> Option<Hash> {
    if offset + n <= start || offset >= end {
        proof.next().copied()
    } else if n == 1 {
        run.next().copied()
    } else {
        let k = split(n as usize) as u64;
        let left = rebuild(offset, k, start, end, run, proof)?;
        let right = rebuild(offset + k, n - k, start, end, run, proof)?;
        Some(node_hash(&left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn a_compact_tree_has_the_head_of_its_leaves_at_every_size() {
        let all = leaves(70);
        let mut tree = CompactTree::default();
        assert_eq!(tree.root(), root(&[]));
        for n in 1..=all.len() {
            tree.push(all[n - 1]);
            assert_eq!(tree.size(), n as u64);
            assert_eq!(tree.root(), root(&all[..n]), "size {n}");
            assert_eq!(tree.peaks.len(), (n as u64).count_ones() as usize);
        }
    }

    #[test]
    fn the_empty_tree_and_small_trees_have_the_rfc_heads() {
        let empty: String = root(&[]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let l = leaves(3);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_forged_one_does_not() {
        for n in 1..40 {
            let l = leaves(n);
            let head = root(&l);
            for i in 0..n {
                let proof = inclusion_proof(&l, i).unwrap();
                assert!(
                    verify_inclusion(i as u64, n as u64, &l[i], &proof, &head),
                    "{i} of {n}"
                );
                // Another leaf, another index, a changed or longer proof: refused. (The size
                // is bound to the head by the signed checkpoint, not by the proof.)
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &head));
                assert!(!verify_inclusion(i as u64, i as u64, &l[i], &proof, &head));
                if n > 1 {
                    assert!(!verify_inclusion(
                        ((i + 1) % n) as u64,
                        n as u64,
                        &l[i],
                        &proof,
                        &head
                    ));
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_inclusion(i as u64, n as u64, &l[i], &bad, &head));
                    let mut longer = proof.clone();
                    longer.push(other);
                    assert!(!verify_inclusion(i as u64, n as u64, &l[i], &longer, &head));
                }
            }
            assert!(inclusion_proof(&l, n).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_forged_one_does_not() {
        let all = leaves(40);
        for n in 1..40 {
            let new_root = root(&all[..n]);
            for m in 0..=n {
                let old_root = root(&all[..m]);
                let proof = consistency_proof(&all[..n], m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof),
                    "{m} to {n}"
                );
                if 0 < m && m < n {
                    let other = root(&leaves(m + 1)[1..]);
                    assert!(!verify_consistency(
                        m as u64, n as u64, &other, &new_root, &proof
                    ));
                    let mut bad = proof.clone();
                    bad[0][5] ^= 1;
                    assert!(!verify_consistency(
                        m as u64, n as u64, &old_root, &new_root, &bad
                    ));
                    // A history rewritten: a tree of different leaves at the new size.
                    let mut rewritten = all[..n].to_vec();
                    rewritten[0] = leaf_hash(b"rewritten");
                    let forged_root = root(&rewritten);
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &old_root,
                        &forged_root,
                        &proof
                    ));
                }
            }
        }
    }
    #[test]
    fn every_range_proof_verifies_and_a_forged_one_does_not() {
        for n in 1..34 {
            let l = leaves(n);
            let head = root(&l);
            for start in 0..n {
                for end in start + 1..=n {
                    let proof = range_proof(&l, start, end).unwrap();
                    let run = &l[start..end];
                    assert!(
                        verify_range(start as u64, n as u64, run, &proof, &head),
                        "{start}..{end} of {n}"
                    );
                    assert!(proof.len() <= 2 * (usize::BITS - n.leading_zeros()) as usize);
                    // Shifted, changed, shortened or longer: refused. (The size is bound to the head
                    // by the signed checkpoint, not by the proof.)
                    if start > 0 {
                        assert!(!verify_range(
                            start as u64 - 1,
                            n as u64,
                            run,
                            &proof,
                            &head
                        ));
                    }
                    let mut changed = run.to_vec();
                    changed[0][3] ^= 1;
                    assert!(!verify_range(
                        start as u64,
                        n as u64,
                        &changed,
                        &proof,
                        &head
                    ));
                    if run.len() > 1 {
                        let short = &run[..run.len() - 1];
                        assert!(!verify_range(start as u64, n as u64, short, &proof, &head));
                    }
                    let mut longer = proof.clone();
                    longer.push(head);
                    assert!(!verify_range(start as u64, n as u64, run, &longer, &head));
                }
            }
            assert!(range_proof(&l, 0, n + 1).is_none());
            assert!(range_proof(&l, 2, 2).is_none());
            assert!(!verify_range(0, n as u64, &[], &[], &head));
        }
    }
}
