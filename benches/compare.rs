//! `cargo bench --bench compare`: xfer against the tools people use instead, measured
//! in the same run on loopback, alternating contenders every round so that the
//! machine's drift hits all of them alike. It prints medians, min-max and ratios, and
//! asserts nothing: it is not part of the test suite.
//!
//! Compared: a 1 GiB file (xfer; nc + md5sum on both ends; an rsync daemon with
//! `--checksum-choice=md5 -W`), 10 000 files of 4 KiB (xfer; tar | nc with md5sum
//! on both ends), a 1-byte file against process start-up, 16 concurrent 100 MB
//! senders against one, and the peak RSS of each xfer side for 1 GiB and 10 GiB.
//! A comparison whose tool is missing is skipped, saying so.
//!
//! Environment: `XFER_BENCH_ROUNDS` (default 5), `XFER_BENCH_ONLY` to run some of the
//! sections `big,small,latency,concurrent,memory`, `XFER_BENCH_SKIP_10G=1` to skip the
//! 10 GiB run (about a minute), `XFER_BENCH_DIR` for the scratch directory (default:
//! the system's temporary directory; it needs about 3 GiB).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const XFER: &str = env!("CARGO_BIN_EXE_xfer");
const KEY: &str = "benchmark key, long enough not to warn";

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
        "machine: {} cores; timings are wall-clock seconds on loopback\n",
        cores()
    );

    let only = std::env::var("XFER_BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s == section);
    let big = dir.join("big.bin");
    if wanted("big") || wanted("memory") {
        make_file(&big, 1 << 30, 1);
        warm(&big);
    }
    if wanted("big") {
        one_gib(dir, &big, rounds);
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
}

// ---- the comparisons ---------------------------------------------------------

fn one_gib(dir: &Path, file: &Path, rounds: usize) {
    println!("== 1 GiB file, verified end to end ==");
    let out = dir.join("out");
    let mut contenders: Vec<Contender> = vec![(
        "xfer send -> xfer recv --dir",
        Box::new(|| Some(xfer_file(file, &out))),
    )];
    if have("nc") && have("md5sum") && have("tee") {
        contenders.push((
            "nc + md5sum on both ends",
            Box::new(|| Some(nc_md5(file, &out))),
        ));
    } else {
        println!("(skipping nc + md5sum: nc, md5sum or tee is not installed)");
    }
    if have("rsync") {
        contenders.push((
            "rsync daemon --checksum-choice=md5 -W",
            Box::new(|| rsync_md5(dir, file, &out)),
        ));
    } else {
        println!("(skipping rsync: not installed)");
    }
    let results = alternate(rounds, &mut contenders);
    report(&results, 1 << 30);
    clean(&dir.join("out"));
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
        Box::new(|| Some(xfer_file(&tree, &fresh_dir(&dir.join("small-out"))))),
    )];
    if have("nc") && have("md5sum") && have("tar") {
        contenders.push((
            "tar c | nc -> nc -l | tar x, md5sum both ends",
            Box::new(|| Some(tar_nc(&tree, &fresh_dir(&dir.join("small-out"))))),
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
            Box::new(|| Some(timed(|| run_quiet(Command::new(XFER).arg("--version"))))),
        ),
        (
            "1-byte file: send, until both sides exit",
            Box::new(|| Some(xfer_file(&one, &out))),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    for (name, times) in &results {
        println!(
            "  {name:<46} median {:>6.1} ms (min {:.1}, max {:.1})",
            median(times) * 1e3,
            min(times) * 1e3,
            max(times) * 1e3
        );
    }
    let (start, whole) = (median(&results[0].1), median(&results[1].1));
    println!(
        "  handshake + offer + data + durable ack add {:.1} ms to the process start",
        (whole - start) * 1000.0
    );
}

fn concurrent(dir: &Path, rounds: usize) {
    println!("\n== 16 concurrent senders of 100 MB into one `recv --serve` ==");
    let files: Vec<PathBuf> = (0..16)
        .map(|i| {
            let path = dir.join(format!("c{i:02}.bin"));
            if !path.exists() {
                make_file(&path, 100_000_000, 100 + i);
            }
            warm(&path);
            path
        })
        .collect();
    let out = dir.join("out");
    let mut contenders: Vec<Contender> = vec![
        (
            "one sender of 100 MB",
            Box::new(|| Some(serve_many(&files[..1], &out))),
        ),
        (
            "16 senders of 100 MB at once",
            Box::new(|| Some(serve_many(&files, &out))),
        ),
    ];
    let results = alternate(rounds, &mut contenders);
    let single = 100e6 / median(&results[0].1);
    let aggregate = 16.0 * 100e6 / median(&results[1].1);
    for (name, times) in &results {
        println!(
            "  {name:<44} median {:.2} s (min {:.2}, max {:.2})",
            median(times),
            min(times),
            max(times)
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
    println!("\n== peak RSS of each side ==");
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

// ---- contenders ----------------------------------------------------------------

/// `xfer send PATH` into a fresh `xfer recv --dir OUT`; seconds from starting the
/// sender until both have exited (the receiver is already listening).
fn xfer_file(path: &Path, out: &Path) -> f64 {
    clean(out);
    let (mut receiver, port) = listen(&["--dir", out.to_str().unwrap()]);
    timed(|| {
        run_quiet(
            Command::new(XFER)
                .args(["send", "-q"])
                .arg(path)
                .arg(format!("127.0.0.1:{port}"))
                .env("XFER_KEY", KEY),
        );
        assert!(receiver.wait().unwrap().success(), "receiver failed");
    })
}

fn nc_md5(file: &Path, out: &Path) -> f64 {
    clean(out);
    std::fs::create_dir_all(out).unwrap();
    let port = free_port();
    let mut receiver = bash(&format!(
        "nc -l 127.0.0.1 {port} | tee {}/big.bin | md5sum > /dev/null",
        out.display()
    ));
    wait_for_port(port);
    let seconds = timed(|| {
        run_quiet(&mut bash_command(&format!(
            "tee >(md5sum > /dev/null) < {} | nc -N 127.0.0.1 {port}",
            file.display()
        )));
        receiver.wait().unwrap();
    });
    clean(out);
    seconds
}

fn rsync_md5(dir: &Path, file: &Path, out: &Path) -> Option<f64> {
    clean(out);
    std::fs::create_dir_all(out).unwrap();
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
    let mut daemon = Command::new("rsync")
        .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--config={}", conf.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for_port(port);
    let seconds = timed(|| {
        run_quiet(
            Command::new("rsync")
                .args(["-W", "--checksum-choice=md5"])
                .arg(file)
                .arg(format!("rsync://127.0.0.1:{port}/bench/")),
        )
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    clean(out);
    Some(seconds)
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
                Command::new(XFER)
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
        .arg(XFER)
        .args(["recv", "-q", "--listen", "127.0.0.1:0"])
        .args(recv_args);
    let (mut receiver, port) = spawn_listener(recv);
    let mut send = Command::new("/usr/bin/time");
    send.args(["-f", "%M", "-o"])
        .arg(send_rss.path())
        .arg(XFER)
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

// ---- helpers ---------------------------------------------------------------------

/// A named way of doing the job once; `None` when it could not run this time.
type Contender<'a> = (&'static str, Box<dyn FnMut() -> Option<f64> + 'a>);

/// Runs every contender once per round, rotating who goes first.
fn alternate(rounds: usize, contenders: &mut [Contender<'_>]) -> Vec<(String, Vec<f64>)> {
    let mut results: Vec<(String, Vec<f64>)> = contenders
        .iter()
        .map(|(name, _)| (name.to_string(), Vec::new()))
        .collect();
    // One unmeasured round: the VM hands freed memory back to its host, and the
    // first touch of fresh memory is slow.
    for (_, run) in contenders.iter_mut() {
        let _ = run();
    }
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (k + round) % contenders.len();
            // Nobody pays for the dirty pages the one before left behind.
            rustix::fs::sync();
            if let Some(seconds) = (contenders[i].1)() {
                results[i].1.push(seconds);
            }
        }
    }
    results.retain(|(_, times)| !times.is_empty());
    results
}

fn report(results: &[(String, Vec<f64>)], bytes: u64) {
    let reference = results[0].1.clone();
    for (name, times) in results {
        let rate = if bytes > 0 {
            format!("{:>6.0} MB/s", bytes as f64 / median(times) / 1e6)
        } else {
            String::new()
        };
        let ratio = median(&reference) / median(times);
        let versus = if std::ptr::eq(times, &results[0].1) {
            String::new()
        } else {
            format!("xfer takes {ratio:.2}x its time")
        };
        println!(
            "  {name:<46} median {:>7.3} s (min {:.3}, max {:.3}) {rate}  {versus}",
            median(times),
            min(times),
            max(times)
        );
    }
}

fn listen(extra: &[&str]) -> (Child, u16) {
    let mut command = Command::new(XFER);
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

fn make_file(path: &Path, len: u64, seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = pattern(1 << 20, seed);
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
        // Vary the blocks so nothing compresses or dedups.
        block[0] = block[0].wrapping_add(1);
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
