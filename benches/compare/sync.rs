//! The `sync` section: keeping a copy up to date, xfer against an rsync daemon in
//! the same run, one block per row of issue 21's targets. Every update starts from
//! the same old copy (restored before each run, untimed); the bytes on the wire are
//! counted by a relay between the two sides, both directions, in every run of the
//! update rows (so both tools pay for the relay alike).
//!
//! Rows that need what this xfer lacks (delta: `-W/--whole-file`; mirroring:
//! `--delete`, both read from `xfer send --help`) print n/a for xfer, and rsync's
//! figures alone.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    Contender, GIB, Row, Sample, alternate, alternate_with, clean, fresh_dir, have, make_file,
    make_tree, median, pipelines, ratio, report, rsync_session, warm, xfer_bin, xfer_run,
    xfer_session,
};

/// What this xfer can do, as its `send --help` says.
struct Flags {
    /// Delta transfer, and `-W/--whole-file` to turn it off.
    delta: bool,
    /// `--delete`.
    delete: bool,
}

fn flags() -> Flags {
    let help = Command::new(xfer_bin())
        .args(["send", "--help"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    Flags {
        delta: help.contains("--whole-file"),
        delete: help.contains("--delete"),
    }
}

/// Bytes on the wire of every run, by contender: (towards the receiver, back).
#[derive(Default)]
struct Wire(RefCell<BTreeMap<&'static str, Vec<(u64, u64)>>>);

impl Wire {
    fn note(&self, name: &'static str, bytes: Option<(u64, u64)>) {
        if let Some(bytes) = bytes {
            self.0.borrow_mut().entry(name).or_default().push(bytes);
        }
    }

    /// The run of median total bytes: (towards the receiver, back).
    fn median(&self, name: &str) -> Option<(u64, u64)> {
        let runs = self.0.borrow();
        let mut runs = runs.get(name)?.clone();
        runs.sort_by_key(|(up, down)| up + down);
        runs.get(runs.len() / 2).copied()
    }

    fn total(&self, name: &str) -> Option<u64> {
        self.median(name).map(|(up, down)| up + down)
    }

    fn show(&self, name: &str, file: u64) {
        if let Some((up, down)) = self.median(name) {
            println!(
                "  on the wire: {name:<44} {:>9.3} MiB ({:.3} out, {:.3} back), {:.3}% of the file",
                mib(up + down),
                mib(up),
                mib(down),
                (up + down) as f64 * 100.0 / file as f64
            );
        }
    }

    /// Prints total(a) / total(b), against a bound.
    fn ratio(&self, a: &str, b: &str, bound: f64) {
        let line = match (self.total(a), self.total(b)) {
            (Some(x), Some(y)) => {
                let r = x as f64 / y as f64;
                let verdict = if r <= bound { "met" } else { "MISSED" };
                format!("{r:.3}x (target <= {bound:.2}: {verdict})")
            }
            _ => "n/a (one of them did not run)".into(),
        };
        println!("    bytes {a} / {b}: {line}");
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

const NO_DELTA: &str =
    "n/a: this xfer has no delta (`-W/--whole-file` is not in `xfer send --help`)";
const NO_DELETE: &str = "n/a: this xfer has no `--delete` (not in `xfer send --help`)";

pub(super) fn sync(dir: &Path, rounds: usize) {
    println!("\n== sync: keeping a copy up to date, xfer against an rsync daemon ==");
    let flags = flags();
    println!(
        "  (this xfer: delta {}, --delete {}; rsync: {})",
        yes(flags.delta),
        yes(flags.delete),
        if have("rsync") {
            "found"
        } else {
            "NOT FOUND, its rows are skipped"
        }
    );
    let work = dir.join("sync");
    clean(&work);
    std::fs::create_dir_all(&work).unwrap();
    let rows = std::env::var("XFER_BENCH_SYNC_ROWS").unwrap_or_default();
    let wanted = |row: &str| rows.is_empty() || rows.split(',').any(|r| r == row);
    if wanted("big") {
        big_updates(&work, rounds, &flags);
    }
    // Part of `big`; alone only when named (the 5% question needs many rounds).
    if rows.split(',').any(|r| r == "nothing_in_common") {
        nothing_in_common_alone(&work, rounds, &flags);
    }
    if wanted("tree_update") {
        tree_update(&work, rounds, &flags);
    }
    if wanted("new_small_files") {
        new_small_files(&work, rounds);
    }
    if wanted("new_tree_200k") {
        new_tree_200k(&work, rounds.min(3));
    }
    clean(&work);
}

/// The `sync-big` section: the rows of the 1 GiB file alone.
pub(super) fn sync_big(dir: &Path, rounds: usize) {
    println!("\n== sync-big: one 1 GiB file kept up to date, xfer against an rsync daemon ==");
    let work = dir.join("sync");
    clean(&work);
    std::fs::create_dir_all(&work).unwrap();
    big_updates(&work, rounds, &flags());
    clean(&work);
}

/// xfer's `send` arguments of a row, and those `XFER_BENCH_SYNC_ARGS` adds.
fn send_args(row: &[&'static str]) -> Vec<&'static str> {
    static EXTRA: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let extra = EXTRA.get_or_init(|| {
        let text = std::env::var("XFER_BENCH_SYNC_ARGS").unwrap_or_default();
        let text: &'static str = Box::leak(text.into_boxed_str());
        text.split_whitespace().collect()
    });
    row.iter().chain(extra).copied().collect()
}

fn yes(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

// ---- one 1 GiB file, updated -------------------------------------------------------

/// An old mtime for the receiver's copy, so that an update of the same size is
/// never taken for the same file (by rsync's quick check or xfer's `same`).
const OLD: std::time::Duration = std::time::Duration::from_secs(1_000_000_000);

const X_DELTA: &str = "xfer send -> recv --overwrite (delta)";
const R_DELTA: &str = "rsync -a to a daemon (delta)";
const X_LIMIT: &str = "xfer --limit-rate 10M (delta)";
const R_LIMIT: &str = "rsync -a --bwlimit=10M (delta)";
const X_WHOLE: &str = "xfer -W (delta off)";

/// The receiver's old copy at `out/big.bin`: `base`, restored before every run.
struct OldCopy<'a> {
    base: &'a Path,
    out: PathBuf,
}

impl OldCopy<'_> {
    fn restore(&self) {
        clean(&self.out);
        std::fs::create_dir_all(&self.out).unwrap();
        let old = self.out.join("big.bin");
        std::fs::copy(self.base, &old).unwrap();
        let file = std::fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + OLD).unwrap();
        file.sync_all().unwrap();
    }

    /// Whether the copy now holds `new` (length and a few samples: a full compare
    /// of 1 GiB would cost more than the run).
    fn holds(&self, new: &Path) -> bool {
        let read = |path: &Path| -> Vec<u8> {
            let mut file = std::fs::File::open(path).unwrap();
            let len = file.metadata().unwrap().len();
            let mut sample = Vec::new();
            for at in [0, len / 2, len.saturating_sub(4096)] {
                let mut buf = vec![0; 4096];
                file.seek(SeekFrom::Start(at)).unwrap();
                let n = std::io::Read::read(&mut file, &mut buf).unwrap();
                sample.extend_from_slice(&buf[..n]);
            }
            sample.extend_from_slice(&len.to_le_bytes());
            sample
        };
        read(&self.out.join("big.bin")) == read(new)
    }
}

/// Runs `rows` with the receiver's old copy (a 1 GiB `base.bin` under `work`) and
/// where the new version goes (`src/big.bin`), then removes both.
fn with_old_copy(work: &Path, rows: impl FnOnce(&OldCopy<'_>, &Path)) {
    let base = work.join("base.bin");
    make_file(&base, GIB, 11);
    let new = work.join("src").join("big.bin");
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    let old = OldCopy {
        base: &base,
        out: work.join("out"),
    };
    rows(&old, &new);
    clean(&base);
    clean(new.parent().unwrap());
}

/// One update of the 1 GiB file: xfer (delta) against rsync, bytes and time.
fn big_updates(work: &Path, rounds: usize, flags: &Flags) {
    with_old_copy(work, |old, new| updates(old, new, rounds, flags));
}

/// The rows of [`big_updates`].
fn updates(old: &OldCopy<'_>, new: &Path, rounds: usize, flags: &Flags) {
    let mib_at = |at: u64| {
        move |new: &Path| {
            std::fs::copy(base_of(new), new).unwrap();
            let mut file = std::fs::File::options().write(true).open(new).unwrap();
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&super::pattern(1 << 20, 5)).unwrap();
        }
    };
    update(
        "a 1 GiB file with 1 MiB overwritten in the middle",
        old,
        new,
        mib_at(GIB / 2),
        rounds,
        flags,
        &|wire, results| {
            wire.ratio(X_DELTA, R_DELTA, 1.1);
            ratio(results, X_DELTA, R_DELTA, Some(1.0));
            ratio(results, X_LIMIT, R_LIMIT, Some(1.0));
        },
    );
    update(
        "100 bytes inserted at the start of the 1 GiB file",
        old,
        new,
        |new: &Path| {
            let mut file = std::fs::File::create(new).unwrap();
            file.write_all(&super::pattern(100, 6)).unwrap();
            std::io::copy(&mut std::fs::File::open(base_of(new)).unwrap(), &mut file).unwrap();
        },
        rounds,
        flags,
        &|wire, results| {
            match wire.total(X_DELTA) {
                Some(bytes) => {
                    let share = bytes as f64 / GIB as f64;
                    let verdict = if share <= 0.02 { "met" } else { "MISSED" };
                    println!(
                        "    bytes {X_DELTA} / the file: {:.3}% (target <= 2%: {verdict})",
                        share * 100.0
                    );
                }
                None => println!("    bytes {X_DELTA} / the file: n/a"),
            }
            wire.ratio(X_DELTA, R_DELTA, 1.1);
            ratio(results, X_DELTA, R_DELTA, Some(1.0));
        },
    );
    update(
        "10 MiB appended to the 1 GiB file",
        old,
        new,
        |new: &Path| {
            std::fs::copy(base_of(new), new).unwrap();
            let mut file = std::fs::File::options().append(true).open(new).unwrap();
            file.write_all(&super::pattern(10 << 20, 7)).unwrap();
        },
        rounds,
        flags,
        &|wire, results| {
            // rsync's bytes are the appended bytes plus its signatures.
            wire.ratio(X_DELTA, R_DELTA, 1.05);
            ratio(results, X_DELTA, R_DELTA, Some(1.0));
        },
    );
    nothing_in_common(old, new, rounds, flags);
}

/// The row of a new file with nothing in common, without the other rows of `big`.
fn nothing_in_common_alone(work: &Path, rounds: usize, flags: &Flags) {
    with_old_copy(work, |old, new| nothing_in_common(old, new, rounds, flags));
}

/// The base file a new version is made from (`base.bin` beside `src/`).
fn base_of(new: &Path) -> PathBuf {
    new.parent().unwrap().parent().unwrap().join("base.bin")
}

/// Makes the new version with `make`, then runs xfer and rsync against the old
/// copy (and, for the first row only, both rate-limited), and prints the figures
/// and `verdicts`.
fn update(
    title: &str,
    old: &OldCopy<'_>,
    new: &Path,
    make: impl Fn(&Path),
    rounds: usize,
    flags: &Flags,
    verdicts: &dyn Fn(&Wire, &[Row]),
) {
    println!("\n  -- {title} --");
    make(new);
    warm(new);
    let wire = Wire::default();
    let limited = title.contains("overwritten");
    let xfer = |name: &'static str, send: &'static [&'static str]| -> Contender<'_> {
        let wire = &wire;
        (
            name,
            Box::new(move || {
                old.restore();
                let send = send_args(send);
                let (sample, bytes) = xfer_session(new, &old.out, &send, &["--overwrite"], true);
                if !old.holds(new) {
                    println!("  ({name}: the copy does NOT hold the new version)");
                }
                wire.note(name, bytes);
                Some(sample)
            }),
        )
    };
    let rsync = |name: &'static str, args: &'static [&'static str]| -> Contender<'_> {
        let wire = &wire;
        (
            name,
            Box::new(move || {
                old.restore();
                let conf_dir = old.out.parent().unwrap();
                let (sample, bytes) = rsync_session(conf_dir, &[new], &old.out, args, true)?;
                wire.note(name, bytes);
                Some(sample)
            }),
        )
    };
    let mut contenders: Vec<Contender> = Vec::new();
    if flags.delta {
        contenders.push(xfer(X_DELTA, &[]));
        if limited {
            contenders.push(xfer(X_LIMIT, &["--limit-rate", "10M"]));
        }
    } else {
        println!("  {X_DELTA}: {NO_DELTA}");
    }
    if have("rsync") {
        contenders.push(rsync(R_DELTA, &["-a"]));
        if limited {
            contenders.push(rsync(R_LIMIT, &["-a", "--bwlimit=10M"]));
        }
    }
    // No unmeasured round: every run starts from a restored copy anyway.
    let results = alternate_with(rounds, &mut contenders, false);
    drop(contenders);
    report(&results, 0);
    for name in [X_DELTA, R_DELTA, X_LIMIT, R_LIMIT] {
        wire.show(name, GIB);
    }
    println!("  ratios:");
    verdicts(&wire, &results);
}

/// A new version with nothing in common with the old copy: delta against a plain
/// send (`-W`), which it must cost at most 1.05x of.
fn nothing_in_common(old: &OldCopy<'_>, new: &Path, rounds: usize, flags: &Flags) {
    println!("\n  -- a new 1 GiB file with nothing in common with the old copy --");
    if !flags.delta {
        println!("  {X_DELTA} against {X_WHOLE}: {NO_DELTA}");
        return;
    }
    make_file(new, GIB, 12);
    warm(new);
    let run = |send: &'static [&'static str]| {
        move || {
            old.restore();
            let send = send_args(send);
            Some(xfer_session(new, &old.out, &send, &["--overwrite"], false).0)
        }
    };
    let mut contenders: Vec<Contender> = vec![
        (X_DELTA, Box::new(run(&[]))),
        (X_WHOLE, Box::new(run(&["-W"]))),
    ];
    let results = alternate_with(rounds, &mut contenders, false);
    drop(contenders);
    report(&results, GIB);
    println!("  ratios of median times:");
    ratio(&results, X_DELTA, X_WHOLE, Some(1.05));
}

// ---- a tree, updated and mirrored --------------------------------------------------

const TREE_DIRS: usize = 100;
const TREE_FILES: usize = 100;
const CHANGED: usize = 100;
const DELETED: usize = 50;

const X_MIRROR: &str = "xfer send --delete -> recv --overwrite";
const R_MIRROR: &str = "rsync -a --delete to a daemon";

/// 10 000 files of which 100 changed by a few bytes and 50 were deleted at the
/// source: xfer `--delete` against `rsync -a --delete`, time and bytes.
fn tree_update(work: &Path, rounds: usize, flags: &Flags) {
    println!(
        "\n  -- a tree of {} files, {CHANGED} changed by a few bytes and {DELETED} deleted, mirrored --",
        TREE_DIRS * TREE_FILES
    );
    let base = work.join("tree-base").join("t");
    make_tree(&base, TREE_DIRS, TREE_FILES);
    let src = work.join("tree-src");
    clean(&src);
    std::fs::create_dir_all(&src).unwrap();
    copy_tree(&base, &src);
    let tree = src.join("t");
    let every = TREE_DIRS * TREE_FILES / (CHANGED + DELETED);
    for (k, n) in (0..CHANGED + DELETED)
        .map(|k| (k, k * every))
        .collect::<Vec<_>>()
    {
        let file = tree
            .join(format!("d{:04}", n / TREE_FILES))
            .join(format!("f{:03}", n % TREE_FILES));
        if k < CHANGED {
            let mut handle = std::fs::File::options().write(true).open(&file).unwrap();
            handle.write_all(b"changed!").unwrap();
            handle
                .set_modified(std::time::UNIX_EPOCH + OLD * 2)
                .unwrap();
        } else {
            std::fs::remove_file(&file).unwrap();
        }
    }
    let out = work.join("tree-out");
    let restore = || {
        clean(&out);
        std::fs::create_dir_all(&out).unwrap();
        copy_tree(&base, &out);
        rustix::fs::sync();
    };
    let expected = TREE_DIRS * TREE_FILES - DELETED;
    let wire = Wire::default();
    let mut contenders: Vec<Contender> = Vec::new();
    if flags.delete {
        contenders.push((
            X_MIRROR,
            Box::new(|| {
                restore();
                let send = ["--delete"];
                let (sample, bytes) = xfer_session(&tree, &out, &send, &["--overwrite"], true);
                check_mirror(X_MIRROR, &tree, &out.join("t"), expected);
                wire.note(X_MIRROR, bytes);
                Some(sample)
            }),
        ));
    } else {
        println!("  {X_MIRROR}: {NO_DELETE}");
    }
    if have("rsync") {
        contenders.push((
            R_MIRROR,
            Box::new(|| {
                restore();
                let args = ["-a", "--delete"];
                let (sample, bytes) = rsync_session(work, &[&tree], &out, &args, true)?;
                check_mirror(R_MIRROR, &tree, &out.join("t"), expected);
                wire.note(R_MIRROR, bytes);
                Some(sample)
            }),
        ));
    }
    let results = alternate_with(rounds, &mut contenders, false);
    drop(contenders);
    report(&results, 0);
    let changed = CHANGED as u64 * 2048;
    for name in [X_MIRROR, R_MIRROR] {
        wire.show(name, changed);
    }
    println!("  (\"of the file\" above: of the changed files' bytes, about {changed} B)");
    println!("  ratios:");
    ratio(&results, X_MIRROR, R_MIRROR, Some(1.0));
    wire.ratio(X_MIRROR, R_MIRROR, 1.1);
    clean(&out);
    clean(&src);
    clean(base.parent().unwrap());
}

/// `cp -a FROM INTO/`: names, bytes and times as they are.
fn copy_tree(from: &Path, into: &Path) {
    let copied = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(into)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a failed");
}

/// Says so if the mirror does not hold exactly the source's files (names and bytes).
fn check_mirror(name: &str, src: &Path, mirror: &Path, expected: usize) {
    let listing = |root: &Path| -> Vec<(PathBuf, u64)> {
        let mut files = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else {
                    let bytes = std::fs::read(entry.path()).unwrap();
                    let sum = bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
                    files.push((entry.path().strip_prefix(root).unwrap().into(), sum));
                }
            }
        }
        files.sort();
        files
    };
    let (want, got) = (listing(src), listing(mirror));
    if want.len() != expected || want != got {
        println!(
            "  ({name}: the mirror does NOT match: {} files there, {} at the source)",
            got.len(),
            want.len()
        );
    }
}

// ---- new trees of small files ------------------------------------------------------

const X_NEW: &str = "xfer send DIR -> xfer recv --dir (empty)";
const T_NC: &str = "tar c | nc -> nc -l | tar x, no check";
const T_NC_SYNC: &str = "the same tar | nc, then sync -f (durable)";
const R_NEW: &str = "rsync -a to a daemon (empty)";
const R_NEW_SYNC: &str = "the same rsync -a, then sync -f (durable)";

/// The contenders for a new tree at `tree` (named `name` in its parent): xfer,
/// tar | nc and rsync -a, each into a fresh directory under `out`; and the last
/// two again followed by `sync -f` on the target, since xfer's `ok` means the file
/// is on disk and theirs do not (what that costs them, measured alike).
fn new_tree_contenders<'a>(tree: &'a Path, out: &'a Path) -> Vec<Contender<'a>> {
    let mut contenders: Vec<Contender> = vec![(
        X_NEW,
        Box::new(move || Some(xfer_run(tree, &fresh_dir(out), &[], &[], false).0)),
    )];
    if have("nc") && have("tar") {
        for (name, durable) in [(T_NC, false), (T_NC_SYNC, true)] {
            contenders.push((name, Box::new(move || Some(tar_nc(tree, out, durable)))));
        }
    } else {
        println!("  (skipping tar | nc: nc or tar is not installed)");
    }
    if have("rsync") {
        for (name, durable) in [(R_NEW, false), (R_NEW_SYNC, true)] {
            contenders.push((
                name,
                Box::new(move || {
                    let into = fresh_dir(out);
                    std::fs::create_dir_all(&into).unwrap();
                    let conf_dir = out.parent().unwrap();
                    let (mut sample, _) = rsync_session(conf_dir, &[tree], &into, &["-a"], false)?;
                    if durable {
                        // The daemon has exited: its files are all written.
                        let started = std::time::Instant::now();
                        sync_fs(&into);
                        sample.seconds += started.elapsed().as_secs_f64();
                    }
                    Some(sample)
                }),
            ));
        }
    }
    contenders
}

/// `tar c | nc` into `nc -l | tar x`, into a fresh directory under `out`; with
/// `durable`, the receiving side ends with `sync -f` on it.
fn tar_nc(tree: &Path, out: &Path, durable: bool) -> Sample {
    let into = fresh_dir(out);
    std::fs::create_dir_all(&into).unwrap();
    let port = super::free_port();
    let then_sync = match durable {
        true => format!(" && sync -f {}", into.display()),
        false => String::new(),
    };
    let receive = format!(
        "nc -l 127.0.0.1 {port} | tar x -C {}{then_sync}",
        into.display()
    );
    let (parent, name) = (tree.parent().unwrap(), tree.file_name().unwrap());
    let send = |port| {
        format!(
            "set -o pipefail; tar c -C {} {} | nc -N 127.0.0.1 {port}",
            parent.display(),
            name.to_string_lossy()
        )
    };
    pipelines(&receive, port, send, false).0
}

/// `sync -f DIR`: the filesystem holding `dir` flushed to disk.
fn sync_fs(dir: &Path) {
    let synced = Command::new("sync").arg("-f").arg(dir).status().unwrap();
    assert!(synced.success(), "sync -f failed");
}

/// 10 000 new files of 4 KiB: at most 1.3x tar | nc, at most 0.8x rsync -a.
fn new_small_files(work: &Path, rounds: usize) {
    println!("\n  -- 10 000 new files of 4 KiB into an empty directory --");
    let tree = work.join("small");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..10_000u64 {
        std::fs::write(tree.join(format!("{i:05}")), super::pattern(4096, i)).unwrap();
    }
    // Every run writes into a directory of its own, all removed after: ext4 makes a
    // file created right after many were deleted slow to allocate.
    let out = work.join("small-out");
    let mut contenders = new_tree_contenders(&tree, &out);
    let results = alternate(rounds, &mut contenders);
    drop(contenders);
    report(&results, 10_000 * 4096);
    println!("  ratios of median times:");
    ratio(&results, X_NEW, T_NC, Some(1.3));
    ratio(&results, X_NEW, R_NEW, Some(0.8));
    ratio(&results, X_NEW, T_NC_SYNC, None);
    ratio(&results, X_NEW, R_NEW_SYNC, None);
    clean(&out);
    clean(&tree);
}

/// 200 000 new files (2 000 directories of 100 files of 1-2 KiB): at most 0.8x
/// rsync -a; peak RSS printed per side.
fn new_tree_200k(work: &Path, rounds: usize) {
    println!("\n  -- 200 000 new files (2 000 directories x 100, 1-2 KiB) --");
    let tree = work.join("tree200k");
    let bytes = make_tree(&tree, 2_000, 100);
    let out = work.join("tree200k-out");
    let mut contenders = new_tree_contenders(&tree, &out);
    // No unmeasured round: a run takes half a minute or more here.
    let results = alternate_with(rounds, &mut contenders, false);
    drop(contenders);
    report(&results, bytes);
    println!("  ratios of median times:");
    ratio(&results, X_NEW, R_NEW, Some(0.8));
    ratio(&results, X_NEW, T_NC, None);
    ratio(&results, X_NEW, R_NEW_SYNC, None);
    ratio(&results, X_NEW, T_NC_SYNC, None);
    let peak = |name: &str| {
        let row = results.iter().find(|row| row.name == name)?;
        let side = |pick: fn(&Sample) -> Option<super::Usage>| {
            let peaks: Vec<f64> = row
                .runs
                .iter()
                .filter_map(pick)
                .map(|u| u.peak_kib / 1024.0)
                .collect();
            (!peaks.is_empty()).then(|| median(&peaks))
        };
        Some((side(|s| s.send), side(|s| s.recv)))
    };
    if let Some((send, recv)) = peak(X_NEW) {
        println!(
            "    xfer peak RSS: send {:.1} MiB, recv {:.1} MiB",
            send.unwrap_or(f64::NAN),
            recv.unwrap_or(f64::NAN)
        );
    }
    clean(&out);
    clean(&tree);
}
