//! Pushing a local tree to the far side: list it ([`local_entries`]), compare with the far
//! side's listing, and send the directories, symlinks, changed files and (with `delete`)
//! removals as one batch of push items.

use crate::names::shown_path;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{local_error, mtimes_match, CopyError, CopyOptions, CopyReport, PushTarget};
use crate::confine::RelativePath;
use crate::protocol::{Entry, EntryKind, PushItem, PushOutcome};

/// `base/relative` on the far side (`base` alone for the empty path; no trailing slash).
fn join_remote(base: &Path, relative: &Path) -> PathBuf {
    let base: PathBuf = base.components().collect();
    if relative.as_os_str().is_empty() {
        base
    } else {
        base.join(relative)
    }
}

fn same_file(local: &Entry, remote: Option<&Entry>, options: &CopyOptions) -> bool {
    !options.checksum
        && remote.is_some_and(|r| {
            r.kind == EntryKind::File && r.size == local.size && mtimes_match(r.mtime, local.mtime)
        })
}

/// Lists a local tree like the server lists its own (paths relative to `root`, symlinks not
/// followed).
pub fn local_entries(root: &Path) -> Result<Vec<Entry>, CopyError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut pending = vec![RelativePath::new("").expect("empty is valid")];
    while let Some(dir) = pending.pop() {
        let dir_path = root.join(dir.as_path());
        for item in fs::read_dir(&dir_path).map_err(local_error(&dir_path))? {
            let item = item.map_err(local_error(&dir_path))?;
            let path = item.path();
            let meta = fs::symlink_metadata(&path).map_err(local_error(&path))?;
            let name = item.file_name();
            let relative = dir.join(&name).map_err(|e| CopyError::Local {
                path: path.clone(),
                source: io::Error::other(e),
            })?;
            let kind = if meta.file_type().is_symlink() {
                EntryKind::Symlink
            } else if meta.is_dir() {
                EntryKind::Directory
            } else if meta.is_file() {
                EntryKind::File
            } else {
                continue;
            };
            let target = match kind {
                EntryKind::Symlink => Some(
                    fs::read_link(&path)
                        .map_err(local_error(&path))?
                        .into_os_string(),
                ),
                _ => None,
            };
            if kind == EntryKind::Directory {
                pending.push(relative.clone());
            }
            out.push(Entry {
                path: relative,
                kind,
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                mtime: (meta.mtime(), meta.mtime_nsec() as u32),
                mode: meta.mode() & 0o7777,
                target,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Copies the local `source` to `destination` on the server.
/// `contents`: the source had a trailing slash (copy what is inside it).
pub fn push(
    client: &mut dyn PushTarget,
    source: &Path,
    contents: bool,
    destination: &Path,
    options: &CopyOptions,
    mut progress: impl FnMut(&PushOutcome),
) -> Result<CopyReport, CopyError> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    let mut report = CopyReport::default();
    let meta = fs::symlink_metadata(source).map_err(local_error(source))?;
    let name = PathBuf::from(source.file_name().unwrap_or_default());
    let traffic_before = client.traffic();
    let mut items = Vec::new();
    if meta.is_file() {
        let listed = client.list(destination, false)?;
        let target = match &listed {
            Ok(entries) if !(entries.len() == 1 && entries[0].path.is_empty()) => {
                join_remote(destination, &name)
            }
            _ => destination.to_path_buf(),
        };
        let remote = match client.list(&target, false)? {
            Ok(entries) if entries.len() == 1 && entries[0].path.is_empty() => {
                Some(entries[0].clone())
            }
            _ => None,
        };
        let local = Entry {
            path: RelativePath::new("").expect("empty is valid"),
            kind: EntryKind::File,
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            mode: meta.mode() & 0o7777,
            target: None,
        };
        report.files = 1;
        if same_file(&local, remote.as_ref(), options) {
            report.skipped = 1;
        } else {
            items.push(PushItem::File {
                local: source.to_path_buf(),
                remote_path: target,
            });
        }
    } else {
        if !options.recursive {
            return Err(CopyError::NotRecursive(source.display().to_string()));
        }
        let remote_root = if contents {
            destination.to_path_buf()
        } else {
            join_remote(destination, &name)
        };
        if !contents
            && !destination.as_os_str().is_empty()
            && client.list(destination, false)?.is_err()
        {
            // As rsync: a missing destination directory is created (its parent must exist).
            items.push(PushItem::Directory {
                remote_path: destination.to_path_buf(),
                mode: 0o755,
            });
        }
        let remote: BTreeMap<RelativePath, Entry> = match client.list(&remote_root, true)? {
            Ok(entries) => entries.into_iter().map(|e| (e.path.clone(), e)).collect(),
            Err(_) => {
                items.push(PushItem::Directory {
                    remote_path: remote_root.clone(),
                    mode: meta.mode() & 0o7777,
                });
                BTreeMap::new()
            }
        };
        let local = local_entries(source)?;
        let local_paths: BTreeSet<&RelativePath> = local.iter().map(|e| &e.path).collect();
        for entry in &local {
            let remote_path = join_remote(&remote_root, entry.path.as_path());
            let there = remote.get(&entry.path);
            match entry.kind {
                EntryKind::Directory if there.map(|r| r.kind) != Some(EntryKind::Directory) => {
                    items.push(PushItem::Directory {
                        remote_path,
                        mode: entry.mode,
                    });
                }
                EntryKind::Symlink
                    if there.and_then(|r| r.target.as_deref()) != entry.target.as_deref() =>
                {
                    report.symlinks += 1;
                    items.push(PushItem::Symlink {
                        remote_path,
                        target: PathBuf::from(entry.target.clone().unwrap_or_default()),
                    });
                }
                EntryKind::File => {
                    report.files += 1;
                    if same_file(entry, there, options) {
                        report.skipped += 1;
                    } else {
                        items.push(PushItem::File {
                            local: source.join(entry.path.as_path()),
                            remote_path,
                        });
                    }
                }
                _ => {}
            }
        }
        if options.delete {
            let mut removed: Vec<&RelativePath> = Vec::new();
            for path in remote.keys() {
                // `Path::starts_with` compares whole components.
                let inside_removed = removed
                    .iter()
                    .any(|r| path.as_path().starts_with(r.as_path()));
                if !local_paths.contains(path) && !inside_removed {
                    removed.push(path);
                    report.deleted += 1;
                    items.push(PushItem::Remove {
                        remote_path: join_remote(&remote_root, path.as_path()),
                    });
                }
            }
        }
    }
    if options.dry_run {
        for item in &items {
            report.plan.push(match item {
                PushItem::Directory { remote_path, .. } => {
                    format!("mkdir {}", shown_path(remote_path))
                }
                PushItem::Symlink {
                    remote_path,
                    target,
                } => format!(
                    "symlink {} -> {}",
                    shown_path(remote_path),
                    shown_path(target)
                ),
                PushItem::File { local, remote_path } => {
                    format!("send {} -> {}", shown_path(local), shown_path(remote_path))
                }
                PushItem::Remove { remote_path } => {
                    format!("delete {}", shown_path(remote_path))
                }
            });
        }
        return Ok(report);
    }
    let verified_by = client.verified_by();
    for outcome in client.apply(&items, &mut progress)? {
        match (&items[outcome.index], outcome.result) {
            (PushItem::File { local, .. }, Ok(())) => {
                report.transferred += 1;
                report.bytes += fs::metadata(local).map(|m| m.len()).unwrap_or(0);
                *report.verified_by.entry(verified_by).or_insert(0) += 1;
            }
            (_, Ok(())) => {}
            (_, Err(message)) => report
                .errors
                .push(format!("{}: {message}", shown_path(&outcome.remote_path))),
        }
    }
    if let (Some((sent0, received0)), Some((sent1, received1))) = (traffic_before, client.traffic())
    {
        report.sent_bytes = sent1 - sent0;
        report.received_bytes = received1 - received0;
    }
    Ok(report)
}
