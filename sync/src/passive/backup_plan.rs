//! What copying one backup means, file by file: the primary's `base/<ID>/` tree minus what
//! Barman excludes (`backup.info`, `.backup.lock`, the `data/pg_tblspc/<oid>` links), and for
//! each file the local data to build it from.
//!
//! A file's basis is, in order: the file already in the destination (an interrupted sync
//! resumed: an identical file costs a signature, nothing is sent again), what an interrupted
//! transfer kept of it (`.<name>.barsync-partial`), or the same path in the reference backup
//! (the nearest older DONE backup, else the nearest newer one). With `reuse_backup = link`, a
//! file identical to the reference's is hard-linked rather than written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use transfer_engine::confine::{Destination, RelativePath};
use transfer_engine::copy::partial_path;
use transfer_engine::protocol::{Entry, EntryKind, FetchRequest, FetchTarget, WriteMode};

use super::verify_tree::ExpectedTree;
use transfer_engine::fetch::Job;

/// The work of copying one backup.
#[derive(Debug, Default)]
pub struct BackupPlan {
    /// Directories to create below the destination, parents first.
    pub directories: Vec<(RelativePath, u32)>,
    pub jobs: Vec<Job>,
    /// Local files and directories the primary does not have (deepest first).
    pub stale: Vec<PathBuf>,
    /// Bytes of the backup's files.
    pub bytes: u64,
    /// The directories and files (with their sizes) the primary listed, for the check of the
    /// published tree before the backup is DONE.
    pub expected: ExpectedTree,
}

/// Whether the primary's entry is one Barman leaves out of the copy.
fn excluded(path: &Path, tablespace_oids: &[u32]) -> bool {
    if path == Path::new("backup.info") || path == Path::new(".backup.lock") {
        return true;
    }
    // `Path::starts_with` compares whole components: the link itself and what is below it.
    tablespace_oids
        .iter()
        .any(|oid| path.starts_with(format!("data/pg_tblspc/{oid}")))
}

/// Plans the copy of the listing of the primary's `remote_directory` into `base/id`.
/// Symlinks other than tablespace links are refused: the passive never creates a link that
/// the primary chose. Each file's destination has `base` (the server's base backups directory,
/// from the configuration) as its trusted root and `id/path` below it, so it is written
/// through directory handles opened from `base` without following any symlink: a directory of
/// the backup (or the backup's own directory) swapped for a symlink fails that file, and
/// nothing is written through the link.
pub fn plan_backup(
    listing: &[Entry],
    remote_directory: &str,
    base: &Path,
    id: &str,
    tablespace_oids: &[u32],
    reference: Option<&Path>,
    link_identical: bool,
) -> Result<BackupPlan, String> {
    let destination = base.join(id);
    let mut plan = BackupPlan::default();
    let mut wanted: HashSet<PathBuf> = HashSet::new();
    for entry in listing {
        let path = entry.path.as_path();
        let shown = || format!("{remote_directory}/{}", entry.path.shown());
        if excluded(path, tablespace_oids) {
            continue;
        }
        match entry.kind {
            EntryKind::Directory => {
                wanted.insert(path.to_path_buf());
                plan.expected.directory(&entry.path);
                plan.directories.push((entry.path.clone(), entry.mode));
            }
            EntryKind::Symlink
                if path.starts_with("data/pg_tblspc") && path != Path::new("data/pg_tblspc") => {}
            EntryKind::Symlink => {
                return Err(format!(
                    "{} is a symbolic link; only tablespace links are expected in a backup",
                    shown()
                ))
            }
            EntryKind::File => {
                wanted.insert(path.to_path_buf());
                let confined = RelativePath::new(id)
                    .and_then(|backup| backup.join_path(&entry.path))
                    .and_then(|relative| Destination::new(base, relative))
                    .map_err(|e| format!("{}: {e}", shown()))?;
                let target = confined.path();
                let partial = partial_path(&target);
                let (basis, link) = match local_basis(&target, &partial) {
                    Some((basis, is_destination)) => (Some(basis), is_destination),
                    None => match reference
                        .map(|r| r.join(path))
                        .filter(|p| is_regular_file(p))
                    {
                        Some(other) => (Some(other), link_identical),
                        None => (None, false),
                    },
                };
                plan.bytes += entry.size;
                plan.expected.file(&entry.path, entry.size);
                plan.jobs.push(Job {
                    request: FetchRequest {
                        remote_path: Path::new(remote_directory).join(path),
                        destination: confined,
                        basis,
                        max_len: Some(entry.size),
                        partial: Some(partial),
                        target: FetchTarget::WholeFile(if link {
                            WriteMode::LinkIdentical
                        } else {
                            WriteMode::NewFile
                        }),
                    },
                    size: entry.size,
                });
            }
        }
    }
    plan.directories
        .sort_by_key(|(path, _)| path.components().count());
    plan.stale = stale_entries(&destination, &wanted);
    Ok(plan)
}

/// What this node already has of `target`: the file itself (a resumed copy; `true`), else
/// what an interrupted transfer kept in `partial` (`false`). Symlinks are never a basis.
pub(crate) fn local_basis(target: &Path, partial: &Path) -> Option<(PathBuf, bool)> {
    if is_regular_file(target) {
        Some((target.to_path_buf(), true))
    } else if is_regular_file(partial) {
        Some((partial.to_path_buf(), false))
    } else {
        None
    }
}

fn is_regular_file(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_file())
}

/// Entries below `destination` that are not `wanted` and not a partial transfer of a wanted
/// file, deepest first (so directories come after their contents).
fn stale_entries(destination: &Path, wanted: &HashSet<PathBuf>) -> Vec<PathBuf> {
    // Partial names of long names are shortened (`transfer_engine::names`): compare whole names.
    let partials: HashSet<PathBuf> = wanted.iter().map(|path| partial_path(path)).collect();
    let mut stale = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(destination.join(&relative)) else {
            continue;
        };
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = relative.join(&name);
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if wanted.contains(&path) {
                if is_dir {
                    pending.push(path);
                }
                continue;
            }
            if name.ends_with(transfer_engine::names::PARTIAL_SUFFIX) && partials.contains(&path) {
                continue;
            }
            if is_dir {
                pending.push(path.clone());
            }
            stale.push(path);
        }
    }
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64) -> Entry {
        Entry {
            path: RelativePath::new(path).unwrap(),
            kind,
            size,
            mtime: (0, 0),
            mode: 0o700,
            target: (kind == EntryKind::Symlink).then(|| "/elsewhere".into()),
        }
    }

    #[test]
    fn excludes_what_barman_excludes_and_picks_a_basis_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("new");
        let reference = dir.path().join("old");
        std::fs::create_dir_all(destination.join("data")).unwrap();
        std::fs::create_dir_all(reference.join("data")).unwrap();
        std::fs::write(destination.join("data/resumed"), b"x").unwrap();
        std::fs::write(destination.join("data/.cut.barsync-partial"), b"x").unwrap();
        std::fs::write(destination.join("data/gone"), b"x").unwrap();
        std::fs::write(reference.join("data/same"), b"x").unwrap();
        let listing = vec![
            entry("backup.info", EntryKind::File, 1),
            entry(".backup.lock", EntryKind::File, 1),
            entry("data", EntryKind::Directory, 0),
            entry("data/pg_tblspc", EntryKind::Directory, 0),
            entry("data/pg_tblspc/16387", EntryKind::Symlink, 0),
            entry("16387", EntryKind::Directory, 0),
            entry("data/resumed", EntryKind::File, 5),
            entry("data/cut", EntryKind::File, 5),
            entry("data/same", EntryKind::File, 5),
            entry("data/new", EntryKind::File, 5),
        ];
        let plan = plan_backup(
            &listing,
            "/p/base/X",
            dir.path(),
            "new",
            &[16387],
            Some(&reference),
            true,
        )
        .unwrap();
        let basis: Vec<(PathBuf, Option<PathBuf>, bool)> = plan
            .jobs
            .iter()
            .map(|j| {
                (
                    j.request.remote_path.clone(),
                    j.request.basis.clone(),
                    j.request.target.write_mode() == Some(WriteMode::LinkIdentical),
                )
            })
            .collect();
        assert_eq!(
            basis,
            vec![
                (
                    "/p/base/X/data/resumed".into(),
                    Some(destination.join("data/resumed")),
                    true
                ),
                (
                    "/p/base/X/data/cut".into(),
                    Some(destination.join("data/.cut.barsync-partial")),
                    false
                ),
                (
                    "/p/base/X/data/same".into(),
                    Some(reference.join("data/same")),
                    true
                ),
                ("/p/base/X/data/new".into(), None, false),
            ]
        );
        assert_eq!(plan.stale, vec![PathBuf::from("data/gone")]);
        assert_eq!(plan.bytes, 20);
        let hostile = vec![entry("data/link", EntryKind::Symlink, 0)];
        assert!(plan_backup(&hostile, "/p", dir.path(), "new", &[], None, false).is_err());
        assert_eq!(
            plan.jobs[0].request.destination,
            Destination::new(dir.path(), RelativePath::new("new/data/resumed").unwrap()).unwrap(),
            "written below the base directory, through the backup's own directory"
        );
    }
}
