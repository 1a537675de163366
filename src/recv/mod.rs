//! The receiver: listen, and for each authenticated connection run one session:
//! answer the offer with a plan, receive each accepted file into the target
//! directory (or standard output), hashing while it arrives, verify it, make it
//! durable and only then acknowledge it.
//!
//! Per-entry problems (an unsafe name, an existing file, a full disk, a bad checksum)
//! are answered with an `error` frame for that entry and the session goes on; a peer
//! that breaks the protocol ends the session. The filesystem is reached only
//! through `sink`.
//!
//! Here: the session and its socket thread, which reads frames and hashes data as it
//! arrives. `plan` decides the offer; `disk` writes, makes files durable and
//! acknowledges them, on a thread of its own.

mod disk;
mod plan;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use md5::{Digest, Md5};

use self::disk::{Arrived, Job};
pub use self::plan::Claims;
use self::plan::Planned;
use crate::cli::RecvArgs;
use crate::conn::{Connection, FrameReader, FrameWriter};
use crate::error::{Classify, Kind, fail, kind_of};
use crate::escape::escape;
use crate::frame::{self, Entry, EntryKind, ErrorCode, Message, Role};
use crate::handshake::{FileFacts, SessionKey, peer_error};
use crate::net::{self, Handler};
use crate::pool::Pool;
use crate::report::{self, Failed, Json, Reporter, Style};
use crate::sink::{Refusal, TargetDir};

/// Bytes read from the socket at a time, and handed to the disk thread: the
/// sender's frame size (see `send::CHUNK` for the measurements).
const BUFFER: usize = 1 << 20;
/// Buffers in flight between the socket thread and the disk thread.
const POOL_BUFFERS: usize = 4;

/// Where received files go.
pub enum Destination {
    /// Into this directory, under their offered paths.
    Dir(TargetDir),
    /// The one file of the offer, to standard output.
    Stdout,
}

/// How a receiver treats what it is offered.
#[derive(Debug, Clone, Copy)]
pub struct RecvOptions {
    /// Replace existing files (atomically).
    pub overwrite: bool,
    /// Keep partial data of cut transfers, and continue from it.
    pub resume: bool,
}

/// `xfer recv`: receive from the sender we connect to, or from each sender that
/// connects (`--listen`).
pub fn run(args: &RecvArgs) -> Result<()> {
    let style = Style {
        quiet: args.common.quiet,
        json: match (args.common.json, args.stdout) {
            (false, _) => Json::Off,
            (true, false) => Json::Stdout,
            (true, true) => Json::Stderr,
        },
        serving: args.link.serve,
    };
    // Past a file-size limit (`ulimit -f`) the kernel sends SIGXFSZ, which would kill
    // us; with a handler in place the write fails with EFBIG instead, and that file
    // is refused with `io` while the session goes on.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )
    .context("cannot install a SIGXFSZ handler")?;
    let destination = if args.stdout {
        Destination::Stdout
    } else {
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create target directory {}", args.dir.display()))
            .classify(Kind::Io)?;
        let target = TargetDir::open(&args.dir)?;
        sweep_partials(&target, args.keep_partial, args.link.serve)?;
        Destination::Dir(target)
    };
    let options = RecvOptions {
        overwrite: args.overwrite,
        resume: !args.no_resume,
    };
    let destination = Arc::new(destination);
    let claims = Arc::new(Claims::default());
    let handler: Handler = Arc::new(move |conn, session_key, peer| {
        let raw = conn.writer.get_ref().try_clone();
        let reporter = Reporter::new(style).for_peer(peer);
        let result = session(
            conn,
            &session_key,
            &destination,
            &claims,
            options,
            reporter.clone(),
        );
        reporter.finish("received", &result);
        if let (Err(_), Ok(raw)) = (&result, raw) {
            net::linger(&raw);
        }
        result
    });
    let link = args.link.link(args.from.as_ref());
    net::run_reported(
        &link,
        Role::Receiver,
        args.common.key_file.as_deref(),
        args.link.timeouts(),
        style,
        "received",
        handler,
    )
}

/// How often a serving receiver looks for abandoned partial files.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Removes partial files older than `keep_hours` now, in the background (a large
/// tree takes a while), and again every hour while serving.
fn sweep_partials(target: &TargetDir, keep_hours: u64, serving: bool) -> Result<()> {
    let sweeper = target.try_clone().classify(Kind::Io)?;
    let age = Duration::from_secs(keep_hours.saturating_mul(3600));
    std::thread::spawn(move || {
        loop {
            let removed = sweeper.sweep_stale(age);
            if removed > 0 {
                report::line(&format!(
                    "xfer: removed {removed} partial file(s) older than {keep_hours} h that no sender came back for"
                ));
            }
            if !serving {
                break;
            }
            std::thread::sleep(SWEEP_EVERY);
        }
    });
    Ok(())
}

/// Runs one receiving session on an authenticated connection. A session-level
/// failure is also told to the peer, where the connection still allows it.
pub fn session<R: Read, W: Write + Send>(
    conn: Connection<R, W>,
    session_key: &SessionKey,
    destination: &Destination,
    claims: &Claims,
    options: RecvOptions,
    mut reporter: Reporter,
) -> Result<()> {
    let Connection {
        mut reader,
        mut writer,
    } = conn;
    let context = Shared {
        session_key,
        destination,
        claims,
        options,
    };
    let result = receive(&mut reader, &mut writer, &context, &mut reporter);
    if let Err(err) = &result {
        let code = match kind_of(err) {
            Some(Kind::Protocol) => Some(ErrorCode::Protocol),
            Some(Kind::Io) => Some(ErrorCode::Io),
            // The only session-level refusal: an offer `--stdout` cannot take.
            Some(Kind::Refused) => Some(ErrorCode::TooLarge),
            _ => None,
        };
        if let Some(code) = code {
            let message = Message::error(code, format!("{err:#}"));
            let _ = writer.write_message(&message).and_then(|()| writer.flush());
        }
    }
    result
}

/// What a session works with, besides the connection.
pub struct Shared<'a> {
    pub session_key: &'a SessionKey,
    pub destination: &'a Destination,
    pub claims: &'a Claims,
    pub options: RecvOptions,
}

fn receive<R: Read, W: Write + Send>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    context: &Shared<'_>,
    reporter: &mut Reporter,
) -> Result<()> {
    let entries = match reader.expect_message("the offer")? {
        Message::Offer { entries } => entries,
        Message::Error { code, message, .. } => return Err(peer_error(code, &message)),
        other => return Err(fail(Kind::Protocol, format!("expected offer, got {other}"))),
    };
    let is_stream = |entry: &Entry| entry.kind == EntryKind::File && entry.size.is_none();
    if entries.len() > 1 && entries.iter().any(is_stream) {
        return Err(fail(
            Kind::Protocol,
            "an entry of unknown size must be the only entry of its offer",
        ));
    }
    let planned = match context.destination {
        Destination::Dir(target) => plan::plan(entries, target, context, reporter),
        Destination::Stdout => plan::plan_stdout(entries)?,
    };
    let decisions = planned
        .iter()
        .map(|(_, decision)| decision.clone())
        .collect();
    let mut planned: Vec<Planned> = planned.into_iter().map(|(p, _)| p).collect();
    // The disk thread releases each path as soon as its file is done.
    let claims = planned.iter_mut().map(|p| p.claim.take()).collect();
    writer.write_message(&Message::Plan { entries: decisions })?;
    writer.flush()?;

    let total = planned
        .iter()
        .filter(|p| p.expects_data)
        .map(|p| p.entry.size.map(|size| size - p.resume_offset()))
        .sum::<Option<u64>>();
    reporter.start_bar(total);
    let reporter = &*reporter;
    let planned = &planned;
    let disk_writer = &mut *writer;
    let (read_result, disk_result) = std::thread::scope(|scope| {
        let (mut pool, giver) = Pool::new(POOL_BUFFERS, BUFFER);
        let (jobs, queue) = mpsc::channel();
        let disk = scope.spawn(move || {
            disk::run(
                queue,
                giver,
                disk_writer,
                planned,
                claims,
                context,
                reporter,
            )
        });
        let read = read_entries(reader, planned, &mut pool, &jobs, context, reporter);
        drop(jobs); // the disk thread commits what is left and returns
        (read, disk.join().expect("the disk thread does not panic"))
    });
    // Why the disk thread stopped (standard output closed) explains why we did.
    match (disk_result, read_result) {
        (Err(err), _) | (Ok(()), Err(err)) => return Err(err),
        (Ok(()), Ok(())) => {}
    }
    if let Destination::Dir(target) = context.destination {
        disk::finish_dirs(planned, target);
    }
    writer.write_message(&Message::End)?;
    writer.flush()?;
    reporter.outcome(planned.len(), "received")
}

/// The disk thread stopped taking work; its own error says why.
fn disk_gone() -> anyhow::Error {
    fail(Kind::Io, "the disk thread stopped")
}

/// The socket thread: reads each entry's data frames (hashing them as they arrive)
/// and its `done`, checks them, and hands the bytes and the verdict to the disk
/// thread, until the sender's `end`.
fn read_entries<R: Read>(
    reader: &mut FrameReader<R>,
    planned: &[Planned],
    pool: &mut Pool,
    jobs: &mpsc::Sender<Job>,
    context: &Shared<'_>,
    reporter: &Reporter,
) -> Result<()> {
    let mut next_index = 0;
    // Entries whose data came, or that the sender gave up on.
    let mut settled = vec![false; planned.len()];
    loop {
        let (index, offset) = match reader.expect_message("data or end")? {
            Message::Data { index, offset } => (index, offset),
            Message::End => break,
            // The sender gives up one entry it could not read: note it, go on.
            Message::Error {
                index: Some(index),
                code,
                message,
            } if planned
                .get(index as usize)
                .is_some_and(|p| p.expects_data && index >= next_index) =>
            {
                let failed = Failed {
                    path: planned[index as usize].entry.path.clone(),
                    code,
                    why: format!("the sender gave up on it: {}", escape(&message)),
                };
                // Through the disk thread, so outcomes are reported in entry order.
                jobs.send(Job::GaveUp(failed)).map_err(|_| disk_gone())?;
                settled[index as usize] = true;
                next_index = index + 1;
                continue;
            }
            Message::Error { code, message, .. } => return Err(peer_error(code, &message)),
            other => {
                return Err(fail(
                    Kind::Protocol,
                    format!("expected data or end, got {other}"),
                ));
            }
        };
        let Some(item) = usize::try_from(index).ok().and_then(|i| planned.get(i)) else {
            return Err(fail(
                Kind::Protocol,
                format!("data for entry {index}, which was not offered"),
            ));
        };
        if !item.expects_data || index < next_index {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "data for entry {index}, which was skipped, is a directory, or was already sent"
                ),
            ));
        }
        let resume_offset = item.resume_offset();
        if offset != 0 && offset != resume_offset {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "data for entry {index} from offset {offset}; the plan said {resume_offset} or 0"
                ),
            ));
        }
        next_index = index + 1;
        settled[index as usize] = true;
        reporter.current_file(&item.entry.path);
        // Continue the prefix's hash, or start over when the sender starts over.
        let hasher = match &item.resume_from {
            Some((len, prefix)) if offset == *len && offset > 0 => prefix.clone(),
            _ => Md5::new(),
        };
        let entry = index as usize;
        jobs.send(Job::Open {
            index: entry,
            offset,
        })
        .map_err(|_| disk_gone())?;
        let (size, md5) = read_data(reader, index, item, hasher, offset, pool, jobs, reporter)?;
        let claimed = match reader.expect_message("done")? {
            Message::Done {
                index: done_index,
                size,
                md5,
                mac,
            } if done_index == index => Claimed { size, md5, mac },
            other => {
                return Err(fail(
                    Kind::Protocol,
                    format!("expected done for entry {index}, got {other}"),
                ));
            }
        };
        let verdict = verify(index, item, size, md5, &claimed, context.session_key);
        jobs.send(Job::Close {
            index: entry,
            verdict,
        })
        .map_err(|_| disk_gone())?;
    }
    match (0..planned.len()).find(|&i| planned[i].expects_data && !settled[i]) {
        Some(missing) => Err(fail(
            Kind::Protocol,
            format!("end before entry {missing} was sent"),
        )),
        None => Ok(()),
    }
}

/// Reads one entry's data frames into pool buffers for the disk thread, hashing
/// as they arrive. Returns the size (counted from the start of the file) and MD5.
#[allow(clippy::too_many_arguments)]
fn read_data<R: Read>(
    reader: &mut FrameReader<R>,
    index: u64,
    item: &Planned,
    mut hasher: Md5,
    offset: u64,
    pool: &mut Pool,
    jobs: &mpsc::Sender<Job>,
    reporter: &Reporter,
) -> Result<(u64, [u8; 16])> {
    let mut received = offset;
    loop {
        let mut left = reader.read_data_len()?;
        if left == 0 {
            return Ok((received, hasher.finalize().into()));
        }
        if item
            .entry
            .size
            .is_some_and(|size| received + left as u64 > size)
        {
            return Err(fail(
                Kind::Protocol,
                format!("more data for entry {index} than its offered size"),
            ));
        }
        while left > 0 {
            let mut buffer = pool.take().ok_or_else(disk_gone)?;
            // Whatever arrives goes on at once: a cut loses nothing that came.
            let n = reader.read_data_some(&mut buffer[..left.min(BUFFER)])?;
            hasher.update(&buffer[..n]);
            jobs.send(Job::Write { buffer, len: n })
                .map_err(|_| disk_gone())?;
            left -= n;
            received += n as u64;
            reporter.bar().inc(n as u64);
        }
    }
}

/// What the sender's `done` says.
struct Claimed {
    size: u64,
    md5: String,
    mac: String,
}

/// Checks what arrived against the offer and the sender's `done`: size, MD5, MAC.
fn verify(
    index: u64,
    item: &Planned,
    size: u64,
    md5: [u8; 16],
    claimed: &Claimed,
    session_key: &SessionKey,
) -> Result<Arrived, Refusal> {
    let path = item.entry.path.as_str();
    let shown = escape(path);
    let checksum = |why: String| Refusal::new(ErrorCode::Checksum, format!("{shown}: {why}"));
    let offered = item.entry.size;
    if claimed.size != size || offered.is_some_and(|offered| offered != size) {
        let offered = offered.map_or("unknown".to_string(), |size| size.to_string());
        return Err(checksum(format!(
            "size mismatch: offered {offered}, the sender says {}, {size} arrived",
            claimed.size
        )));
    }
    if frame::unhex::<16>(&claimed.md5) != Some(md5) {
        return Err(checksum(format!(
            "MD5 mismatch: the sender says {}, what arrived has {}",
            escape(&claimed.md5),
            frame::hex(&md5)
        )));
    }
    let facts = FileFacts {
        index,
        size,
        md5: &md5,
        path,
    };
    if !session_key.verify_done(facts, &claimed.mac) {
        return Err(Refusal::new(
            ErrorCode::Mac,
            format!("{shown}: the sender's MAC does not verify"),
        ));
    }
    Ok(Arrived { size, md5 })
}
