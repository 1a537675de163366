//! An independent tree checker: walks a source and its copy with `lstat` (never
//! following a link) and lists every property that differs, entry by entry — type,
//! bytes, mode & 0o7777, mtime to the nanosecond, owner and group, link targets,
//! hard-link groups, allocated blocks, extended attributes, device numbers. It shares
//! no code with the crate, so a test that compares with it checks what arrived on disk,
//! not what xfer believes it did.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What one entry looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    /// BLAKE3 of the content, for regular files.
    pub content: Option<[u8; 32]>,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub uid: u32,
    pub gid: u32,
    /// The target bytes of a symbolic link.
    pub target: Option<Vec<u8>>,
    /// For a non-directory with more than one link inside the tree: every path of its
    /// group, sorted (so two trees compare group by group, whatever the inode numbers).
    pub group: Option<Vec<Vec<u8>>>,
    /// Allocated bytes (`st_blocks` × 512).
    pub allocated: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub rdev: u64,
    /// The inode number: a copy never shares it, so [`differences`] ignores it,
    /// but a tree that must stay as it was (`==`) keeps it (a file replaced by an
    /// equal one is a change).
    pub ino: u64,
}

/// A tree: relative path bytes (the root is the empty path) to what is there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

/// Which properties a comparison looks at; `Check::archive()` is what `rsync -a`
/// keeps (as non-root: no owners), and each method adds or relaxes one property.
#[derive(Debug, Clone)]
pub struct Check {
    pub mode_mask: u32,
    pub mtimes: bool,
    /// Compare directory mtimes too (a server or a run that adds files changes them).
    pub dir_mtimes: bool,
    pub owners: bool,
    pub hard_links: bool,
    pub xattrs: bool,
    /// Allocated bytes may differ by at most this much per file (`None`: not compared).
    pub blocks_slack: Option<u64>,
}

impl Check {
    pub fn archive() -> Self {
        Check {
            mode_mask: 0o7777,
            mtimes: true,
            dir_mtimes: true,
            owners: false,
            hard_links: true,
            xattrs: false,
            blocks_slack: None,
        }
    }

    pub fn mode_mask(mut self, mask: u32) -> Self {
        self.mode_mask = mask;
        self
    }

    pub fn owners(mut self) -> Self {
        self.owners = true;
        self
    }

    pub fn xattrs(mut self) -> Self {
        self.xattrs = true;
        self
    }

    pub fn no_hard_links(mut self) -> Self {
        self.hard_links = false;
        self
    }

    pub fn no_dir_mtimes(mut self) -> Self {
        self.dir_mtimes = false;
        self
    }

    pub fn blocks_within(mut self, slack: u64) -> Self {
        self.blocks_slack = Some(slack);
        self
    }
}

/// Walks `root` with `lstat`, never following a link.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    walk(root, Vec::new(), &mut nodes, &mut inodes);
    for paths in inodes.values_mut().filter(|paths| paths.len() > 1) {
        paths.sort();
        for path in paths.iter() {
            nodes.get_mut(path).expect("walked").group = Some(paths.clone());
        }
    }
    Snapshot { nodes }
}

fn walk(
    path: &Path,
    relative: Vec<u8>,
    nodes: &mut BTreeMap<Vec<u8>, Node>,
    inodes: &mut HashMap<(u64, u64), Vec<Vec<u8>>>,
) {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
    let node = node_of(path, &meta);
    if node.kind != "dir" && meta.nlink() > 1 {
        inodes
            .entry((meta.dev(), meta.ino()))
            .or_default()
            .push(relative.clone());
    }
    let is_dir = node.kind == "dir";
    nodes.insert(relative.clone(), node);
    if !is_dir {
        return;
    }
    for child in fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {path:?}: {e}")) {
        let child = child.expect("dir entry");
        let mut name = relative.clone();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(child.file_name().as_bytes());
        walk(&child.path(), name, nodes, inodes);
    }
}

fn node_of(path: &Path, meta: &fs::Metadata) -> Node {
    let kind = kind_of(&meta.file_type());
    Node {
        kind,
        content: (kind == "file").then(|| hash_file(path)),
        size: if kind == "file" { meta.len() } else { 0 },
        mode: meta.mode() & 0o7777,
        mtime: (meta.mtime(), meta.mtime_nsec()),
        uid: meta.uid(),
        gid: meta.gid(),
        target: (kind == "symlink").then(|| {
            fs::read_link(path)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        }),
        group: None,
        allocated: meta.blocks() * 512,
        xattrs: xattrs_of(path),
        rdev: meta.rdev(),
        ino: meta.ino(),
    }
}

fn kind_of(kind: &fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "dir"
    } else if kind.is_file() {
        "file"
    } else if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "char"
    } else if kind.is_block_device() {
        "block"
    } else {
        "other"
    }
}

fn hash_file(path: &Path) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    std::io::copy(&mut file, &mut hasher).expect("read for hashing");
    *hasher.finalize().as_bytes()
}

/// Every extended attribute of `path` itself (`llistxattr`/`lgetxattr`).
pub fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let mut names = vec![0u8; 65536];
    // SAFETY: the buffer is valid for its length; the path is NUL-terminated.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len <= 0 {
        return BTreeMap::new();
    }
    names.truncate(len as usize);
    let mut found = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|name| !name.is_empty()) {
        let c_name = CString::new(name).expect("no NUL");
        let mut value = vec![0u8; 65536];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            found.insert(name.to_vec(), value);
        }
    }
    found
}

/// Gives `path` 20 `user.*` attributes of 64 KiB each (`user.a00` ...), more than
/// one entry may carry (1 MiB of values, PROTOCOL 16.1), and returns the first 16 by
/// name, which fit: what a receiver should end up holding. `None`, said, where the
/// filesystem takes fewer (a tmpfs takes them; ext4 about 4 KiB in all).
pub fn more_xattrs_than_an_entry_carries(path: &Path) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let value = |i: u8| vec![i; 65_536];
    for i in 0..20u8 {
        if let Err(err) = set_xattr(path, &format!("user.a{i:02}"), &value(i)) {
            eprintln!("skipped: this filesystem takes no 20 attributes of 64 KiB: {err}");
            return None;
        }
    }
    Some(
        (0..16u8)
            .map(|i| (format!("user.a{i:02}").into_bytes(), value(i)))
            .collect(),
    )
}

/// Sets an extended attribute on `path` itself (not through a link).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let c_name = CString::new(name).expect("no NUL");
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the mtime of `path` itself (a link is not followed) to the nanosecond.
pub fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let times = [
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: nanos,
        },
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: nanos,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// Every difference between `source` and `copy` under `check`, one line each; empty
/// when the copy is faithful.
pub fn differences(source: &Snapshot, copy: &Snapshot, check: &Check) -> Vec<String> {
    let mut found = Vec::new();
    for (path, want) in &source.nodes {
        let shown = String::from_utf8_lossy(path).into_owned();
        match copy.nodes.get(path) {
            None => found.push(format!("{shown:?}: missing from the copy")),
            Some(got) => compare(&shown, want, got, check, &mut found),
        }
    }
    for path in copy
        .nodes
        .keys()
        .filter(|path| !source.nodes.contains_key(*path))
    {
        found.push(format!(
            "{:?}: only in the copy",
            String::from_utf8_lossy(path)
        ));
    }
    found
}

fn compare(shown: &str, want: &Node, got: &Node, check: &Check, found: &mut Vec<String>) {
    let mut differs = |what: &str, want: String, got: String| {
        if want != got {
            found.push(format!(
                "{shown:?}: {what} {want} in the source, {got} in the copy"
            ));
        }
    };
    differs("type", want.kind.into(), got.kind.into());
    if want.kind != got.kind {
        return;
    }
    differs("size", want.size.to_string(), got.size.to_string());
    differs(
        "content",
        format!("{:?}", want.content),
        format!("{:?}", got.content),
    );
    if want.kind != "symlink" {
        let mask = check.mode_mask;
        differs(
            "mode",
            format!("{:o}", want.mode & mask),
            format!("{:o}", got.mode & mask),
        );
    }
    if check.mtimes && (check.dir_mtimes || want.kind != "dir") {
        differs(
            "mtime",
            format!("{:?}", want.mtime),
            format!("{:?}", got.mtime),
        );
    }
    if check.owners {
        differs(
            "owner",
            format!("{}:{}", want.uid, want.gid),
            format!("{}:{}", got.uid, got.gid),
        );
    }
    differs(
        "link target",
        format!("{:?}", want.target),
        format!("{:?}", got.target),
    );
    if check.hard_links {
        differs(
            "hard-link group",
            format!("{:?}", want.group),
            format!("{:?}", got.group),
        );
    }
    if check.xattrs {
        differs(
            "xattrs",
            format!("{:?}", want.xattrs),
            format!("{:?}", got.xattrs),
        );
    }
    if matches!(want.kind, "char" | "block") {
        differs("device", want.rdev.to_string(), got.rdev.to_string());
    }
    if let (Some(slack), "file") = (check.blocks_slack, want.kind) {
        if want.allocated.abs_diff(got.allocated) > slack {
            found.push(format!(
                "{shown:?}: allocated {} bytes in the source, {} in the copy",
                want.allocated, got.allocated
            ));
        }
    }
}

/// Fails the test with every difference listed, if there is any.
pub fn assert_faithful(source: &Path, copy: &Path, check: &Check) {
    let found = differences(&snapshot(source), &snapshot(copy), check);
    assert!(
        found.is_empty(),
        "{} differences between {source:?} and {copy:?}:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// A path built from raw bytes (for names that are not UTF-8).
pub fn raw(dir: &Path, name: &[u8]) -> std::path::PathBuf {
    dir.join(OsStr::from_bytes(name))
}
