//! What the sender reads: the operands of `xfer send` turned into offer entries, each
//! remembering where its bytes come from. Directories are walked here (sorted, parents
//! before their contents), symbolic links and special files are skipped with a warning
//! (or links followed, with loop detection), and `-` stands for standard input.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::error::{Classify, Kind};
use crate::escape::{escape, escape_path};
use crate::frame::{Entry, EntryKind};
use crate::report;

/// The operand that means standard input.
pub const STDIN_OPERAND: &str = "-";
/// Permission bits carried in an offer: never setuid, setgid or sticky.
const PERMISSION_BITS: u32 = 0o777;

/// One offered entry and where its content lives.
#[derive(Debug, Clone)]
pub struct Source {
    pub entry: Entry,
    pub origin: Origin,
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A regular file on disk.
    File(PathBuf),
    /// A directory: no bytes, only its existence and metadata.
    Dir,
    /// Standard input, read once until it ends.
    Stdin,
}

impl Source {
    /// Opens the entry's content for reading (files and standard input).
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        match &self.origin {
            Origin::File(path) => {
                let file = File::open(path)
                    .with_context(|| format!("cannot open {}", escape_path(path)))
                    .classify(Kind::Io)?;
                Ok(Box::new(file))
            }
            Origin::Stdin => Ok(Box::new(std::io::stdin())),
            Origin::Dir => bail!("a directory has no content to read"),
        }
    }

    /// Whether the content can be read again from the start (not a stream).
    pub fn rereadable(&self) -> bool {
        matches!(self.origin, Origin::File(_))
    }

    /// The local path this entry came from, for messages.
    pub fn shown(&self) -> String {
        match &self.origin {
            Origin::File(path) => escape_path(path),
            Origin::Dir => escape(&self.entry.path).into_owned(),
            Origin::Stdin => "standard input".to_string(),
        }
    }
}

/// How to walk the operands.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Send what symbolic links inside a tree point at, instead of skipping them.
    pub follow_symlinks: bool,
    /// The name standard input travels under.
    pub stdin_name: String,
}

/// The offer, and what could not be read while making it.
#[derive(Debug, Default)]
pub struct Collected {
    pub sources: Vec<Source>,
    /// Paths that exist but could not be read (already reported as warnings).
    pub unreadable: usize,
}

/// Turns `xfer send` operands into offer entries. A file or directory named on the
/// command line travels under its last component; a link named there is followed
/// (the user pointed at it). `-` is standard input and must come alone.
pub fn collect(operands: &[PathBuf], options: &WalkOptions) -> Result<Collected> {
    let mut collected = Collected::default();
    if operands.iter().any(|p| p.as_os_str() == STDIN_OPERAND) {
        if operands.len() > 1 {
            bail!(
                "`-` (standard input) must be the only thing sent: a stream of unknown length travels alone"
            );
        }
        collected.sources.push(Source {
            entry: Entry {
                path: options.stdin_name.clone(),
                kind: EntryKind::File,
                size: None,
                mode: None,
                mtime: None,
            },
            origin: Origin::Stdin,
        });
        return Ok(collected);
    }
    for operand in operands {
        let meta = std::fs::metadata(operand)
            .with_context(|| format!("cannot read {}", escape_path(operand)))
            .classify(Kind::Io)?;
        let name = operand_name(operand)?;
        let mut walk = Walk {
            options,
            collected: &mut collected,
            ancestors: HashSet::new(),
        };
        walk.visit(operand, name, &meta);
    }
    Ok(collected)
}

struct Walk<'a> {
    options: &'a WalkOptions,
    collected: &'a mut Collected,
    /// (device, inode) of the directories on the current path, to detect loops.
    ancestors: HashSet<(u64, u64)>,
}

impl Walk<'_> {
    /// Adds `path` (already stat'ed, links resolved) as `name`, recursing into directories.
    fn visit(&mut self, path: &Path, name: String, meta: &Metadata) {
        if meta.is_file() {
            self.collected.sources.push(Source {
                entry: entry(name, EntryKind::File, meta),
                origin: Origin::File(path.to_path_buf()),
            });
        } else if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if !self.ancestors.insert(id) {
                report::warn(&format!(
                    "skipping {}: a link back to a directory it is inside (a loop)",
                    escape_path(path)
                ));
                return;
            }
            self.collected.sources.push(Source {
                entry: entry(name.clone(), EntryKind::Dir, meta),
                origin: Origin::Dir,
            });
            self.visit_children(path, &name);
            self.ancestors.remove(&id);
        } else {
            report::warn(&format!(
                "skipping {}: {} (only files and directories are sent)",
                escape_path(path),
                special_kind(meta)
            ));
        }
    }

    fn visit_children(&mut self, dir: &Path, name: &str) {
        let listing =
            std::fs::read_dir(dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
        let mut children = match listing {
            Ok(children) => children,
            Err(err) => return self.unreadable(dir, &err),
        };
        children.sort_by_key(|child| child.file_name());
        for child in children {
            let path = child.path();
            let Some(child_name) = child.file_name().to_str().map(str::to_string) else {
                report::warn(&format!(
                    "skipping {}: the name is not UTF-8, which the protocol cannot carry",
                    escape_path(&path)
                ));
                continue;
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(err) => {
                    self.unreadable(&path, &err);
                    continue;
                }
            };
            let meta = if meta.file_type().is_symlink() {
                if !self.options.follow_symlinks {
                    report::warn(&format!(
                        "skipping symbolic link {} (--follow-symlinks sends what it points at)",
                        escape_path(&path)
                    ));
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(target) => target,
                    Err(err) => {
                        report::warn(&format!(
                            "skipping symbolic link {}: {err}",
                            escape_path(&path)
                        ));
                        continue;
                    }
                }
            } else {
                meta
            };
            self.visit(&path, format!("{name}/{child_name}"), &meta);
        }
    }

    fn unreadable(&mut self, path: &Path, err: &std::io::Error) {
        report::warn(&format!(
            "cannot read {}: {err}; not sent",
            escape_path(path)
        ));
        self.collected.unreadable += 1;
    }
}

fn entry(path: String, kind: EntryKind, meta: &Metadata) -> Entry {
    Entry {
        path,
        kind,
        // A directory carries no data; its size is 0 rather than null, which the
        // protocol reserves for streams of unknown length.
        size: Some(if kind == EntryKind::File {
            meta.len()
        } else {
            0
        }),
        mode: Some(meta.mode() & PERMISSION_BITS),
        mtime: Some(meta.mtime()),
    }
}

fn special_kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// The name an operand travels under: its last component (for `.` and the like,
/// the directory's own name), which must be UTF-8.
fn operand_name(path: &Path) -> Result<String> {
    let named = match path.file_name() {
        Some(name) => name.to_os_string(),
        None => std::fs::canonicalize(path)
            .ok()
            .and_then(|full| full.file_name().map(|name| name.to_os_string()))
            .with_context(|| format!("{} has no name to send it under", escape_path(path)))?,
    };
    match named.to_str() {
        Some(name) => Ok(name.to_string()),
        None => bail!(
            "{} is not valid UTF-8; the protocol carries UTF-8 names",
            escape_path(path)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(collected: &Collected) -> Vec<(&str, EntryKind)> {
        collected
            .sources
            .iter()
            .map(|source| (source.entry.path.as_str(), source.entry.kind))
            .collect()
    }

    #[test]
    fn a_tree_is_walked_sorted_parents_first_and_links_skipped() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("photos");
        std::fs::create_dir_all(tree.join("b/empty")).unwrap();
        std::fs::write(tree.join("b/z.jpg"), b"z").unwrap();
        std::fs::write(tree.join("a.jpg"), b"a").unwrap();
        std::os::unix::fs::symlink("a.jpg", tree.join("link")).unwrap();
        let collected = collect(std::slice::from_ref(&tree), &WalkOptions::default()).unwrap();
        use EntryKind::*;
        assert_eq!(
            names(&collected),
            [
                ("photos", Dir),
                ("photos/a.jpg", File),
                ("photos/b", Dir),
                ("photos/b/empty", Dir),
                ("photos/b/z.jpg", File)
            ]
        );
        let followed = collect(
            &[tree],
            &WalkOptions {
                follow_symlinks: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(names(&followed).contains(&("photos/link", File)));
    }

    #[test]
    fn link_loops_are_detected_when_following() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("t");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::os::unix::fs::symlink("..", tree.join("sub/up")).unwrap();
        let options = WalkOptions {
            follow_symlinks: true,
            ..Default::default()
        };
        let collected = collect(&[tree], &options).unwrap();
        assert_eq!(
            names(&collected),
            [("t", EntryKind::Dir), ("t/sub", EntryKind::Dir)]
        );
    }

    #[test]
    fn stdin_travels_alone_under_its_name() {
        let options = WalkOptions {
            stdin_name: "backup.tar".into(),
            ..Default::default()
        };
        let collected = collect(&[PathBuf::from("-")], &options).unwrap();
        assert_eq!(collected.sources[0].entry.path, "backup.tar");
        assert_eq!(collected.sources[0].entry.size, None);
        assert!(collect(&[PathBuf::from("-"), PathBuf::from("x")], &options).is_err());
    }

    #[test]
    fn dot_is_sent_under_the_directory_name() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("project");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(operand_name(&dir.join(".")).unwrap(), "project");
    }
}
