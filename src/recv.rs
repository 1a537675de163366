//! The receiver: listen, and for each authenticated connection run one session:
//! answer the offer with a plan, receive each accepted file into the target
//! directory (hashing while it arrives), verify it, make it durable and only then
//! acknowledge it.
//!
//! Per-entry problems (an unsafe name, an existing file, a full disk, a bad checksum)
//! are answered with an `error` frame for that entry and the session goes on; a peer
//! that breaks the protocol ends the session. The filesystem is reached only
//! through `sink`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::HumanBytes;
use md5::{Digest, Md5};

use crate::cli::RecvArgs;
use crate::conn::{Connection, FrameReader, FrameWriter};
use crate::error::{Classify, Kind, fail, kind_of};
use crate::escape::escape;
use crate::frame::{self, Decision, Entry, EntryKind, ErrorCode, Message, Role};
use crate::handshake::{FileFacts, SessionKey, peer_error};
use crate::key::{self, Key};
use crate::net::{self, Handler, ServeOptions};
use crate::progress;
use crate::report::{self, Failed, Reporter, Verified};
use crate::send::finish;
use crate::sink::{self, PartFile, Refusal, TargetDir};

/// Bytes read from the socket and written to disk at a time.
const BUFFER: usize = 256 << 10;
/// Connections a serving receiver handles at once.
const MAX_CONNS: usize = 16;

/// How a receiver treats what it is offered.
#[derive(Debug, Clone, Copy)]
pub struct RecvOptions {
    /// Replace existing files (atomically).
    pub overwrite: bool,
    pub quiet: bool,
}

/// `xfer recv --listen`: bind, print where, serve sessions.
pub fn run(args: &RecvArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create target directory {}", args.dir.display()))
        .classify(Kind::Io)?;
    let target = Arc::new(TargetDir::open(&args.dir)?);
    let listener = net::bind(&args.listen)?;
    let local = listener.local_addr()?;
    let key = match key::load(args.common.key_file.as_deref())? {
        Some(key) => key,
        None => announce_generated_key(local)?,
    };
    report::line(&format!("listening on {local}"));
    let options = RecvOptions {
        overwrite: args.overwrite,
        quiet: args.common.quiet,
    };
    let serving = args.serve;
    let handler: Handler = Arc::new(move |conn, session_key, peer: SocketAddr| {
        let raw = conn.writer.get_ref().try_clone();
        let result = session(conn, &session_key, &target, options);
        if let (Err(_), Ok(raw)) = (&result, raw) {
            net::linger(&raw);
        }
        // A one-shot receiver exits with this error, and main prints it then.
        if let (Err(err), true) = (&result, serving) {
            report::line(&format!("xfer: session with {peer} failed: {err:#}"));
        }
        result
    });
    let serve = ServeOptions {
        once: !args.serve,
        max_conns: MAX_CONNS,
        timeouts: args.common.timeouts(),
    };
    net::serve(listener, key, Role::Receiver, serve, handler)
}

/// Makes a key for a receiver started without one, and shows how to send to it.
fn announce_generated_key(local: SocketAddr) -> Result<Key> {
    let generated = key::generate()?;
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    report::line(&format!(
        "xfer: no key given (--key-file or ${env}); generated one for this receiver:\n\n    \
         {env}={generated}\n\nSend to it with:\n\n    {env}={generated} xfer send FILE... {host}:{port}\n",
        env = key::KEY_ENV,
        port = local.port(),
    ));
    Ok(Key::generated(&generated))
}

/// One entry of the offer, checked and decided.
struct Planned {
    entry: Entry,
    /// The path's components, from `sink::check_path`.
    components: Vec<String>,
    /// Will data for this entry come?
    expects_data: bool,
}

/// Runs one receiving session on an authenticated connection.
pub fn session<R: Read, W: Write>(
    conn: Connection<R, W>,
    session_key: &SessionKey,
    target: &TargetDir,
    options: RecvOptions,
) -> Result<()> {
    let Connection {
        mut reader,
        mut writer,
    } = conn;
    let result = receive(&mut reader, &mut writer, session_key, target, options);
    if let Err(err) = &result
        && kind_of(err) == Some(Kind::Protocol)
    {
        // Best effort: tell the peer why before we hang up.
        let message = Message::error(ErrorCode::Protocol, format!("{err:#}"));
        let _ = writer.write_message(&message).and_then(|()| writer.flush());
    }
    result
}

fn receive<R: Read, W: Write>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    session_key: &SessionKey,
    target: &TargetDir,
    options: RecvOptions,
) -> Result<()> {
    let started = Instant::now();
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
    let quiet_reporter = Reporter::new(progress::transfer_bar(None, true), options.quiet);
    let (planned, decisions, mut failed) = plan(entries, target, options, &quiet_reporter);
    writer.write_message(&Message::Plan { entries: decisions })?;
    writer.flush()?;

    let total = planned
        .iter()
        .filter(|p| p.expects_data)
        .map(|p| p.entry.size.unwrap_or(0))
        .sum();
    let reporter = Reporter::new(
        progress::transfer_bar(Some(total), options.quiet),
        options.quiet,
    );
    let mut verified = Vec::new();
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
                let failed_entry = Failed {
                    path: planned[index as usize].entry.path.clone(),
                    why: format!("the sender gave up on it: {} ({code})", escape(&message)),
                };
                reporter.failed(&failed_entry);
                failed.push((failed_entry, Kind::of_code(code)));
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
        if offset != 0 {
            return Err(fail(
                Kind::Protocol,
                format!("data for entry {index} from offset {offset}; the plan said 0"),
            ));
        }
        next_index = index + 1;
        settled[index as usize] = true;
        reporter
            .bar()
            .set_message(escape(&item.entry.path).into_owned());
        let outcome = receive_file(
            reader,
            index,
            item,
            target,
            session_key,
            &mut buffer,
            &reporter,
            options,
        )?;
        let reply = match outcome {
            Ok(file) => {
                let facts = FileFacts {
                    index,
                    size: file.size,
                    md5: &file.md5,
                    path: &item.entry.path,
                };
                let reply = Message::Ok {
                    index,
                    mac: session_key.ok_mac(facts),
                };
                verified.push(Verified {
                    path: item.entry.path.clone(),
                    size: file.size,
                    md5: frame::hex(&file.md5),
                });
                reply
            }
            Err(refusal) => {
                let failed_entry = Failed {
                    path: item.entry.path.clone(),
                    why: refusal.to_string(),
                };
                reporter.failed(&failed_entry);
                failed.push((failed_entry, Kind::of_code(refusal.code)));
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
    // Directory times last: writing their contents changed them.
    for item in planned
        .iter()
        .rev()
        .filter(|p| p.entry.kind == EntryKind::Dir && !p.components.is_empty())
    {
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
    writer.write_message(&Message::End)?;
    writer.flush()?;
    reporter.summary("received", &verified, failed.len(), started.elapsed());
    finish(planned.len(), &failed, "received")
}

/// Decides every offered entry: checks its path, refuses duplicates, existing files
/// and what will not fit, and creates directories.
fn plan(
    entries: Vec<Entry>,
    target: &TargetDir,
    options: RecvOptions,
    reporter: &Reporter,
) -> (Vec<Planned>, Vec<Decision>, Vec<(Failed, Kind)>) {
    let mut seen = HashSet::new();
    let mut free = target.free_space();
    let mut planned = Vec::with_capacity(entries.len());
    let mut decisions = Vec::with_capacity(entries.len());
    let mut failed = Vec::new();
    for entry in entries {
        let decided = decide(&entry, target, options, &mut seen, &mut free);
        let (components, expects_data, decision) = match decided {
            Ok(components) => {
                let expects_data = entry.kind == EntryKind::File;
                (
                    components,
                    expects_data,
                    Decision::Send {
                        offset: 0,
                        prefix_md5: None,
                    },
                )
            }
            Err(refusal) => {
                let failed_entry = Failed {
                    path: entry.path.clone(),
                    why: refusal.to_string(),
                };
                reporter.failed(&failed_entry);
                failed.push((failed_entry, Kind::of_code(refusal.code)));
                (
                    Vec::new(),
                    false,
                    Decision::Skip {
                        code: refusal.code,
                        message: refusal.message,
                    },
                )
            }
        };
        planned.push(Planned {
            entry,
            components,
            expects_data,
        });
        decisions.push(decision);
    }
    (planned, decisions, failed)
}

fn decide(
    entry: &Entry,
    target: &TargetDir,
    options: RecvOptions,
    seen: &mut HashSet<String>,
    free: &mut Option<u64>,
) -> Result<Vec<String>, Refusal> {
    let shown = escape(&entry.path);
    let components = sink::check_path(&entry.path)
        .map_err(|why| Refusal::new(ErrorCode::BadPath, format!("{shown}: {why}")))?;
    if !seen.insert(entry.path.clone()) {
        return Err(Refusal::new(
            ErrorCode::BadPath,
            format!("{shown}: offered twice"),
        ));
    }
    match entry.kind {
        EntryKind::Dir => target.create_dir(&entry.path, &components)?,
        EntryKind::File => {
            target.probe_file(&entry.path, &components, options.overwrite)?;
            if let (Some(size), Some(left)) = (entry.size, free.as_mut()) {
                *left = left.checked_sub(size).ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "{shown}: needs {}, the receiver has {} free",
                            HumanBytes(size),
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
    Ok(components.into_iter().map(str::to_string).collect())
}

/// A file that arrived intact.
struct Arrived {
    size: u64,
    md5: [u8; 16],
}

/// Receives one file's data frames and its `done` into a part file, then verifies
/// and commits it. The outer error ends the session; the inner one is this entry's.
#[allow(clippy::too_many_arguments)]
fn receive_file<R: Read>(
    reader: &mut FrameReader<R>,
    index: u64,
    item: &Planned,
    target: &TargetDir,
    session_key: &SessionKey,
    buffer: &mut [u8],
    reporter: &Reporter,
    options: RecvOptions,
) -> Result<Result<Arrived, Refusal>> {
    let path = item.entry.path.as_str();
    let components: Vec<&str> = item.components.iter().map(String::as_str).collect();
    // A refused entry's data is still read (and dropped) to stay in step with the sender.
    let mut part: Result<PartFile, Refusal> =
        target.create_part(path, &components, item.entry.mode);
    let mut hasher = Md5::new();
    let mut received: u64 = 0;
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
            let chunk = &mut buffer[..left.min(BUFFER)];
            reader.read_data(chunk)?;
            hasher.update(&*chunk);
            if let Ok(file) = &mut part
                && let Err(refusal) = file.write_all(chunk)
            {
                part = Err(refusal); // dropping the part file removes it
            }
            left -= chunk.len();
            received += chunk.len() as u64;
            reporter.bar().inc(chunk.len() as u64);
        }
    }
    let (size, md5_hex, mac) = match reader.expect_message("done")? {
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
    let part = match part {
        Ok(part) => part,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let md5: [u8; 16] = hasher.finalize().into();
    let shown = escape(path);
    let checksum = |why: String| {
        Ok(Err(Refusal::new(
            ErrorCode::Checksum,
            format!("{shown}: {why}"),
        )))
    };
    if size != received || item.entry.size.is_some_and(|offered| offered != size) {
        return checksum(format!(
            "size mismatch: offered {:?}, sender says {size}, received {received}",
            item.entry.size
        ));
    }
    if frame::unhex::<16>(&md5_hex) != Some(md5) {
        return checksum(format!(
            "MD5 mismatch: sender says {}, received {}",
            escape(&md5_hex),
            frame::hex(&md5)
        ));
    }
    if !session_key.verify_done(
        FileFacts {
            index,
            size,
            md5: &md5,
            path,
        },
        &mac,
    ) {
        return Ok(Err(Refusal::new(
            ErrorCode::Mac,
            format!("{shown}: the sender's MAC does not verify"),
        )));
    }
    Ok(part
        .commit(item.entry.mtime, options.overwrite)
        .map(|()| Arrived { size, md5 }))
}
