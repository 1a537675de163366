//! `cargo bench --bench compare`: xfer against the tools people use instead, measured
//! in the same run on loopback, alternating contenders every round so that the
//! machine's drift hits all of them alike. It prints medians, min-max and ratios, and
//! asserts nothing: it is not part of the test suite.
//!
//! Sections (`XFER_BENCH_ONLY=big,compress,...` runs some of them):
//! - `big`: a 1 GiB random file. xfer with MD5 or BLAKE3, with and without AES-GCM;
//!   nc + md5sum on both ends; an rsync daemon with its default checksum (xxh128) and
//!   with `--checksum-choice=md5`, both `-W`; `scp -c aes128-gcm@openssh.com` into a
//!   private sshd the bench starts. CPU seconds and peak RSS of each side.
//! - `compress`: a 1 GiB log-like text corpus, xfer `--compress` against plain xfer and
//!   `zstd -3 | nc` (with and without md5sum on both ends), with the bytes each puts
//!   on the wire (counted by a relay in an extra, untimed run); then the 1 GiB random
//!   file, `--compress` against plain.
//! - `small`: 10 000 files of 4 KiB (xfer; tar | nc with md5sum on both ends).
//! - `latency`: a 1-byte file against process start-up.
//! - `concurrent`: 16 concurrent 100 MB senders against one.
//! - `memory`: the peak RSS of each xfer side for 1 GiB and 10 GiB.
//! - `serve`: one `xfer serve` with four users: `ls -l` of 100 000 entries (time, peak
//!   RSS of both sides); `get` of 1 GiB against `send` to `recv` and to the server;
//!   `get` of 1 000 files of 4 KiB on loopback and through a relay that holds every
//!   chunk 10 ms each way; 32 clients at once (16 putting, 16 getting 50 MB) against
//!   one.
//! - `sync`: keeping a copy up to date against an rsync daemon, one block per row of
//!   issue 21's targets (`compare/sync.rs`): a 1 GiB file with 1 MiB overwritten in
//!   the middle (also both rate-limited to 10M), 100 B inserted at its start, 10 MiB
//!   appended, a new one with nothing in common (delta against `-W`); a tree of
//!   10 000 files with 100 changed and 50 deleted (`--delete`); 10 000 new files of
//!   4 KiB and 200 000 new files against tar | nc and `rsync -a`, each of those two
//!   also followed by `sync -f` (durable, as xfer's `ok` is). Bytes on the wire
//!   both ways, time, CPU and peak RSS per side. About 10 GB of writes.
//!   `sync-big` runs the rows of the 1 GiB file only. `XFER_BENCH_SYNC_ARGS` adds
//!   arguments to xfer's `send` in those rows (e.g. `--hash blake3`).
//! - `tree200k`: 2 000 directories of 100 files of 1-2 KiB, xfer against `tar | nc`:
//!   time, CPU and peak RSS of each side. Runs last (its clean-up slows the
//!   filesystem for minutes).
//!
//! A comparison whose tool is missing is skipped, saying so. CPU seconds (user + sys)
//! and peak RSS come from `wait4` on each side's process: for a shell pipeline that is
//! the whole tree bash waited for (peak RSS: its largest process); for a daemon (rsync,
//! sshd) it is the daemon with the per-connection children it reaped, started afresh
//! for every run.
//!
//! Environment: `XFER_BENCH_ROUNDS` (default 5; `tree200k` does at most 3, without
//! the unmeasured warm-up round of the others),
//! `XFER_BENCH_ONLY`, `XFER_BENCH_SYNC_ROWS` (some rows of `sync`: `big`, `tree_update`,
//! `new_small_files`, `new_tree_200k`, comma-separated; `nothing_in_common` runs that row of
//! `big` alone), `XFER_BENCH_SEND_ARGS` (more
//! flags for every `xfer send` of `xfer_session`, e.g. `--hash blake3`), `XFER_BENCH_BIN` (another xfer binary to measure, e.g. the
//! build before a change), `XFER_BENCH_SKIP_10G=1` to skip the 10 GiB run (about a minute),
//! `XFER_BENCH_DIR` for the scratch directory (default: the system's temporary
//! directory; it needs about 4 GiB). The rows of many new files want a filesystem
//! made for the run: ext4 slows every file it creates for minutes after a mass delete
//! (`recently_deleted` in the kernel's profile), which narrows every ratio, and the
//! other sections delete what they wrote.

#[path = "compare/sync.rs"]
mod sync;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The xfer under test: this build, or `XFER_BENCH_BIN` (to measure another build,
/// such as the one before a change, with the same bench).
fn xfer_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("XFER_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_xfer").into())
    })
}
const KEY: &str = "benchmark key, long enough not to warn";
const GIB: u64 = 1 << 30;

fn main() {
    let rounds: usize = env_or("XFER_BENCH_ROUNDS", 5);
    let scratch = tempfile::Builder::new()
        .prefix("xfer-bench-")
        .tempdir_in(
            std::env::var_os("XFER_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        )
        .expect("scratch directory");
    let dir = scratch.path();
    println!(
        "xfer benchmark: {rounds} rounds, contenders alternate each round, scratch in {}",
        dir.display()
    );
    println!(
        "machine: {} cores; timings are wall-clock seconds on loopback",
        cores()
    );
    tools();

    let only = std::env::var("XFER_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s == section);
    let big = dir.join("big.bin");
    if wanted("big") || wanted("compress") || wanted("memory") || wanted("serve") {
        make_file(&big, GIB, 1);
        warm(&big);
    }
    if wanted("big") {
        one_gib(dir, &big, rounds);
    }
    if wanted("compress") {
        compress(dir, &big, rounds);
    }
    if wanted("small") {
        many_small(dir, rounds);
    }
    if wanted("latency") {
        latency(dir, rounds * 4);
    }
    if wanted("concurrent") {
        concurrent(dir, rounds.min(3));
    }
    if wanted("memory") {
        memory(dir, &big);
    }
    if wanted("serve") {
        serve(dir, &big, rounds);
    }
    if wanted("sync") {
        sync::sync(dir, rounds);
    } else if wanted("sync-big") {
        sync::sync_big(dir, rounds);
    }
    // Last: it ends by removing over a million files, which slows the creation of
    // files for minutes after on this filesystem.
    if wanted("tree200k") {
        tree200k(dir, rounds.min(3));
    }
}

/// Which of the tools compared against are here, and their versions.
fn tools() {
    println!("tools:");
    let sshd = sshd_path().unwrap_or_else(|| "sshd".into());
    let list: [(&str, &str, &[&str]); 9] = [
        ("xfer", xfer_bin(), &["--version"]),
        ("nc", "nc", &["-h"]),
        ("md5sum", "md5sum", &["--version"]),
        ("rsync", "rsync", &["--version"]),
        ("sshd", &sshd, &["-V"]),
        ("ssh/scp", "ssh", &["-V"]),
        ("zstd", "zstd", &["--version"]),
        ("tar", "tar", &["--version"]),
        ("bash", "bash", &["--version"]),
    ];
    for (name, program, args) in list {
        let version = match Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => [out.stdout, out.stderr]
                .iter()
                .flat_map(|text| {
                    String::from_utf8_lossy(text)
                        .lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .next()
                .unwrap_or_else(|| "(found; no version printed)".into()),
            Err(_) => "not found".into(),
        };
        println!("  {name:<8} {version}");
    }
    println!();
}

// ---- the comparisons ---------------------------------------------------------

const X_MD5: &str = "xfer --hash md5 (+ aes-gcm)";
const X_PLAIN: &str = "xfer --hash md5 --no-encrypt";
const X_B3: &str = "xfer --hash blake3 (+ aes-gcm, the default)";
const X_B3_PLAIN: &str = "xfer --hash blake3 --no-encrypt";
const NC_MD5: &str = "nc + md5sum on both ends";
const RSYNC_DEFAULT: &str = "rsync daemon -W (default xxh128)";
const RSYNC_MD5: &str = "rsync daemon --checksum-choice=md5 -W";
const SCP: &str = "scp -c aes128-gcm@openssh.com";

fn one_gib(dir: &Path, file: &Path, rounds: usize) {
    println!("== 1 GiB file, verified end to end ==");
    let out = dir.join("out");
    let fifo = make_fifo(dir);
    // The flags on both sides: each alone would do, both is what a user types.
    let xfer = |name, args| xfer_contender(name, file, &out, args, args);
    let mut contenders: Vec<Contender> = vec![
        xfer(X_MD5, &["--hash", "md5"]),
        xfer(X_PLAIN, &["--hash", "md5", "--no-encrypt"]),
        xfer(X_B3, &["--hash", "blake3"]),
        xfer(X_B3_PLAIN, &["--hash", "blake3", "--no-encrypt"]),
    ];
    if have("nc") && have("md5sum") && have("tee") {
        contenders.push((
            NC_MD5,
            Box::new(|| {
                std::fs::create_dir_all(&out).unwrap();
                let port = free_port();
                let receive = format!(
                    "nc -l 127.0.0.1 {port} | tee {}/big.bin | md5sum > /dev/null",
                    out.display()
                );
                let send = |port| hashed_send(&fifo, &format!("< {}", file.display()), "", port);
                let (sample, _) = pipelines(&receive, port, send, false);
                clean(&out);
                Some(sample)
            }),
        ));
    } else {
        println!("(skipping nc + md5sum: nc, md5sum or tee is not installed)");
    }
    if have("rsync") {
        contenders.push((RSYNC_DEFAULT, Box::new(|| rsync(dir, file, &out, &["-W"]))));
        contenders.push((
            RSYNC_MD5,
            Box::new(|| rsync(dir, file, &out, &["-W", "--checksum-choice=md5"])),
        ));
    } else {
        println!("(skipping rsync: not installed)");
    }
    match Sshd::new(dir) {
        Ok(sshd) => {
            let out = out.clone();
            contenders.push((SCP, Box::new(move || sshd.scp(file, &out))));
        }
        Err(why) => println!("(skipping scp: {why})"),
    }
    let results = alternate(rounds, &mut contenders);
    report(&results, GIB);
    println!("  ratios of median times:");
    ratio(&results, X_MD5, X_PLAIN, Some(1.10));
    ratio(&results, X_MD5, NC_MD5, Some(0.8));
    ratio(&results, X_PLAIN, RSYNC_MD5, Some(1.0));
    ratio(&results, X_B3_PLAIN, RSYNC_DEFAULT, Some(1.0));
    ratio(&results, X_B3, RSYNC_DEFAULT, Some(1.0));
    ratio(&results, X_B3, SCP, None);
    clean(&dir.join("out"));
}

const C_XFER: &str = "xfer --compress (zstd 3, aes-gcm)";
const C_PLAIN: &str = "xfer plain (aes-gcm)";
const C_ZSTD: &str = "zstd -3 | nc -> nc -l | zstd -d, no check";
const C_ZSTD_MD5: &str = "zstd -3 | nc, md5sum on both ends";
const R_XFER: &str = "random: xfer --compress (aes-gcm)";
const R_PLAIN: &str = "random: xfer plain (aes-gcm)";

fn compress(dir: &Path, random: &Path, rounds: usize) {
    println!("\n== compression: 1 GiB of log lines, then 1 GiB of random bytes ==");
    let corpus = dir.join("corpus.log");
    make_log_corpus(&corpus, GIB);
    warm(&corpus);
    let out = dir.join("out");
    let fifo = make_fifo(dir);
    let xfer = |name, file, args| xfer_contender(name, file, &out, args, &[]);
    let zstd_nc = |md5: bool, count: bool| {
        std::fs::create_dir_all(&out).unwrap();
        let port = free_port();
        let tail = if md5 {
            " | md5sum > /dev/null"
        } else {
            " > /dev/null"
        };
        let receive = format!(
            "set -o pipefail; nc -l 127.0.0.1 {port} | zstd -d -q -c | tee {}/corpus.log{tail}",
            out.display()
        );
        let send = |port| {
            if md5 {
                hashed_send(
                    &fifo,
                    &format!("< {}", corpus.display()),
                    "| zstd -3 -q -c ",
                    port,
                )
            } else {
                format!(
                    "set -o pipefail; zstd -3 -q -c < {} | nc -N 127.0.0.1 {port}",
                    corpus.display()
                )
            }
        };
        let result = pipelines(&receive, port, send, count);
        clean(&out);
        result
    };
    let mut contenders: Vec<Contender> = vec![
        xfer(C_XFER, &corpus, &["--compress"]),
        xfer(C_PLAIN, &corpus, &[]),
    ];
    let reference = have("nc") && have("zstd") && have("md5sum") && have("tee");
    if reference {
        contenders.push((C_ZSTD, Box::new(|| Some(zstd_nc(false, false).0))));
        contenders.push((C_ZSTD_MD5, Box::new(|| Some(zstd_nc(true, false).0))));
    } else {
        println!("(skipping zstd | nc: nc, zstd, md5sum or tee is not installed)");
    }
    let results = alternate(rounds, &mut contenders);
    drop(contenders);
    report(&results, GIB);
    // Bytes on the wire, counted by a relay between the two sides in one more run.
    let on_wire = |name: &str, bytes: u64| {
        println!(
            "  on the wire: {name:<44} {:>7.1} MiB, ratio {:.2} : 1",
            bytes as f64 / (1 << 20) as f64,
            GIB as f64 / bytes as f64
        );
    };
    on_wire(
        C_XFER,
        xfer_run(&corpus, &out, &["--compress"], &[], true)
            .1
            .unwrap(),
    );
    clean(&out);
    on_wire(C_PLAIN, xfer_run(&corpus, &out, &[], &[], true).1.unwrap());
    clean(&out);
    if reference {
        on_wire("zstd -3 | nc", zstd_nc(false, true).1.unwrap());
    }
    println!("  ratios of median times:");
    ratio(&results, C_XFER, C_PLAIN, None);
    ratio(&results, C_XFER, C_ZSTD, None);
    ratio(&results, C_XFER, C_ZSTD_MD5, None);

    let mut contenders: Vec<Contender> = vec![
        xfer(R_XFER, random, &["--compress"]),
        xfer(R_PLAIN, random, &[]),
    ];
    let results = alternate(rounds, &mut contenders);
    drop(contenders);
    report(&results, GIB);
    on_wire(
        R_XFER,
        xfer_run(random, &out, &["--compress"], &[], true)
            .1
            .unwrap(),
    );
    clean(&out);
    println!("  ratios of median times:");
    ratio(&results, R_XFER, R_PLAIN, Some(1.05));
    let _ = std::fs::remove_file(&corpus);
}

const T_XFER: &str = "xfer send TREE -> xfer recv --dir (empty)";
const T_TAR: &str = "tar c | nc -> nc -l | tar x, no check";

fn tree200k(dir: &Path, rounds: usize) {
    const DIRS: usize = 2_000;
    const FILES: usize = 100;
    println!(
        "\n== a tree of {DIRS} directories x {FILES} files of 1-2 KiB ({} files) into an empty directory ==",
        DIRS * FILES
    );
    let tree = dir.join("tree200k");
    let started = Instant::now();
    let bytes = make_tree(&tree, DIRS, FILES);
    println!(
        "  (built {:.0} MB in {:.0} s; rounds: {rounds})",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    // Every run writes into a directory of its own, all removed after the section (a
    // few GB of inodes and blocks): this filesystem makes a file created soon after
    // many were deleted slow to allocate (ext4 without a journal checks each free
    // inode for a recent deletion), which would bill one contender for the other's
    // clean-up. Measured: the same 200 000 files took tar 5.7 s after one removal and
    // 38 s after another.
    let out = dir.join("tree-out");
    let mut contenders: Vec<Contender> = vec![(
        T_XFER,
        Box::new(|| {
            let (sample, _) = xfer_run(&tree, &fresh_dir(&out), &[], &[], false);
            Some(sample)
        }),
    )];
    if have("nc") && have("tar") {
        contenders.push((
            T_TAR,
            Box::new(|| {
                let into = fresh_dir(&out);
                std::fs::create_dir_all(&into).unwrap();
                let port = free_port();
                let receive = format!("nc -l 127.0.0.1 {port} | tar x -C {}", into.display());
                let send = |port| {
                    format!(
                        "set -o pipefail; tar c -C {} tree200k | nc -N 127.0.0.1 {port}",
                        dir.display()
                    )
                };
                let (sample, _) = pipelines(&receive, port, send, false);
                Some(sample)
            }),
        ));
    } else {
        println!("(skipping tar | nc: nc or tar is not installed)");
    }
    // No unmeasured round: a run takes half a minute or more here, and nothing in
    // it touches much fresh memory.
    let results = alternate_with(rounds, &mut contenders, false);
    report(&results, bytes);
    println!("  ratios of median times:");
    ratio(&results, T_XFER, T_TAR, None);
    clean(&tree);
    clean(&out);
}

fn many_small(dir: &Path, rounds: usize) {
    println!("\n== 10 000 files of 4 KiB ==");
    let tree = dir.join("small");
    if !tree.exists() {
        std::fs::create_dir(&tree).unwrap();
        for i in 0..10_000u64 {
            std::fs::write(tree.join(format!("{i:05}")), pattern(4096, i)).unwrap();
        }
    }
    // Every run writes into a directory of its own, all removed after the section:
    // ext4 makes a file created right after many were deleted slow to allocate (it
    // skips recently freed inodes), which would bill one contender for the other's
    // clean-up.

    let mut contenders: Vec<Contender> = vec![(
        "xfer send DIR -> xfer recv --dir",
        Box::new(|| Some(xfer_file(&tree, &fresh_dir(&dir.join("small-out"))).into())),
    )];
    if have("nc") && have("md5sum") && have("tar") {
        contenders.push((
            "tar c | nc -> nc -l | tar x, md5sum both ends",
            Box::new(|| Some(tar_nc(&tree, &fresh_dir(&dir.join("small-out"))).into())),
        ));
    } else {
        println!("(skipping tar | nc: nc, md5sum or tar is not installed)");
    }
    let results = alternate(rounds, &mut contenders);
    report(&results, 10_000 * 4096);
    clean(&dir.join("small-out"));
}

fn latency(dir: &Path, rounds: usize) {
    println!("\n== a 1-byte file, end to end, against process start-up ==");
    let one = dir.join("one-byte");
    std::fs::write(&one, b"x").unwrap();
    let out = dir.join("out");
    let mut contenders: Vec<Contender> = vec![
        (
            "xfer --version (process start)",
            Box::new(|| {
                Some(timed(|| run_quiet(Command::new(xfer_bin()).arg("--version"))).into())
            }),
        ),
        (
            "1-byte file: send, until both sides exit",
            Box::new(|| Some(xfer_file(&one, &out).into())),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    for row in &results {
        let times = row.times();
        println!(
            "  {:<46} median {:>6.1} ms (min {:.1}, max {:.1})",
            row.name,
            median(&times) * 1e3,
            min(&times) * 1e3,
            max(&times) * 1e3
        );
    }
    let (start, whole) = (results[0].median(), results[1].median());
    println!(
        "  handshake + offer + data + durable ack add {:.1} ms to the process start",
        (whole - start) * 1000.0
    );
}

fn concurrent(dir: &Path, rounds: usize) {
    println!("\n== 16 concurrent senders of 100 MB into one `recv --serve` ==");
    let files = random_files(dir, "c", 16, 100_000_000, 100);
    let out = dir.join("out");
    let mut contenders: Vec<Contender> = vec![
        (
            "one sender of 100 MB",
            Box::new(|| Some(serve_many(&files[..1], &out).into())),
        ),
        (
            "16 senders of 100 MB at once",
            Box::new(|| Some(serve_many(&files, &out).into())),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    let single = 100e6 / results[0].median();
    let aggregate = 16.0 * 100e6 / results[1].median();
    for row in &results {
        let times = row.times();
        println!(
            "  {:<44} median {:.2} s (min {:.2}, max {:.2})",
            row.name,
            median(&times),
            min(&times),
            max(&times)
        );
    }
    println!(
        "  single stream {:.0} MB/s, 16 at once {:.0} MB/s in aggregate: {:.0}% of single-stream",
        single / 1e6,
        aggregate / 1e6,
        100.0 * aggregate / single
    );
}

fn memory(dir: &Path, big: &Path) {
    println!("\n== peak RSS of each side (default: md5 + aes-gcm) ==");
    if !Path::new("/usr/bin/time").exists() {
        println!("(skipping: /usr/bin/time is not installed)");
        return;
    }
    let out = dir.join("out");
    let (send_kib, recv_kib) = xfer_rss(
        &[big.as_os_str().to_str().unwrap()],
        &["--dir", out.to_str().unwrap()],
        None,
    );
    println!(
        "  1 GiB file:            send {:.1} MiB, recv {:.1} MiB",
        send_kib / 1024.0,
        recv_kib / 1024.0
    );
    clean(&out);
    if std::env::var_os("XFER_BENCH_SKIP_10G").is_some() {
        println!("  10 GiB: skipped (XFER_BENCH_SKIP_10G)");
        return;
    }
    // A 10 GiB stream through stdin and stdout: the same code path, no 10 GiB of disk.
    let (send_kib, recv_kib) = xfer_rss(&["-"], &["--stdout"], Some(10 << 30));
    println!(
        "  10 GiB stream:         send {:.1} MiB, recv {:.1} MiB",
        send_kib / 1024.0,
        recv_kib / 1024.0
    );
}

const S_SEND: &str = "xfer send 1 GiB -> xfer recv";
const S_PUT: &str = "xfer send 1 GiB -> serve (a put)";
const S_GET: &str = "xfer get 1 GiB <- serve";
const S_NEAR: &str = "get 1 000 files of 4 KiB, loopback";
const S_FAR: &str = "get 1 000 files of 4 KiB, 20 ms round trip";
const S_ONE_GET: &str = "one client: get 50 MB";
const S_ONE_PUT: &str = "one client: put 50 MB";
const S_MANY: &str = "32 clients of 4 users: 16 put + 16 get 50 MB";

fn serve(dir: &Path, big: &Path, rounds: usize) {
    println!(
        "\n== xfer serve: a listing of 100 000, get against send, small files at 20 ms, 32 clients =="
    );
    let server = Server::start(dir);
    serve_listing(&server, rounds);
    serve_get(&server, dir, big, rounds);
    serve_small_far(&server, dir, rounds);
    serve_many_clients(&server, dir, rounds.min(3));
}

/// `ls -l` of a directory of 100 000 entries, streamed: time, and memory both sides.
fn serve_listing(server: &Server, rounds: usize) {
    server.reset_peak();
    let started_kib = server.peak_kib();
    let many = server.home("bob").join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(many.join(format!("entry-{i:06}"))).unwrap();
    }
    let mut contenders: Vec<Contender> = vec![(
        "xfer ls -l of 100 000 entries",
        Box::new(|| Some(server.run("bob", &["ls", "-l"], &[], "many", Side::Recv))),
    )];
    let results = alternate(rounds, &mut contenders);
    report(&results, 0);
    println!(
        "  server peak RSS: {:.1} MiB after start, {:.1} MiB after the listings",
        started_kib / 1024.0,
        server.peak_kib() / 1024.0
    );
    clean(&many);
}

/// `get` of 1 GiB against `send` to `recv` and to the server.
fn serve_get(server: &Server, dir: &Path, big: &Path, rounds: usize) {
    let home = server.home("alice");
    std::fs::hard_link(big, home.join("big.bin")).unwrap();
    let out = dir.join("out");
    let big_arg = big.to_str().unwrap();
    let out_arg = out.to_str().unwrap().to_string();
    let mut contenders: Vec<Contender> = vec![
        xfer_contender(S_SEND, big, &out, &[], &[]),
        (
            S_PUT,
            Box::new(|| {
                std::fs::create_dir_all(home.join("in")).unwrap();
                let sample = server.run("alice", &["send", big_arg], &[], "in", Side::Send);
                clean(&home.join("in"));
                Some(sample)
            }),
        ),
        (
            S_GET,
            Box::new(|| {
                std::fs::create_dir_all(&out).unwrap();
                let sample = server.run("alice", &["get"], &[&out_arg], "big.bin", Side::Recv);
                clean(&out);
                Some(sample)
            }),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    report(&results, GIB);
    println!("  ratios of median times:");
    ratio(&results, S_GET, S_SEND, Some(1.05));
    ratio(&results, S_GET, S_PUT, None);
    std::fs::remove_file(home.join("big.bin")).unwrap();
}

/// `get` of 1 000 small files, on loopback and through a relay that holds every
/// chunk 10 ms each way: no round trip per file.
fn serve_small_far(server: &Server, dir: &Path, rounds: usize) {
    let tree = server.home("carol").join("small");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..1_000u64 {
        std::fs::write(tree.join(format!("{i:04}")), pattern(4096, i)).unwrap();
    }
    let mut contenders: Vec<Contender> = vec![
        (
            S_NEAR,
            Box::new(|| {
                let local = fresh_dir(&dir.join("small-out"));
                std::fs::create_dir_all(&local).unwrap();
                let local = local.to_str().unwrap().to_string();
                Some(server.run("carol", &["get"], &[&local], "small", Side::Recv))
            }),
        ),
        (
            S_FAR,
            Box::new(|| {
                let local = fresh_dir(&dir.join("small-out"));
                std::fs::create_dir_all(&local).unwrap();
                let local = local.to_str().unwrap().to_string();
                let relayed = delay_relay(server.port, Duration::from_millis(10));
                Some(server.run_via(relayed, "carol", &["get"], &[&local], "small", Side::Recv))
            }),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    report(&results, 1_000 * 4096);
    let far = results
        .iter()
        .find(|row| row.name == S_FAR)
        .unwrap()
        .median();
    println!(
        "  at 20 ms round trip: {far:.2} s (target <= 1.50: {})",
        if far <= 1.5 { "met" } else { "MISSED" }
    );
    clean(&dir.join("small-out"));
}

/// 32 clients of four users at once, half putting and half getting 50 MB each,
/// against one client alone.
fn serve_many_clients(server: &Server, dir: &Path, rounds: usize) {
    let local = random_files(dir, "s", 16, 50_000_000, 200);
    for (i, path) in local.iter().enumerate() {
        let user = USERS[i % USERS.len()];
        std::fs::hard_link(path, server.home(user).join(format!("g{i:02}.bin"))).unwrap();
    }
    let out = dir.join("many-out");
    server.reset_peak();
    let mut contenders: Vec<Contender> = vec![
        (
            S_ONE_GET,
            Box::new(|| Some(server.clients(&[], &local[..1], &out).into())),
        ),
        (
            S_ONE_PUT,
            Box::new(|| Some(server.clients(&local[..1], &[], &out).into())),
        ),
        (
            S_MANY,
            Box::new(|| Some(server.clients(&local, &local, &out).into())),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    report(&results, 0);
    let single = (50e6 / results[0].median() + 50e6 / results[1].median()) / 2.0;
    let aggregate = 32.0 * 50e6 / results[2].median();
    println!(
        "  one client {:.0} MB/s (mean of get and put), 32 at once {:.0} MB/s in aggregate: {:.0}% of one client's",
        single / 1e6,
        aggregate / 1e6,
        100.0 * aggregate / single
    );
    println!(
        "  server peak RSS with these clients: {:.1} MiB",
        server.peak_kib() / 1024.0
    );
}

/// Which side of a transfer a client plays, for the report's columns.
#[derive(Clone, Copy)]
enum Side {
    Send,
    Recv,
}

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// A running `xfer serve` with four users, each with a key of their own, and no
/// quotas.
struct Server {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let base = dir.join("serve");
        clean(&base);
        std::fs::create_dir_all(&base).unwrap();
        let root = base.join("root");
        let users = base.join("users.toml");
        let mut toml = String::new();
        for user in USERS {
            writeln!(toml, "[users.{user}]\nkey = \"{}\"\n", Server::key(user)).unwrap();
        }
        std::fs::write(&users, toml).unwrap();
        std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut command = Command::new(xfer_bin());
        command
            .args(["serve", "-q", "--listen", "127.0.0.1:0", "--root"])
            .arg(&root)
            .arg("--users")
            .arg(&users)
            .args(["--max-pending-per-address", "64"]);
        let (child, port) = spawn_listener(command);
        Server { child, port, root }
    }

    /// `user`'s key: an inline key in a users file must look as `xfer keygen`
    /// prints one (64 lowercase hex digits of a random-looking value), so the
    /// SHA-256 of the name, in hex.
    fn key(user: &str) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(user.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn home(&self, user: &str) -> PathBuf {
        self.root.join(user)
    }

    /// Starts the server's peak RSS afresh from its current RSS.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }

    /// The server's peak RSS since it started or since [`Server::reset_peak`], in KiB.
    fn peak_kib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// A client command as `user`: `xfer ARGS HOST:PORT:PATH AFTER`.
    fn command(&self, port: u16, user: &str, args: &[&str], after: &[&str], path: &str) -> Command {
        let mut command = Command::new(xfer_bin());
        command
            .args(args)
            .arg("-q")
            .arg(format!("127.0.0.1:{port}:{path}"))
            .args(after)
            .env("XFER_KEY", Server::key(user))
            .env("XFER_USER", user)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Runs one client command to success: its time and what it used, as `side`.
    fn run(&self, user: &str, args: &[&str], after: &[&str], path: &str, side: Side) -> Sample {
        self.run_via(self.port, user, args, after, path, side)
    }

    fn run_via(
        &self,
        port: u16,
        user: &str,
        args: &[&str],
        after: &[&str],
        path: &str,
        side: Side,
    ) -> Sample {
        let started = Instant::now();
        let child = self.command(port, user, args, after, path).spawn().unwrap();
        let used = reap(child, &format!("xfer {} as {user}", args.join(" ")));
        let seconds = started.elapsed().as_secs_f64();
        let (send, recv) = match side {
            Side::Send => (Some(used), None),
            Side::Recv => (None, Some(used)),
        };
        Sample {
            seconds,
            send,
            recv,
        }
    }

    /// Puts every file of `puts` and gets every `g<i>.bin` of `gets` at once, spread
    /// over the four users: seconds until all of them verified and exited.
    fn clients(&self, puts: &[PathBuf], gets: &[PathBuf], out: &Path) -> f64 {
        clean(out);
        for user in USERS {
            std::fs::create_dir_all(self.home(user).join("up")).unwrap();
        }
        let seconds = timed(|| {
            let mut children = Vec::new();
            for (i, file) in puts.iter().enumerate() {
                let user = USERS[i % USERS.len()];
                let args = ["send", file.to_str().unwrap()];
                children.push(
                    self.command(self.port, user, &args, &[], "up")
                        .spawn()
                        .unwrap(),
                );
            }
            for i in 0..gets.len() {
                let user = USERS[i % USERS.len()];
                let local = out.join(i.to_string());
                std::fs::create_dir_all(&local).unwrap();
                let path = format!("g{i:02}.bin");
                let after = [local.to_str().unwrap()];
                children.push(
                    self.command(self.port, user, &["get"], &after, &path)
                        .spawn()
                        .unwrap(),
                );
            }
            for child in children {
                reap(child, "a client");
            }
        });
        for user in USERS {
            clean(&self.home(user).join("up"));
        }
        clean(out);
        seconds
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listens on a free port and forwards one connection to `target`, holding every
/// chunk `delay` in each direction (a round trip of twice `delay`) without limiting
/// the rate: what a long link does, which this kernel's missing netem cannot.
fn delay_relay(target: u16, delay: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (near, _) = listener.accept().unwrap();
        let far = std::net::TcpStream::connect(("127.0.0.1", target)).unwrap();
        near.set_nodelay(true).unwrap();
        far.set_nodelay(true).unwrap();
        let (near2, far2) = (near.try_clone().unwrap(), far.try_clone().unwrap());
        let there = std::thread::spawn(move || delayed_copy(near, far, delay));
        delayed_copy(far2, near2, delay);
        there.join().unwrap();
    });
    port
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
fn delayed_copy(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    let (chunks, due) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (at, chunk) in due {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(&mut from, &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(chunks);
    writer.join().unwrap();
}

// ---- contenders ----------------------------------------------------------------

/// xfer sending FILE into OUT with these flags on each side, OUT removed after each run.
fn xfer_contender<'a>(
    name: &'static str,
    file: &'a Path,
    out: &'a Path,
    send_args: &'a [&'a str],
    recv_args: &'a [&'a str],
) -> Contender<'a> {
    (
        name,
        Box::new(move || {
            let (sample, _) = xfer_run(file, out, send_args, recv_args, false);
            clean(out);
            Some(sample)
        }),
    )
}

/// `xfer send PATH` into a fresh `xfer recv --dir OUT`; seconds from starting the
/// sender until both have exited (the receiver is already listening).
fn xfer_file(path: &Path, out: &Path) -> f64 {
    clean(out);
    let (mut receiver, port) = listen(&["--dir", out.to_str().unwrap()]);
    timed(|| {
        run_quiet(
            Command::new(xfer_bin())
                .args(["send", "-q"])
                .arg(path)
                .arg(format!("127.0.0.1:{port}"))
                .env("XFER_KEY", KEY),
        );
        assert!(receiver.wait().unwrap().success(), "receiver failed");
    })
}

/// `xfer send SEND_ARGS PATH` into a fresh `xfer recv --dir OUT RECV_ARGS`: seconds
/// from starting the sender until both have exited (the receiver is already
/// listening), and what each side used. With `count`, the sender goes through a relay
/// that counts the bytes it sends (then the time means little).
fn xfer_run(
    path: &Path,
    out: &Path,
    send_args: &[&str],
    recv_args: &[&str],
    count: bool,
) -> (Sample, Option<u64>) {
    clean(out);
    let (sample, counted) = xfer_session(path, out, send_args, recv_args, count);
    (sample, counted.map(|(up, _)| up))
}

/// [`xfer_run`] into OUT as it stands (not emptied first); with `count`, the bytes
/// each way (towards the receiver, back to the sender).
fn xfer_session(
    path: &Path,
    out: &Path,
    send_args: &[&str],
    recv_args: &[&str],
    count: bool,
) -> (Sample, Option<(u64, u64)>) {
    let mut args = vec!["--dir", out.to_str().unwrap()];
    args.extend_from_slice(recv_args);
    let (receiver, mut port) = listen(&args);
    let relay = count.then(|| {
        let (relay_port, counted) = relay(port);
        port = relay_port;
        counted
    });
    let started = Instant::now();
    let more = std::env::var("XFER_BENCH_SEND_ARGS").unwrap_or_default();
    let sender = Command::new(xfer_bin())
        .args(["send", "-q"])
        .args(more.split_whitespace())
        .args(send_args)
        .arg(path)
        .arg(format!("127.0.0.1:{port}"))
        .env("XFER_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let send = reap(sender, "xfer send");
    let recv = reap(receiver, "xfer recv");
    let sample = Sample {
        seconds: started.elapsed().as_secs_f64(),
        send: Some(send),
        recv: Some(recv),
    };
    (sample, relay.map(|counted| counted.join().unwrap()))
}

/// A receiving bash pipeline listening on `port`, then the sending one made by `send`
/// for the port to connect to: seconds from starting the sender until both have
/// exited, and what each side's whole tree used. With `count`, through a counting
/// relay.
fn pipelines(
    receive: &str,
    port: u16,
    send: impl FnOnce(u16) -> String,
    count: bool,
) -> (Sample, Option<u64>) {
    let receiver = bash(receive);
    wait_for_port(port);
    let (port, relay) = if count {
        let (relay_port, counted) = relay(port);
        (relay_port, Some(counted))
    } else {
        (port, None)
    };
    let script = send(port);
    let started = Instant::now();
    let sender = bash(&script);
    let send = reap(sender, &script);
    let recv = reap(receiver, receive);
    let sample = Sample {
        seconds: started.elapsed().as_secs_f64(),
        send: Some(send),
        recv: Some(recv),
    };
    (sample, relay.map(|counted| counted.join().unwrap().0))
}

/// A sending script that reads `input` once, through tee into md5sum (a background
/// job, through a FIFO, so that bash waits for it and its CPU is counted) and through
/// `filter` into `nc`.
fn hashed_send(fifo: &Path, input: &str, filter: &str, port: u16) -> String {
    let fifo = fifo.display();
    format!(
        "set -o pipefail; md5sum < {fifo} > /dev/null & m=$!; \
         tee {fifo} {input} {filter}| nc -N 127.0.0.1 {port}; s=$?; wait $m && exit $s"
    )
}

fn make_fifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("md5.fifo");
    if !fifo.exists() {
        let made = Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    }
    fifo
}

/// An rsync daemon writing into OUT, and `rsync ARGS FILE rsync://...`: seconds from
/// starting the client until it has exited and the daemon's connection has ended.
fn rsync(dir: &Path, file: &Path, out: &Path, args: &[&str]) -> Option<Sample> {
    clean(out);
    std::fs::create_dir_all(out).unwrap();
    let sample = rsync_session(dir, &[file], out, args, false).map(|(sample, _)| sample);
    clean(out);
    sample
}

/// An rsync daemon writing into OUT as it stands, and `rsync ARGS SOURCES
/// rsync://.../bench/`: seconds from starting the client until it has exited and the
/// daemon's connection has ended; with `count`, through a relay, and the bytes each
/// way (towards the daemon, back to the client).
fn rsync_session(
    dir: &Path,
    sources: &[&Path],
    out: &Path,
    args: &[&str],
    count: bool,
) -> Option<(Sample, Option<(u64, u64)>)> {
    let port = free_port();
    let conf = dir.join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            // As this user: a daemon started by root would otherwise write as nobody.
            "use chroot = no\nuid = {uid}\ngid = {gid}\n[bench]\npath = {}\nread only = no\n",
            out.display(),
            uid = rustix::process::getuid().as_raw(),
            gid = rustix::process::getgid().as_raw(),
        ),
    )
    .unwrap();
    let daemon = Command::new("rsync")
        .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--config={}", conf.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for_port(port);
    let (port, relay) = if count {
        let (relay_port, counted) = relay(port);
        (relay_port, Some(counted))
    } else {
        (port, None)
    };
    let started = Instant::now();
    let client = Command::new("rsync")
        .args(args)
        .args(sources)
        .arg(format!("rsync://127.0.0.1:{port}/bench/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let send = reap(client, "rsync client");
    let recv = stop_daemon(daemon);
    let seconds = started.elapsed().as_secs_f64();
    let sample = Sample {
        seconds,
        send: Some(send),
        recv,
    };
    Some((sample, relay.map(|counted| counted.join().unwrap())))
}

/// A private sshd: host key, client key and configuration in a directory of its own,
/// started on a free port for every run.
struct Sshd {
    program: String,
    config: PathBuf,
    identity: PathBuf,
}

impl Sshd {
    fn new(dir: &Path) -> Result<Sshd, String> {
        let program = sshd_path().ok_or("sshd is not installed")?;
        if !have("scp") || !have("ssh-keygen") {
            return Err("scp or ssh-keygen is not installed".into());
        }
        // sshd started by root insists on its privilege-separation directory, which
        // the package's service would create.
        let privsep = Path::new("/run/sshd");
        if rustix::process::getuid().is_root() && !privsep.exists() {
            std::fs::create_dir(privsep)
                .map_err(|e| format!("cannot create {}: {e}", privsep.display()))?;
            println!(
                "(created {}, sshd's privilege-separation directory)",
                privsep.display()
            );
        }
        let home = dir.join("sshd");
        clean(&home);
        std::fs::create_dir(&home).map_err(|e| e.to_string())?;
        for key in ["host", "id"] {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(home.join(key))
                .stdin(Stdio::null())
                .status();
            if !made.is_ok_and(|s| s.success()) {
                return Err("ssh-keygen failed".into());
            }
        }
        std::fs::copy(home.join("id.pub"), home.join("authorized_keys"))
            .map_err(|e| e.to_string())?;
        let config = home.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {home}/host\n\
                 AuthorizedKeysFile {home}/authorized_keys\nPidFile none\nUsePAM no\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
                home = home.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let check = Command::new(&program)
            .args(["-t", "-f"])
            .arg(&config)
            .output()
            .map_err(|e| e.to_string())?;
        if !check.status.success() {
            return Err(format!(
                "sshd -t: {}",
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }
        Ok(Sshd {
            program,
            config,
            identity: home.join("id"),
        })
    }

    /// `scp -c aes128-gcm@openssh.com FILE 127.0.0.1:OUT/`: seconds from starting scp
    /// until it has exited and sshd's connection has ended.
    fn scp(&self, file: &Path, out: &Path) -> Option<Sample> {
        clean(out);
        std::fs::create_dir_all(out).unwrap();
        let port = free_port();
        let daemon = Command::new(&self.program)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        wait_for_port(port);
        let started = Instant::now();
        let mut client = Command::new("scp")
            .args([
                "-q",
                "-F",
                "/dev/null",
                "-c",
                "aes128-gcm@openssh.com",
                "-i",
            ])
            .arg(&self.identity)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-P"])
            .arg(port.to_string())
            .arg(file)
            .arg(format!("127.0.0.1:{}/", out.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stderr = String::new();
        if let Some(mut pipe) = client.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        let (status, send) = wait_usage(client);
        let recv = stop_daemon(daemon);
        let seconds = started.elapsed().as_secs_f64();
        clean(out);
        if !status.success() {
            println!("(scp failed: {status}: {})", stderr.trim());
            return None;
        }
        Some(Sample {
            seconds,
            send: Some(send),
            recv,
        })
    }
}

fn sshd_path() -> Option<String> {
    let found = Command::new("bash")
        .args(["-c", "command -v sshd || command -v /usr/sbin/sshd"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    (found.status.success() && !path.is_empty()).then_some(path)
}

fn tar_nc(tree: &Path, out: &Path) -> f64 {
    clean(out);
    std::fs::create_dir_all(out).unwrap();
    let port = free_port();
    let mut receiver = bash(&format!(
        "nc -l 127.0.0.1 {port} | tee >(md5sum > /dev/null) | tar x -C {}",
        out.display()
    ));
    wait_for_port(port);
    let parent = tree.parent().unwrap();
    timed(|| {
        run_quiet(&mut bash_command(&format!(
            "tar c -C {} small | tee >(md5sum > /dev/null) | nc -N 127.0.0.1 {port}",
            parent.display()
        )));
        receiver.wait().unwrap();
    })
}

/// One `recv --serve`, and every file sent by its own sender at once; seconds until
/// the last sender exits.
fn serve_many(files: &[PathBuf], out: &Path) -> f64 {
    clean(out);
    let (mut receiver, port) = listen(&[
        "--dir",
        out.to_str().unwrap(),
        "--serve",
        "--max-conns",
        "32",
    ]);
    let seconds = timed(|| {
        let senders: Vec<Child> = files
            .iter()
            .map(|file| {
                Command::new(xfer_bin())
                    .args(["send", "-q"])
                    .arg(file)
                    .arg(format!("127.0.0.1:{port}"))
                    .env("XFER_KEY", KEY)
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut sender in senders {
            assert!(sender.wait().unwrap().success(), "a sender failed");
        }
    });
    let _ = receiver.kill();
    let _ = receiver.wait();
    clean(out);
    seconds
}

/// Peak RSS in KiB of `xfer send SEND_ARGS` and `xfer recv RECV_ARGS`, via
/// /usr/bin/time; with `stream`, that many zero bytes are piped into the sender.
fn xfer_rss(send_args: &[&str], recv_args: &[&str], stream: Option<u64>) -> (f64, f64) {
    let recv_rss = tempfile::NamedTempFile::new().unwrap();
    let send_rss = tempfile::NamedTempFile::new().unwrap();
    let mut recv = Command::new("/usr/bin/time");
    recv.args(["-f", "%M", "-o"])
        .arg(recv_rss.path())
        .arg(xfer_bin())
        .args(["recv", "-q", "--listen", "127.0.0.1:0"])
        .args(recv_args);
    let (mut receiver, port) = spawn_listener(recv);
    let mut send = Command::new("/usr/bin/time");
    send.args(["-f", "%M", "-o"])
        .arg(send_rss.path())
        .arg(xfer_bin())
        .args(["send", "-q"])
        .args(send_args)
        .arg(format!("127.0.0.1:{port}"))
        .env("XFER_KEY", KEY);
    match stream {
        Some(bytes) => {
            send.stdin(Stdio::piped());
            let mut sender = send.spawn().unwrap();
            let mut stdin = sender.stdin.take().unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..bytes / zeros.len() as u64 {
                stdin.write_all(&zeros).unwrap();
            }
            drop(stdin);
            assert!(sender.wait().unwrap().success());
        }
        None => assert!(send.status().unwrap().success()),
    }
    assert!(receiver.wait().unwrap().success());
    let read = |f: &tempfile::NamedTempFile| {
        std::fs::read_to_string(f.path())
            .unwrap()
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    (read(&send_rss), read(&recv_rss))
}

// ---- process accounting ------------------------------------------------------------

/// What one side used: CPU seconds (user + sys) and peak RSS in KiB, of the process
/// and every descendant it waited for.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: f64,
    peak_kib: f64,
}

/// One run: wall-clock seconds and, where measured, what each side used.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    send: Option<Usage>,
    recv: Option<Usage>,
}

impl From<f64> for Sample {
    fn from(seconds: f64) -> Self {
        Sample {
            seconds,
            send: None,
            recv: None,
        }
    }
}

/// Waits for `child` with `wait4`, for its exit status and its resource usage
/// (including that of the children it reaped).
fn wait_usage(child: Child) -> (ExitStatus, Usage) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types; `pid` is our
        // child, not yet waited for (std's `Child` waits only when asked).
        let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if got == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "wait4: {err}");
    }
    drop(child);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let used = Usage {
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        peak_kib: usage.ru_maxrss as f64,
    };
    (ExitStatus::from_raw(status), used)
}

/// `wait_usage`, insisting on success.
fn reap(child: Child, what: &str) -> Usage {
    let (status, usage) = wait_usage(child);
    assert!(status.success(), "{what} failed: {status}");
    usage
}

/// Waits until a daemon has reaped the children it forked for a connection, then
/// kills it: its usage then includes theirs.
fn stop_daemon(mut daemon: Child) -> Option<Usage> {
    let pid = daemon.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let started = Instant::now();
    let done = loop {
        match std::fs::read_to_string(&children) {
            Ok(list) if list.trim().is_empty() => break true,
            Ok(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            _ => break false,
        }
    };
    let _ = daemon.kill();
    let (_, usage) = wait_usage(daemon);
    done.then_some(usage)
}

/// Listens on a free port and forwards one connection to `target`, in both
/// directions; the thread returns the bytes that went towards `target`, and those
/// that came back.
fn relay(target: u16) -> (u16, std::thread::JoinHandle<(u64, u64)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let counting = std::thread::spawn(move || {
        let (mut from, _) = listener.accept().unwrap();
        let mut to = std::net::TcpStream::connect(("127.0.0.1", target)).unwrap();
        let (mut back_from, mut back_to) = (to.try_clone().unwrap(), from.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let bytes = std::io::copy(&mut back_from, &mut back_to).unwrap_or(0);
            let _ = back_to.shutdown(std::net::Shutdown::Write);
            bytes
        });
        let bytes = std::io::copy(&mut from, &mut to).unwrap();
        let _ = to.shutdown(std::net::Shutdown::Write);
        (bytes, back.join().unwrap())
    });
    (port, counting)
}

// ---- helpers ---------------------------------------------------------------------

/// A named way of doing the job once; `None` when it could not run this time.
type Contender<'a> = (&'static str, Box<dyn FnMut() -> Option<Sample> + 'a>);

/// A contender's runs.
struct Row {
    name: String,
    runs: Vec<Sample>,
}

impl Row {
    fn times(&self) -> Vec<f64> {
        self.runs.iter().map(|run| run.seconds).collect()
    }

    fn median(&self) -> f64 {
        median(&self.times())
    }

    /// Median CPU seconds and peak RSS (MiB) of one side, over the runs that have them.
    fn side(&self, side: impl Fn(&Sample) -> Option<Usage>) -> Option<(f64, f64)> {
        let used: Vec<Usage> = self.runs.iter().filter_map(side).collect();
        if used.is_empty() {
            return None;
        }
        let cpu: Vec<f64> = used.iter().map(|u| u.cpu).collect();
        let peak: Vec<f64> = used.iter().map(|u| u.peak_kib / 1024.0).collect();
        Some((median(&cpu), median(&peak)))
    }
}

/// Runs every contender once unmeasured, then once per round, rotating who goes first.
fn alternate(rounds: usize, contenders: &mut [Contender<'_>]) -> Vec<Row> {
    alternate_with(rounds, contenders, true)
}

/// `alternate`, with or without the unmeasured round.
fn alternate_with(rounds: usize, contenders: &mut [Contender<'_>], warm_up: bool) -> Vec<Row> {
    let mut results: Vec<Row> = contenders
        .iter()
        .map(|(name, _)| Row {
            name: name.to_string(),
            runs: Vec::new(),
        })
        .collect();
    // One unmeasured round: the VM hands freed memory back to its host, and the
    // first touch of fresh memory is slow.
    for (_, run) in contenders.iter_mut().filter(|_| warm_up) {
        rustix::fs::sync();
        let _ = run();
    }
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (k + round) % contenders.len();
            // Nobody pays for the dirty pages (or the deletes) the one before left
            // behind.
            rustix::fs::sync();
            if let Some(sample) = (contenders[i].1)() {
                results[i].runs.push(sample);
            }
        }
    }
    results.retain(|row| !row.runs.is_empty());
    results
}

fn report(results: &[Row], bytes: u64) {
    let Some(first) = results.first() else {
        return;
    };
    for (i, row) in results.iter().enumerate() {
        let times = row.times();
        let rate = if bytes > 0 {
            format!("{:>6.0} MB/s", bytes as f64 / median(&times) / 1e6)
        } else {
            String::new()
        };
        let versus = if i == 0 {
            String::new()
        } else {
            format!(
                "row 1 takes {:.2}x its time",
                first.median() / median(&times)
            )
        };
        println!(
            "  {:<46} median {:>7.3} s (min {:.3}, max {:.3}) {rate}  {versus}",
            row.name,
            median(&times),
            min(&times),
            max(&times)
        );
        let send = row.side(|run| run.send);
        let recv = row.side(|run| run.recv);
        if send.is_some() || recv.is_some() {
            let show = |side: Option<(f64, f64)>, what: fn((f64, f64)) -> f64, unit| {
                side.map_or("n/a".to_string(), |s| format!("{:.2}{unit}", what(s)))
            };
            println!(
                "  {:<46}   cpu send {} recv {}; peak RSS send {} recv {}",
                "",
                show(send, |s| s.0, " s"),
                show(recv, |s| s.0, " s"),
                show(send, |s| s.1, " MiB"),
                show(recv, |s| s.1, " MiB"),
            );
        }
    }
}

/// Prints median(a) / median(b), against a bound if there is one.
fn ratio(results: &[Row], a: &str, b: &str, target: Option<f64>) {
    let find = |name: &str| results.iter().find(|row| row.name == name);
    let mut line = format!("    {a} / {b}: ");
    match (find(a), find(b)) {
        (Some(a), Some(b)) => {
            let r = a.median() / b.median();
            let _ = write!(line, "{r:.2}x");
            if let Some(bound) = target {
                let verdict = if r <= bound { "met" } else { "MISSED" };
                let _ = write!(line, " (target <= {bound:.2}: {verdict})");
            }
        }
        _ => line.push_str("n/a (one of them did not run)"),
    }
    println!("{line}");
}

fn listen(extra: &[&str]) -> (Child, u16) {
    let mut command = Command::new(xfer_bin());
    command
        .args(["recv", "-q", "--listen", "127.0.0.1:0"])
        .args(extra);
    spawn_listener(command)
}

/// Spawns a listener and reads its `listening on` line for the port.
fn spawn_listener(mut command: Command) -> (Child, u16) {
    let mut child = command
        .env("XFER_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no stderr to read the port from");
    };
    let mut lines = BufReader::new(stderr);
    let mut line = String::new();
    let port = loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break None;
        }
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.rsplit(':').next().and_then(|port| port.parse().ok());
        }
    };
    let Some(port) = port else {
        let _ = child.kill();
        let status = child.wait();
        panic!("the listener did not say where it listens: {status:?}");
    };
    // Keep draining stderr so the listener never blocks on it.
    std::thread::spawn(move || for _ in lines.lines() {});
    (child, port)
}

fn bash_command(script: &str) -> Command {
    let mut command = Command::new("bash");
    command.args(["-c", script]);
    command
}

fn bash(script: &str) -> Child {
    bash_command(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_quiet(command: &mut Command) {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{command:?} failed");
}

fn timed(work: impl FnOnce()) -> f64 {
    let started = Instant::now();
    work();
    started.elapsed().as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`, without connecting to it (`nc -l`
/// takes exactly one connection): the kernel's socket table says when.
fn wait_for_port(port: u16) {
    let wanted = format!(":{port:04X} ");
    let started = Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // Columns: sl, local_address, rem_address, st; state 0A is LISTEN.
        let listening = table.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && format!("{} ", fields[1]).ends_with(&wanted) && fields[3] == "0A"
        });
        if listening {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn have(tool: &str) -> bool {
    Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A directory beneath `parent` that no run has used yet.
fn fresh_dir(parent: &Path) -> PathBuf {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    parent.join(
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    )
}

fn clean(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn warm(path: &Path) {
    let _ = std::io::copy(
        &mut std::fs::File::open(path).unwrap(),
        &mut std::io::sink(),
    );
}

/// `count` files of `len` pseudo-random bytes in `dir` (`PREFIX00.bin` …, made once
/// and seeded from `seed`), read once so they start in the page cache.
fn random_files(dir: &Path, prefix: &str, count: u64, len: u64, seed: u64) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("{prefix}{i:02}.bin"));
            if !path.exists() {
                make_file(&path, len, seed + i);
            }
            warm(&path);
            path
        })
        .collect()
}

/// `len` pseudo-random bytes: nothing in them compresses or dedups.
fn make_file(path: &Path, len: u64, seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng::new(seed);
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        rng.fill(&mut block);
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// `len` bytes of application log: timestamps, levels, services, HTTP requests,
/// job messages from a small vocabulary, numbers and random request ids. zstd -3
/// makes about a quarter of it (3.9 : 1).
fn make_log_corpus(path: &Path, len: u64) {
    const LEVELS: [&str; 20] = [
        "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "INFO", "INFO",
        "INFO", "INFO", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "WARN", "WARN", "ERROR",
    ];
    const SERVICES: [&str; 8] = [
        "api-gateway",
        "auth",
        "billing",
        "storage",
        "scheduler",
        "search",
        "mailer",
        "thumbs",
    ];
    const METHODS: [&str; 8] = ["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
    const ROUTES: [&str; 10] = [
        "/api/v1/files",
        "/api/v1/files/{id}",
        "/api/v1/users/{id}",
        "/api/v1/login",
        "/api/v2/search",
        "/api/v1/upload",
        "/healthz",
        "/metrics",
        "/api/v1/billing/invoices",
        "/api/v1/shares/{id}/members",
    ];
    const STATUS: [u32; 16] = [
        200, 200, 200, 200, 200, 200, 200, 200, 200, 201, 204, 304, 400, 403, 404, 500,
    ];
    const WORDS: &str = "request completed started user upload download cache miss hit retry \
        timeout connection closed opened token refreshed expired queue job scheduled finished \
        failed slow query index rebuilt session created deleted quota exceeded payment accepted \
        declined file stored checksum verified backend unavailable worker shard replica lag \
        thumbnail generated mail sent";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let word = |rng: &mut Rng| words[rng.below(words.len() as u64) as usize];
    let mut rng = Rng::new(0x5EED);
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut line = String::with_capacity(512);
    let mut ms: u64 = 0; // since 2026-11-21T00:00:00Z
    let mut left = len;
    while left > 0 {
        ms += rng.below(40);
        let (day, t) = (ms / 86_400_000, ms % 86_400_000);
        line.clear();
        let level = LEVELS[rng.below(20) as usize];
        let _ = write!(
            line,
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z {level:<5} [{}-{}] ",
            21 + day,
            t / 3_600_000,
            t / 60_000 % 60,
            t / 1000 % 60,
            t % 1000,
            SERVICES[rng.below(8) as usize],
            rng.below(16),
        );
        match rng.below(10) {
            0..=5 => {
                let route =
                    ROUTES[rng.below(10) as usize].replace("{id}", &rng.below(50_000).to_string());
                let _ = write!(
                    line,
                    "{} {route} status={} bytes={} duration_ms={} user=u{:05} req={:016x}",
                    METHODS[rng.below(8) as usize],
                    STATUS[rng.below(16) as usize],
                    rng.below(2_000_000),
                    rng.below(1500),
                    rng.below(20_000),
                    rng.next(),
                );
            }
            6..=7 => {
                let _ = write!(
                    line,
                    "{} {} {} job={} attempt={} queue_depth={}",
                    word(&mut rng),
                    word(&mut rng),
                    word(&mut rng),
                    rng.below(1_000_000),
                    1 + rng.below(3),
                    rng.below(200),
                );
            }
            _ => {
                for _ in 0..4 + rng.below(7) {
                    line.push_str(word(&mut rng));
                    line.push(' ');
                }
                let _ = write!(line, "took {}ms", rng.below(5000));
            }
        }
        line.push('\n');
        let n = left.min(line.len() as u64) as usize;
        file.write_all(&line.as_bytes()[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// `dirs` directories of `files` files each, of 1024-2048 pseudo-random bytes;
/// returns the bytes in all.
fn make_tree(root: &Path, dirs: usize, files: usize) -> u64 {
    clean(root);
    let mut rng = Rng::new(7);
    let mut buf = vec![0u8; 2048];
    let mut bytes = 0;
    for d in 0..dirs {
        let sub = root.join(format!("d{d:04}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..files {
            let len = 1024 + rng.below(1025) as usize;
            rng.fill(&mut buf[..len]);
            std::fs::write(sub.join(format!("f{f:03}")), &buf[..len]).unwrap();
            bytes += len as u64;
        }
    }
    bytes
}

/// xorshift64*: fast, and good enough that zstd finds nothing in its output.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sorted(times: &[f64]) -> Vec<f64> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

fn median(times: &[f64]) -> f64 {
    let sorted = sorted(times);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn min(times: &[f64]) -> f64 {
    sorted(times)[0]
}

fn max(times: &[f64]) -> f64 {
    *sorted(times).last().unwrap()
}
