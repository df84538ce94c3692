//! What a job left in its outputs directory: its regular files and their total size. Symbolic
//! links, sockets and devices are never results (a link written by a job could point anywhere
//! on the host) and are neither followed nor listed.

use std::path::{Path, PathBuf};

use super::OutputFile;

/// Files a job may leave; more count as an oversized output.
pub const OUTPUT_FILES_MAX: usize = 10_000;
/// Directories deeper than this are not entered (and count as oversized).
const OUTPUT_DEPTH_MAX: usize = 32;

/// The outcome of one walk of the outputs directory.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) files: Vec<OutputFile>,
    pub(super) bytes: u64,
    /// More files or deeper directories than allowed: the walk stopped early.
    pub(super) beyond_shape_limits: bool,
}

impl Found {
    pub(super) fn over_limit(&self, limit_bytes: u64) -> bool {
        self.bytes > limit_bytes || self.beyond_shape_limits
    }
}

/// Walks `dir` on a blocking thread. The walk stops as soon as the size passes `stop_above_bytes`
/// (when the answer is already known), so a huge output does not cost a huge walk.
pub(super) async fn scan(dir: &Path, stop_above_bytes: u64) -> std::io::Result<Found> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || scan_blocking(&dir, stop_above_bytes))
        .await
        .map_err(std::io::Error::other)?
}

fn scan_blocking(root: &Path, stop_above_bytes: u64) -> std::io::Result<Found> {
    let mut found = Found::default();
    let mut pending: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            // DirEntry::metadata does not follow symbolic links.
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                if depth + 1 >= OUTPUT_DEPTH_MAX {
                    found.beyond_shape_limits = true;
                    return Ok(found);
                }
                pending.push((path, depth + 1));
            } else if meta.is_file() {
                found.bytes = found.bytes.saturating_add(meta.len());
                let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                found.files.push(OutputFile {
                    path: relative,
                    host_path: path,
                    size_bytes: meta.len(),
                });
                if found.files.len() > OUTPUT_FILES_MAX {
                    found.beyond_shape_limits = true;
                    return Ok(found);
                }
                if found.bytes > stop_above_bytes {
                    return Ok(found);
                }
            }
        }
    }
    found.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[tokio::test]
    async fn regular_files_are_listed_with_sizes_and_links_are_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top.txt"), b"12345").unwrap();
        std::fs::write(dir.path().join("a/b/deep.bin"), vec![0u8; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let found = scan(dir.path(), u64::MAX).await.unwrap();
        let listed: Vec<_> = found
            .files
            .iter()
            .map(|f| (f.path.to_str().unwrap(), f.size_bytes))
            .collect();
        assert_eq!(listed, vec![("a/b/deep.bin", 100), ("top.txt", 5)]);
        assert_eq!(found.bytes, 105);
        assert!(!found.over_limit(105));
        assert!(found.over_limit(104));
    }

    #[tokio::test]
    async fn too_many_files_count_as_an_oversized_output() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..=OUTPUT_FILES_MAX {
            std::fs::write(dir.path().join(i.to_string()), b"").unwrap();
        }
        let found = scan(dir.path(), u64::MAX).await.unwrap();
        assert!(found.over_limit(u64::MAX));
    }
}
