//! The receiver: listen, and for each authenticated connection run one session:
//! answer the offer with a plan, receive each accepted file into the target
//! directory (or standard output), hashing while it arrives, verify it, make it
//! durable and only then acknowledge it.
//!
//! Per-entry problems (an unsafe name, an existing file, a full disk, a bad checksum)
//! are answered with an `error` frame for that entry and the session goes on; a peer
//! that breaks the protocol ends the session. The filesystem is reached only
//! through `sink`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::HumanBytes;
use md5::{Digest, Md5};

use crate::cli::RecvArgs;
use crate::conn::{Connection, FrameReader, FrameWriter};
use crate::error::{Classify, Kind, fail, kind_of};
use crate::escape::escape;
use crate::frame::{self, Decision, Entry, EntryKind, ErrorCode, Message, Role};
use crate::handshake::{FileFacts, SessionKey, peer_error};
use crate::net::{self, Handler};
use crate::report::{self, Failed, Json, Reporter, Style, Verified};
use crate::sink::{self, PartFile, Refusal, Resume, StdoutSink, TargetDir};

/// Bytes read from the socket and written out at a time.
const BUFFER: usize = 256 << 10;

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
    let in_session = Arc::new(AtomicBool::new(false));
    let handler: Handler = {
        let in_session = in_session.clone();
        Arc::new(move |conn, session_key, peer| {
            in_session.store(true, Ordering::SeqCst);
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
        })
    };
    let link = args.link.link(args.from.as_ref());
    let result = net::run(
        &link,
        Role::Receiver,
        args.common.key_file.as_deref(),
        args.link.timeouts(),
        |local| Reporter::new(style).listening(&local.to_string()),
        handler,
    );
    // A failure before any session (cannot connect, wrong key) still ends a
    // one-session run with its summary; a serving process logged each session.
    if result.is_err() && !in_session.load(Ordering::SeqCst) && !style.serving {
        Reporter::new(style).finish("received", &result);
    }
    result
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

/// Paths being received right now, across the sessions of this process, so two
/// senders of the same path never write into one partial file.
#[derive(Default)]
pub struct Claims(Mutex<HashSet<String>>);

/// A claimed path, released when dropped.
pub struct Claim<'a> {
    claims: &'a Claims,
    path: String,
}

impl Claims {
    fn claim(&self, path: &str) -> Option<Claim<'_>> {
        let mut held = self.0.lock().expect("no panics while holding the lock");
        held.insert(path.to_string()).then(|| Claim {
            claims: self,
            path: path.to_string(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims
            .0
            .lock()
            .expect("no panics while holding the lock")
            .remove(&self.path);
    }
}

/// One entry of the offer, checked and decided.
struct Planned<'c> {
    entry: Entry,
    /// The path's components, from `sink::check_path`.
    components: Vec<String>,
    /// Will data for this entry come?
    expects_data: bool,
    /// Resumable data already here: its length and the MD5 state after it.
    resume_from: Option<(u64, Md5)>,
    /// Keeps other sessions of this process off the same path until we are done.
    _claim: Option<Claim<'c>>,
}

impl Planned<'_> {
    fn new(entry: Entry, expects_data: bool) -> Self {
        Planned {
            entry,
            components: Vec::new(),
            expects_data,
            resume_from: None,
            _claim: None,
        }
    }
}

/// Runs one receiving session on an authenticated connection. A session-level
/// failure is also told to the peer, where the connection still allows it.
pub fn session<R: Read, W: Write>(
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
struct Shared<'a> {
    session_key: &'a SessionKey,
    destination: &'a Destination,
    claims: &'a Claims,
    options: RecvOptions,
}

fn receive<R: Read, W: Write>(
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
        Destination::Dir(target) => plan(entries, target, context, reporter),
        Destination::Stdout => plan_stdout(entries)?,
    };
    let decisions = planned
        .iter()
        .map(|(_, decision)| decision.clone())
        .collect();
    let planned: Vec<Planned> = planned.into_iter().map(|(p, _)| p).collect();
    writer.write_message(&Message::Plan { entries: decisions })?;
    writer.flush()?;

    let total = planned
        .iter()
        .filter(|p| p.expects_data)
        .map(|p| {
            let already = p.resume_from.as_ref().map_or(0, |(len, _)| *len);
            p.entry.size.map(|size| size - already)
        })
        .sum::<Option<u64>>();
    reporter.start_bar(total);
    let mut buffer = vec![0; BUFFER];
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
                reporter.failed(Failed {
                    path: planned[index as usize].entry.path.clone(),
                    code,
                    why: format!("the sender gave up on it: {}", escape(&message)),
                });
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
        let planned_offset = item.resume_from.as_ref().map_or(0, |(len, _)| *len);
        if offset != 0 && offset != planned_offset {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "data for entry {index} from offset {offset}; the plan said {planned_offset} or 0"
                ),
            ));
        }
        next_index = index + 1;
        settled[index as usize] = true;
        reporter
            .bar()
            .set_message(escape(&item.entry.path).into_owned());
        // Continue the prefix's hash, or start over when the sender starts over.
        let (landing, hasher) = open_landing(item, offset, context)?;
        let arrived = receive_file(
            reader,
            index,
            item,
            landing,
            hasher,
            offset,
            &mut buffer,
            reporter,
        )?;
        let verified = arrived.and_then(|arrived| {
            if let Err(refusal) = verify(index, item, &arrived, context.session_key) {
                arrived.landing.discard();
                return Err(refusal);
            }
            let facts = (arrived.size, arrived.md5);
            arrived
                .landing
                .commit(item.entry.mtime, context.options.overwrite)?;
            Ok(facts)
        });
        let reply = match verified {
            Ok((size, md5)) => {
                let facts = FileFacts {
                    index,
                    size,
                    md5: &md5,
                    path: &item.entry.path,
                };
                reporter.verified(Verified {
                    path: item.entry.path.clone(),
                    size,
                    md5: frame::hex(&md5),
                });
                Message::Ok {
                    index,
                    mac: context.session_key.ok_mac(facts),
                }
            }
            Err(mut refusal) => {
                if matches!(context.destination, Destination::Stdout) {
                    refusal.message.push_str(
                        "; the bytes already written to standard output are NOT verified: discard them",
                    );
                }
                reporter.failed(Failed {
                    path: item.entry.path.clone(),
                    code: refusal.code,
                    why: refusal.to_string(),
                });
                Message::Error {
                    code: refusal.code,
                    message: refusal.message,
                    index: Some(index),
                }
            }
        };
        writer.write_message(&reply)?;
        writer.flush()?;
    }
    if let Some(missing) = (0..planned.len()).find(|&i| planned[i].expects_data && !settled[i]) {
        return Err(fail(
            Kind::Protocol,
            format!("end before entry {missing} was sent"),
        ));
    }
    if let Destination::Dir(target) = context.destination {
        finish_dirs(&planned, target);
    }
    writer.write_message(&Message::End)?;
    writer.flush()?;
    reporter.outcome(planned.len(), "received")
}

/// Where entry `item`'s data starting at `offset` goes, and the MD5 state to
/// continue from.
fn open_landing(item: &Planned, offset: u64, context: &Shared<'_>) -> Result<(Landing, Md5)> {
    let hasher = match &item.resume_from {
        Some((len, prefix)) if offset == *len && offset > 0 => prefix.clone(),
        _ => Md5::new(),
    };
    let landing = match context.destination {
        Destination::Dir(target) => {
            let components: Vec<&str> = item.components.iter().map(String::as_str).collect();
            let resume = match item.entry.size {
                Some(size) if context.options.resume => Some(Resume { size, offset }),
                _ => None,
            };
            Landing::Part(target.create_part(
                &item.entry.path,
                &components,
                item.entry.mode,
                resume,
            ))
        }
        Destination::Stdout => Landing::Stdout(
            StdoutSink::open()
                .context("cannot write to standard output")
                .classify(Kind::Io)?,
        ),
    };
    Ok((landing, hasher))
}

/// Directory modes and times last: writing their contents changed the times, and a
/// read-only mode would have stopped the writing. Deepest first.
fn finish_dirs(planned: &[Planned], target: &TargetDir) {
    let dirs = planned
        .iter()
        .rev()
        .filter(|p| p.entry.kind == EntryKind::Dir && !p.components.is_empty());
    for item in dirs {
        let components: Vec<&str> = item.components.iter().map(String::as_str).collect();
        if let Err(refusal) = target.finish_dir(
            &item.entry.path,
            &components,
            item.entry.mode,
            item.entry.mtime,
        ) {
            report::warn(&refusal.message);
        }
    }
}

/// Decides every offered entry: checks its path, refuses duplicates, paths another
/// session is receiving, existing files and what will not fit, creates directories,
/// and finds resumable data.
fn plan<'c>(
    entries: Vec<Entry>,
    target: &TargetDir,
    context: &Shared<'c>,
    reporter: &Reporter,
) -> Vec<(Planned<'c>, Decision)> {
    let mut seen = HashSet::new();
    let mut free = target.free_space();
    let mut planned = Vec::with_capacity(entries.len());
    for entry in entries {
        match decide(entry.clone(), target, context, &mut seen, &mut free) {
            Ok(item) => {
                let decision = Decision::Send {
                    offset: item.resume_from.as_ref().map_or(0, |(len, _)| *len),
                    prefix_md5: item
                        .resume_from
                        .as_ref()
                        .map(|(_, prefix)| frame::hex(&prefix.clone().finalize())),
                };
                planned.push((item, decision));
            }
            Err(refusal) => {
                reporter.failed(Failed {
                    path: entry.path.clone(),
                    code: refusal.code,
                    why: refusal.to_string(),
                });
                let skip = Decision::Skip {
                    code: refusal.code,
                    message: refusal.message,
                };
                planned.push((Planned::new(entry, false), skip));
            }
        }
    }
    planned
}

/// The plan of a receiver writing to standard output: exactly one file, or nothing.
fn plan_stdout<'c>(entries: Vec<Entry>) -> Result<Vec<(Planned<'c>, Decision)>> {
    match entries.as_slice() {
        [entry] if entry.kind == EntryKind::File => {}
        [_] => {
            return Err(fail(
                Kind::Refused,
                "this receiver writes to standard output and takes one file, not a directory",
            ));
        }
        _ => {
            return Err(fail(
                Kind::Refused,
                format!(
                    "this receiver writes to standard output and takes exactly one file; the offer has {} entries",
                    entries.len()
                ),
            ));
        }
    }
    let send = Decision::Send {
        offset: 0,
        prefix_md5: None,
    };
    Ok(entries
        .into_iter()
        .map(|entry| (Planned::new(entry, true), send.clone()))
        .collect())
}

fn decide<'c>(
    entry: Entry,
    target: &TargetDir,
    context: &Shared<'c>,
    seen: &mut HashSet<String>,
    free: &mut Option<u64>,
) -> Result<Planned<'c>, Refusal> {
    let shown = escape(&entry.path).into_owned();
    let components = sink::check_path(&entry.path)
        .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
    if !seen.insert(entry.path.clone()) {
        return Err(Refusal::new(
            ErrorCode::BadPath,
            format!("{shown}: offered twice"),
        ));
    }
    let mut claim = None;
    let mut resume_from = None;
    match entry.kind {
        EntryKind::Dir => target.create_dir(&entry.path, &components)?,
        EntryKind::File => {
            claim = Some(context.claims.claim(&entry.path).ok_or_else(|| {
                Refusal::new(
                    ErrorCode::Busy,
                    format!("{shown}: being received by another session"),
                )
            })?);
            target.probe_file(&entry.path, &components, context.options.overwrite)?;
            if let Some(size) = entry.size {
                if context.options.resume {
                    resume_from = target.find_partial(&entry.path, &components, size)?;
                } else {
                    target.discard_partial(&entry.path, &components, size);
                }
            }
            if let (Some(size), Some(left)) = (entry.size, free.as_mut()) {
                let needed = size - resume_from.as_ref().map_or(0, |(len, _)| *len);
                *left = left.checked_sub(needed).ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "{shown}: needs {}, the receiver has {} free",
                            HumanBytes(needed),
                            HumanBytes(*left)
                        ),
                    )
                })?;
            }
        }
        EntryKind::Unknown => {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                format!("{shown}: unsupported entry kind"),
            ));
        }
    }
    let expects_data = entry.kind == EntryKind::File;
    let components = components.into_iter().map(str::to_string).collect();
    Ok(Planned {
        entry,
        components,
        expects_data,
        resume_from,
        _claim: claim,
    })
}

/// Where one file's bytes go while it arrives.
enum Landing {
    /// A part file in the target directory, or why there is none (its data is
    /// then read and dropped, to stay in step with the sender).
    Part(Result<PartFile, Refusal>),
    /// Standard output: a write failure there ends the session.
    Stdout(StdoutSink),
}

impl Landing {
    /// Makes a verified file final: a part file is renamed into place; standard
    /// output has nothing left to do.
    fn commit(self, mtime: Option<i64>, overwrite: bool) -> Result<(), Refusal> {
        match self {
            Landing::Part(part) => part?.commit(mtime, overwrite),
            Landing::Stdout(_) => Ok(()),
        }
    }

    /// Drops data that must not be kept, not even for resuming.
    fn discard(self) {
        if let Landing::Part(Ok(part)) = self {
            part.discard();
        }
    }
}

/// What arrived for one file, before verification.
struct Arrived {
    size: u64,
    md5: [u8; 16],
    /// What `done` claimed.
    claimed_size: u64,
    claimed_md5: String,
    claimed_mac: String,
    landing: Landing,
}

/// Receives one file's data frames and its `done`, hashing and writing as it goes.
/// The outer error ends the session; the inner one is this entry's.
#[allow(clippy::too_many_arguments)]
fn receive_file<R: Read>(
    reader: &mut FrameReader<R>,
    index: u64,
    item: &Planned,
    mut landing: Landing,
    mut hasher: Md5,
    offset: u64,
    buffer: &mut [u8],
    reporter: &Reporter,
) -> Result<Result<Arrived, Refusal>> {
    // Counting from the start of the file: a resumed file already has `offset` bytes.
    let mut received: u64 = offset;
    loop {
        let mut left = reader.read_data_len()?;
        if left == 0 {
            break;
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
            // Whatever arrives is written at once: a cut loses nothing that came.
            let n = reader.read_data_some(&mut buffer[..left.min(BUFFER)])?;
            let chunk = &buffer[..n];
            hasher.update(chunk);
            match &mut landing {
                Landing::Part(Ok(part)) => {
                    if let Err(refusal) = part.write_all(chunk) {
                        // Not kept for resuming: the disk is full or failing.
                        std::mem::replace(&mut landing, Landing::Part(Err(refusal))).discard();
                    }
                }
                Landing::Part(Err(_)) => {}
                Landing::Stdout(out) => out
                    .write_all(chunk)
                    .context("cannot write to standard output")
                    .classify(Kind::Io)?,
            }
            left -= chunk.len();
            received += chunk.len() as u64;
            reporter.bar().inc(chunk.len() as u64);
        }
    }
    let (claimed_size, claimed_md5, claimed_mac) = match reader.expect_message("done")? {
        Message::Done {
            index: done_index,
            size,
            md5,
            mac,
        } if done_index == index => (size, md5, mac),
        other => {
            return Err(fail(
                Kind::Protocol,
                format!("expected done for entry {index}, got {other}"),
            ));
        }
    };
    if let Landing::Part(Err(refusal)) = landing {
        return Ok(Err(refusal));
    }
    Ok(Ok(Arrived {
        size: received,
        md5: hasher.finalize().into(),
        claimed_size,
        claimed_md5,
        claimed_mac,
        landing,
    }))
}

/// Checks what arrived against the offer and the sender's `done`: size, MD5, MAC.
fn verify(
    index: u64,
    item: &Planned,
    arrived: &Arrived,
    session_key: &SessionKey,
) -> Result<(), Refusal> {
    let path = item.entry.path.as_str();
    let shown = escape(path);
    let checksum = |why: String| Refusal::new(ErrorCode::Checksum, format!("{shown}: {why}"));
    let offered = item.entry.size;
    if arrived.claimed_size != arrived.size || offered.is_some_and(|size| size != arrived.size) {
        let offered = offered.map_or("unknown".to_string(), |size| size.to_string());
        return Err(checksum(format!(
            "size mismatch: offered {offered}, the sender says {}, {} arrived",
            arrived.claimed_size, arrived.size
        )));
    }
    if frame::unhex::<16>(&arrived.claimed_md5) != Some(arrived.md5) {
        return Err(checksum(format!(
            "MD5 mismatch: the sender says {}, what arrived has {}",
            escape(&arrived.claimed_md5),
            frame::hex(&arrived.md5)
        )));
    }
    let facts = FileFacts {
        index,
        size: arrived.size,
        md5: &arrived.md5,
        path,
    };
    if !session_key.verify_done(facts, &arrived.claimed_mac) {
        return Err(Refusal::new(
            ErrorCode::Mac,
            format!("{shown}: the sender's MAC does not verify"),
        ));
    }
    Ok(())
}
