//! The sender's session: offer everything at once, read the plan, then stream each
//! accepted file (hashing it in the same pass) while a second thread reads and
//! verifies the receiver's acknowledgements as they arrive. No per-file round trips.
//!
//! It reaches the filesystem only through `source` and the terminal only through
//! `report` and the progress bar.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, mpsc};

use anyhow::Result;
use md5::{Digest, Md5};

use crate::cli::SendArgs;
use crate::conn::{Connection, FrameReader};
use crate::error::{Kind, fail, kind_of};
use crate::escape::escape;
use crate::frame::{self, Decision, EntryKind, ErrorCode, LENGTH_PREFIX, Message, Role};
use crate::handshake::{FileFacts, SessionKey, peer_error};
use crate::hashing;
use crate::net::{self, Handler};
use crate::pool::Pool;
use crate::report::{Failed, Json, Reporter, Style, Verified};
use crate::source::{self, Source, WalkOptions};

/// Payload bytes per data frame. Measured on a 1 GiB loopback transfer, alternating
/// configurations, median of 4: 64 KiB 4.44 s, 256 KiB 3.84 s, 1 MiB 3.59 s (with
/// TCP_NODELAY 3.48 s). Larger frames mean fewer syscalls and thread wake-ups.
const CHUNK: usize = 1 << 20;
/// Buffers in flight between the reading thread and the socket: 8 measured 3.45 s
/// against 3.48 s for 4, not worth twice the memory.
const POOL_BUFFERS: usize = 4;

/// `xfer send`: collect the sources, then hand them to the receiver we connect to,
/// or to each receiver that connects (`--listen`).
pub fn run(args: &SendArgs) -> Result<()> {
    let walk = WalkOptions {
        follow_symlinks: args.follow_symlinks,
        stdin_name: args.name.clone(),
    };
    let collected = source::collect(&args.files, &walk)?;
    if collected.sources.is_empty() {
        return Err(fail(Kind::Io, "nothing to send"));
    }
    let style = Style {
        quiet: args.common.quiet,
        json: if args.common.json {
            Json::Stdout
        } else {
            Json::Off
        },
        serving: args.link.serve,
    };
    let unreadable = collected.unreadable;
    let sources = Arc::new(collected.sources);
    let handler: Handler = Arc::new(move |conn, session_key, peer| {
        let reporter = Reporter::new(style).for_peer(peer);
        let result =
            session(conn, &session_key, &sources, reporter.clone()).and_then(
                |()| match unreadable {
                    0 => Ok(()),
                    n => Err(fail(
                        Kind::Io,
                        format!("{n} paths could not be read and were not sent"),
                    )),
                },
            );
        reporter.finish("sent", &result);
        result
    });
    let link = args.link.link(args.to.as_ref());
    net::run_reported(
        &link,
        Role::Sender,
        args.common.key_file.as_deref(),
        args.link.timeouts(),
        style,
        "sent",
        handler,
    )
}

/// What the sender knows about a file it finished sending, for checking its `ok`.
struct Sent {
    size: u64,
    md5: [u8; 16],
    /// A local problem that made us send a size the receiver must refuse.
    local_failure: Option<String>,
}

/// Runs one sending session on an authenticated connection.
pub fn session<R: Read + Send, W: Write>(
    conn: Connection<R, W>,
    session_key: &SessionKey,
    sources: &[Source],
    mut reporter: Reporter,
) -> Result<()> {
    let Connection {
        mut reader,
        mut writer,
    } = conn;
    let entries = sources.iter().map(|source| source.entry.clone()).collect();
    let offered = sources.len();
    writer
        .write_message(&Message::Offer { entries })
        .map_err(|err| match kind_of(&err) {
            // Untagged: the offer is over the protocol's frame limit, not lost on the way.
            None => err.context(format!(
                "{offered} entries do not fit in one offer (the protocol allows 16 MiB); \
                 send fewer at a time, or one tar stream: tar c DIR | xfer send - HOST:PORT"
            )),
            Some(_) => err,
        })?;
    writer.flush()?;
    let plan = match reader.expect_message("the plan")? {
        Message::Plan { entries } if entries.len() == sources.len() => entries,
        Message::Plan { entries } => {
            return Err(fail(
                Kind::Protocol,
                format!(
                    "the plan has {} decisions for {} entries",
                    entries.len(),
                    sources.len()
                ),
            ));
        }
        Message::Error { code, message, .. } => return Err(peer_error(code, &message)),
        other => return Err(fail(Kind::Protocol, format!("expected plan, got {other}"))),
    };

    let mut to_send = Vec::new();
    for (index, (source, decision)) in sources.iter().zip(&plan).enumerate() {
        match decision {
            Decision::Skip { code, message } => reporter.failed(Failed {
                path: source.entry.path.clone(),
                code: *code,
                why: format!("refused by the receiver: {}", escape(message)),
            }),
            Decision::Send { .. } if source.entry.kind == EntryKind::Dir => {}
            Decision::Send { offset, prefix_md5 } => {
                to_send.push((index as u64, source, *offset, prefix_md5.as_deref()));
            }
        }
    }
    // What is left to send: a resumed file's prefix is already there.
    let total = to_send
        .iter()
        .map(|(_, source, offset, _)| source.entry.size.map(|size| size.saturating_sub(*offset)))
        .sum::<Option<u64>>();
    reporter.start_bar(total);

    let sent: Mutex<Vec<Option<Sent>>> = Mutex::new((0..sources.len()).map(|_| None).collect());
    let (write_result, ack_result) = std::thread::scope(|scope| {
        let acks = scope.spawn(|| read_acks(&mut reader, session_key, sources, &sent, &reporter));
        // Reading and hashing run on their own thread, one chunk ahead of the socket.
        let (mut pool, giver) = Pool::new(POOL_BUFFERS, LENGTH_PREFIX + CHUNK);
        let (pieces, from_reader) = mpsc::channel();
        let to_send = &to_send;
        // If this thread stops early, dropping `giver` and `from_reader` stops the reader.
        scope.spawn(move || read_files(to_send, &mut pool, &pieces));
        let written = (|| {
            for piece in from_reader {
                match piece {
                    Piece::Start { index, offset } => {
                        let path = &sources[index as usize].entry.path;
                        reporter.current_file(path);
                        writer.write_message(&Message::Data { index, offset })?;
                    }
                    Piece::Chunk { mut buffer, len } => {
                        writer.write_data_frame(&mut buffer[..LENGTH_PREFIX + len])?;
                        reporter.bar().inc(len as u64);
                        giver.give(buffer);
                    }
                    Piece::End { index, facts } => {
                        writer.write_end_of_data()?;
                        let file = FileFacts {
                            index,
                            size: facts.size,
                            md5: &facts.md5,
                            path: &sources[index as usize].entry.path,
                        };
                        let done = Message::Done {
                            index,
                            size: facts.size,
                            md5: frame::hex(&facts.md5),
                            mac: session_key.done_mac(file),
                        };
                        // Stored before `done` leaves, so its acknowledgement always finds it.
                        sent.lock().expect("no panics while holding the lock")[index as usize] =
                            Some(facts);
                        writer.write_message(&done)?;
                    }
                }
            }
            writer.write_message(&Message::End)?;
            writer.flush()
        })();
        (written, acks.join().expect("the ack thread does not panic"))
    });
    // The receiver's own account of a failure explains more than our broken pipe.
    let acknowledged = match (write_result, ack_result) {
        (_, Err(err)) | (Err(err), Ok(_)) => return Err(err),
        (Ok(()), Ok(acknowledged)) => acknowledged,
    };
    for &(index, source, ..) in &to_send {
        if !acknowledged.contains(&index) {
            reporter.failed(Failed {
                path: source.entry.path.clone(),
                code: ErrorCode::Mac,
                why: "the receiver never acknowledged it".into(),
            });
        }
    }
    reporter.outcome(sources.len(), "delivered")
}

/// What the reading thread hands the socket thread, in order.
enum Piece {
    /// Data for entry `index` follows, from byte `offset`.
    Start { index: u64, offset: u64 },
    /// One data frame: [`LENGTH_PREFIX`] bytes of room, then `len` bytes of the file.
    Chunk { buffer: Vec<u8>, len: usize },
    /// The entry's data is complete; `done` says `facts`.
    End { index: u64, facts: Sent },
}

/// The reading thread: every accepted file in turn, read into pool buffers and
/// hashed in the same pass. Stops early if the socket thread hangs up.
fn read_files(to_send: &[ToSend<'_>], pool: &mut Pool, pieces: &mpsc::Sender<Piece>) {
    for &(index, source, offset, prefix_md5) in to_send {
        match read_file(index, source, offset, prefix_md5, pool, pieces) {
            Some(facts) => {
                if pieces.send(Piece::End { index, facts }).is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

/// One accepted entry: its index, where it comes from, and the plan's offset and prefix MD5.
type ToSend<'a> = (u64, &'a Source, u64, Option<&'a str>);

/// Reads one file into `pieces`; returns what `done` must say, or `None` when the
/// socket thread is gone. Local failures do not stop the session: they end in a
/// `done` the receiver must refuse.
fn read_file(
    index: u64,
    source: &Source,
    offset: u64,
    prefix_md5: Option<&str>,
    pool: &mut Pool,
    pieces: &mpsc::Sender<Piece>,
) -> Option<Sent> {
    let expected = source.entry.size;
    let mut hasher = Md5::new();
    let (mut input, start) = match open_at_resume_point(source, &mut hasher, offset, prefix_md5) {
        Ok(opened) => opened,
        Err(err) => {
            // The plan promised data for this entry: send none, and a size the
            // receiver must refuse, so that nothing lands under its name.
            pieces.send(Piece::Start { index, offset: 0 }).ok()?;
            return Some(poisoned(expected, format!("{err:#}")));
        }
    };
    pieces
        .send(Piece::Start {
            index,
            offset: start,
        })
        .ok()?;
    let mut sent = start;
    let mut local_failure = None;
    loop {
        let mut buffer = pool.take()?;
        let room = &mut buffer[LENGTH_PREFIX..];
        let limit = match expected {
            // Never send past the offered size; a file that grew is caught below.
            Some(size) => room
                .len()
                .min(usize::try_from(size - sent).unwrap_or(usize::MAX)),
            None => room.len(),
        };
        let n = match read_full(&mut input, &mut room[..limit]) {
            Ok(n) => n,
            Err(err) => {
                local_failure = Some(format!("cannot read {}: {err}", source.shown()));
                0
            }
        };
        if n == 0 {
            pool.put_back(buffer);
            break;
        }
        hasher.update(&room[..n]);
        sent += n as u64;
        pieces.send(Piece::Chunk { buffer, len: n }).ok()?;
    }
    if local_failure.is_none()
        && expected == Some(sent)
        && read_full(&mut input, &mut [0; 1]).is_ok_and(|n| n > 0)
    {
        local_failure = Some(format!("{} grew while it was being sent", source.shown()));
    } else if local_failure.is_none() && expected.is_some_and(|size| size != sent) {
        local_failure = Some(format!("{} shrank while it was being sent", source.shown()));
    }
    Some(match local_failure {
        Some(why) => poisoned(expected, why),
        None => Sent {
            size: sent,
            md5: hasher.finalize().into(),
            local_failure: None,
        },
    })
}

/// Opens a source where its data should start: after the receiver's prefix if that
/// matches ours (the prefix then already in `hasher`), else at 0.
fn open_at_resume_point(
    source: &Source,
    hasher: &mut Md5,
    offset: u64,
    prefix_md5: Option<&str>,
) -> Result<(Box<dyn Read + Send>, u64)> {
    let mut input = source.open()?;
    // A stream cannot be read twice, so it never resumes.
    if offset == 0 || !source.rereadable() {
        return Ok((input, 0));
    }
    if resume_matches(&mut input, hasher, offset, prefix_md5) {
        return Ok((input, offset));
    }
    // The receiver holds different bytes: start over.
    *hasher = Md5::new();
    Ok((source.open()?, 0))
}

/// A `done` the receiver must refuse: the offered size plus one never matches it.
fn poisoned(expected: Option<u64>, why: String) -> Sent {
    Sent {
        size: expected.map_or(u64::MAX, |size| size.wrapping_add(1)),
        md5: [0; 16],
        local_failure: Some(why),
    }
}

/// Reads the first `offset` bytes into the hash and says whether their MD5 is the
/// receiver's `prefix_md5`, so sending can continue from `offset`.
fn resume_matches(
    input: &mut Box<dyn Read + Send>,
    hasher: &mut Md5,
    offset: u64,
    prefix_md5: Option<&str>,
) -> bool {
    let Some(prefix_md5) = prefix_md5.filter(|_| offset > 0) else {
        return false;
    };
    let copied = hashing::hash_prefix(input, offset, hasher);
    copied.is_ok_and(|n| n == offset) && frame::hex(&hasher.clone().finalize()) == prefix_md5
}

/// Reads until `buf` is full or the input ends, so frames stay full-sized even when
/// the input (a pipe) hands out small pieces.
fn read_full<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// The ack thread: reads `ok` and per-entry `error` frames until the receiver's `end`,
/// verifying each `ok` against what was sent and reporting each outcome as it comes.
/// Returns the entries acknowledged either way.
fn read_acks<R: Read>(
    reader: &mut FrameReader<R>,
    session_key: &SessionKey,
    sources: &[Source],
    sent: &Mutex<Vec<Option<Sent>>>,
    reporter: &Reporter,
) -> Result<HashSet<u64>> {
    let mut acknowledged = HashSet::new();
    loop {
        let (index, outcome) = match reader.expect_message("the receiver's acknowledgements")? {
            Message::End => return Ok(acknowledged),
            Message::Error {
                index: None,
                code,
                message,
            } => return Err(peer_error(code, &message)),
            Message::Error {
                index: Some(index),
                code,
                message,
            } => (index, Err((code, message))),
            Message::Ok { index, mac } => (index, Ok(mac)),
            other => {
                return Err(fail(
                    Kind::Protocol,
                    format!("unexpected frame from the receiver: {other}"),
                ));
            }
        };
        let sent = sent.lock().expect("no panics while holding the lock");
        let Some(Some(facts)) = sent.get(index as usize) else {
            return Err(fail(
                Kind::Protocol,
                format!("acknowledgement for entry {index}, which was not sent"),
            ));
        };
        if !acknowledged.insert(index) {
            return Err(fail(
                Kind::Protocol,
                format!("entry {index} acknowledged twice"),
            ));
        }
        let path = &sources[index as usize].entry.path;
        let failed = |code, why| Failed {
            path: path.clone(),
            code,
            why,
        };
        match (outcome, &facts.local_failure) {
            (_, Some(why)) => reporter.failed(failed(ErrorCode::Io, why.clone())),
            (Ok(mac), None) => {
                let file = FileFacts {
                    index,
                    size: facts.size,
                    md5: &facts.md5,
                    path,
                };
                if session_key.verify_ok(file, &mac) {
                    reporter.verified(Verified {
                        path: path.clone(),
                        size: facts.size,
                        md5: frame::hex(&facts.md5),
                    });
                } else {
                    let why = "the receiver's acknowledgement does not verify (forged ok?)";
                    reporter.failed(failed(ErrorCode::Mac, why.into()));
                }
            }
            (Err((code, message)), None) => reporter.failed(failed(
                code,
                format!("the receiver reported {code}: {}", escape(&message)),
            )),
        }
    }
}
